package all_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/overlaybd-go/overlaybd/caches/internal/cachetest"
	"github.com/overlaybd-go/overlaybd/core"
)

// fileSource is a layer file on local disk used as a cache's source.
type fileSource struct {
	f    *os.File
	size int64
	key  string
	dir  string
}

func (s *fileSource) ReadAtContext(_ context.Context, p []byte, off int64) (int, error) {
	return s.f.ReadAt(p, off)
}
func (s *fileSource) Size() int64      { return s.size }
func (s *fileSource) Key() string      { return s.key }
func (s *fileSource) LayerDir() string { return s.dir }

const benchLayer = 32 << 20

// BenchmarkWarmRead reads a layer whose every byte is already cached, through
// each cache with its files served by the psync and the io_uring engine
// ("file@psync", "file@io_uring", ...), and the same bytes from the layer
// file with plain pread (the peer, "local"), in the same run: random 4 KiB
// reads and sequential 1 MiB reads. Compare the caches' MB/s with local's
// and the engines with each other.
//
//	go test -run '^$' -bench BenchmarkWarmRead -count 5 ./caches/all/
func BenchmarkWarmRead(b *testing.B) {
	dir := b.TempDir()
	data := cachetest.Data(benchLayer, 99)
	layerPath := filepath.Join(dir, "layer.bin")
	if err := os.WriteFile(layerPath, data, 0o644); err != nil {
		b.Fatal(err)
	}
	lf, err := os.Open(layerPath)
	if err != nil {
		b.Fatal(err)
	}
	defer lf.Close()
	sum := sha256.Sum256(data)
	key := "sha256:" + hex.EncodeToString(sum[:])

	type target struct {
		name string
		r    io.ReaderAt
	}
	targets := []target{{"local", lf}}
	for _, engName := range []string{"psync", "io_uring"} {
		eng := newEngine(b, engName)
		for _, typ := range []string{"file", "download", "ocf"} {
			newCache, err := core.Caches.Lookup(typ)
			if err != nil {
				b.Fatal(err)
			}
			name := typ + "@" + engName
			c, err := newCache(core.CacheConfig{Dir: filepath.Join(dir, name), CapacityBytes: 2 * benchLayer,
				RefillSize: 256 << 10, BlockSize: 65536, Engine: eng})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ld := filepath.Join(dir, name+"-layer")
			if err := os.MkdirAll(ld, 0o755); err != nil {
				b.Fatal(err)
			}
			f, err := c.Open(context.Background(), &fileSource{f: lf, size: benchLayer, key: key, dir: ld})
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			// Warm: every byte cached.
			buf := make([]byte, 1<<20)
			for off := int64(0); off < benchLayer; off += int64(len(buf)) {
				if _, err := f.ReadAt(buf, off); err != nil {
					b.Fatal(err)
				}
			}
			before := c.Stats()
			for off := int64(0); off < benchLayer; off += int64(len(buf)) {
				if _, err := f.ReadAt(buf, off); err != nil {
					b.Fatal(err)
				}
			}
			if after := c.Stats(); after.FetchedBytes != before.FetchedBytes {
				b.Fatalf("%s: not warm after a full read (fetched %d more bytes)", typ, after.FetchedBytes-before.FetchedBytes)
			}
			targets = append(targets, target{name, f})
		}
	}
	for _, tg := range targets {
		b.Run("rand4k/"+tg.name, func(b *testing.B) {
			p := make([]byte, 4096)
			r := rand.New(rand.NewPCG(1, 2))
			b.SetBytes(int64(len(p)))
			for b.Loop() {
				off := r.Int64N(benchLayer/4096) * 4096
				if _, err := tg.r.ReadAt(p, off); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("seq1m/"+tg.name, func(b *testing.B) {
			p := make([]byte, 1<<20)
			var off int64
			b.SetBytes(int64(len(p)))
			for b.Loop() {
				if _, err := tg.r.ReadAt(p, off); err != nil {
					b.Fatal(err)
				}
				off = (off + int64(len(p))) % benchLayer
			}
		})
	}
}
