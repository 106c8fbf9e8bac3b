package download_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/overlaybd-go/overlaybd/caches/download"
	"github.com/overlaybd-go/overlaybd/caches/internal/cachetest"
	"github.com/overlaybd-go/overlaybd/core"
)

func TestSuite(t *testing.T) {
	cachetest.Suite(t, func(t testing.TB, dir string, capacity int64) core.Cache {
		if capacity > 0 {
			t.Skip("the download cache has no size bound: it lives in the layer directory")
		}
		c, err := download.New(download.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return c
	})
}

func TestFileInLayerDir(t *testing.T) {
	c, _ := download.New(download.Options{RefillSize: 65536})
	dir := t.TempDir()
	data := cachetest.Data(500000, 5)
	src := cachetest.NewSource(data).WithDir(dir)
	f, err := c.Open(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, 10)
	f.ReadAt(p, 70000)
	if src.Bytes.Load() != 65536 {
		t.Fatalf("fetched %d, want one 64 KiB refill", src.Bytes.Load())
	}
	st, err := os.Stat(filepath.Join(dir, download.FileName))
	if err != nil || st.Size() != int64(len(data)) {
		t.Fatalf("download file: %v", err)
	}
	// Without a layer directory, reads go straight through.
	src2 := cachetest.NewSource(data)
	f2, _ := c.Open(context.Background(), src2)
	cachetest.Check(t, f2, data, 10, 1000, 1)
	f2.Close()
}

// TestDiskFilledFromOutside: another writer fills the layer directory's
// filesystem.
func TestDiskFilledFromOutside(t *testing.T) {
	fs := cachetest.SmallFS(t, 8<<20)
	c, err := download.New(download.Options{RefillSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dir := filepath.Join(fs, "layer")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src := cachetest.NewSource(cachetest.Data(4<<20, 42)).WithDir(dir)
	cachetest.DiskFull(t, cachetest.DiskFullCase{FS: fs, Cache: c, Src: src, Chunk: 64 << 10, Warm: 1 << 20, ExpectFailures: true})
}

// TestZeroPages: pages of zeros in the blob are data, not holes; they are
// fetched once and served from the file, and an invalidated range is
// fetched again.
func TestZeroPages(t *testing.T) {
	c, _ := download.New(download.Options{RefillSize: 65536})
	data := cachetest.Data(1<<20, 6)
	clear(data[65536+4096 : 65536+3*4096]) // two zero pages inside a refill
	clear(data[512<<10 : 640<<10])         // a whole zero refill
	src := cachetest.NewSource(data).WithDir(t.TempDir())
	f, err := c.Open(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cachetest.Check(t, f, data, 300, 20000, 2)
	for off := int64(0); off < int64(len(data)); off += 65536 {
		p := make([]byte, 65536)
		if _, err := f.ReadAt(p, off); err != nil || !bytes.Equal(p, data[off:off+65536]) {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	fetched := src.Bytes.Load()
	if fetched != int64(len(data)) {
		t.Fatalf("fetched %d bytes for a %d-byte blob", fetched, len(data))
	}
	cachetest.Check(t, f, data, 300, 20000, 3)
	if src.Bytes.Load() != fetched {
		t.Fatal("warm reads fetched again")
	}
	if err := f.(core.Invalidator).Invalidate(65536, 4096); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 4096)
	if _, err := f.ReadAt(p, 65536); err != nil || !bytes.Equal(p, data[65536:65536+4096]) {
		t.Fatalf("read after invalidate: %v", err)
	}
	if src.Bytes.Load() == fetched {
		t.Fatal("an invalidated range was not fetched again")
	}
}

// TestConcurrentColdReads: many readers of a cold download file, with
// overlapping ranges, while their fills write large spans: no reader takes
// a span another fill has allocated but not yet written for data.
func TestConcurrentColdReads(t *testing.T) {
	data := cachetest.Data(8<<20, 77)
	for round := range 8 {
		c, err := download.New(download.Options{RefillSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		src := cachetest.NewSource(data).WithDir(t.TempDir())
		f, err := c.Open(context.Background(), src)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(round), uint64(g)))
				p := make([]byte, 64<<10)
				for range 32 {
					off := r.Int64N(int64(len(data) - len(p)))
					if _, err := f.ReadAt(p, off); err != nil {
						t.Errorf("read at %d: %v", off, err)
						return
					}
					if !bytes.Equal(p, data[off:off+int64(len(p))]) {
						t.Errorf("round %d: read at %d returned wrong data", round, off)
						return
					}
				}
			})
		}
		wg.Wait()
		f.Close()
		c.Close()
		if t.Failed() {
			return
		}
	}
}
