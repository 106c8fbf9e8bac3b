package lsmt_test

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
)

// buildBenchStack writes three committed layers of random extents (4 to 64
// KiB, each layer covering about half of a vsize-byte disk) into dir, and the
// merged image as one raw file. It returns the layer paths (bottom first)
// and the raw path.
func buildBenchStack(b *testing.B, dir string, vsize int64) ([]string, string) {
	r := rand.New(rand.NewPCG(11, 12))
	img := make([]byte, vsize)
	var paths []string
	for l := 0; l < 3; l++ {
		dp, ip := filepath.Join(dir, "l.data"), filepath.Join(dir, "l.index")
		os.Remove(dp)
		os.Remove(ip)
		w, err := lsmt.Create(openFile(b, dp, os.O_RDWR|os.O_CREATE), openFile(b, ip, os.O_RDWR|os.O_CREATE), lsmt.CreateOptions{VirtualSize: vsize})
		if err != nil {
			b.Fatal(err)
		}
		for written := int64(0); written < vsize/2; {
			n := int64(4+r.IntN(61)) * 1024
			off := r.Int64N((vsize-n)/4096) * 4096
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(r.Uint32())
			}
			if _, err := w.WriteAt(p, off); err != nil {
				b.Fatal(err)
			}
			copy(img[off:], p)
			written += n
		}
		var out bytes.Buffer
		if err := w.Commit(&out, lsmt.CommitOptions{}); err != nil {
			b.Fatal(err)
		}
		w.Close()
		p := filepath.Join(dir, "layer"+string(rune('A'+l))+".commit")
		if err := os.WriteFile(p, out.Bytes(), 0o644); err != nil {
			b.Fatal(err)
		}
		paths = append(paths, p)
	}
	raw := filepath.Join(dir, "raw.img")
	if err := os.WriteFile(raw, img, 0o644); err != nil {
		b.Fatal(err)
	}
	return paths, raw
}

// BenchmarkStackRead compares random 4 KiB reads through a 3-layer stack
// with pread of the same data from one raw file, both page-cached, in the
// same run. ns/op is per read.
func BenchmarkStackRead(b *testing.B) {
	const vsize = 64 << 20
	dir := b.TempDir()
	paths, raw := buildBenchStack(b, dir, vsize)
	var files []core.File
	for _, p := range paths {
		files = append(files, openFile(b, p, os.O_RDONLY))
	}
	s, err := lsmt.OpenStack(files, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rf, err := os.Open(raw)
	if err != nil {
		b.Fatal(err)
	}
	rawFile := psync.NewFile(rf, nil)
	defer rawFile.Close()
	b.Logf("merged index: %d records", len(s.MergedIndex()))
	// Warm the page cache and check that both give the same bytes.
	want := readAll(b, rawFile)
	if !bytes.Equal(readAll(b, s), want) {
		b.Fatal("stack and raw image differ")
	}
	r := rand.New(rand.NewPCG(5, 6))
	offs := make([]int64, 1024)
	for i := range offs {
		offs[i] = r.Int64N(vsize/4096) * 4096
	}
	for _, c := range []struct {
		name string
		f    core.File
	}{{"stack", s}, {"raw", rawFile}} {
		b.Run(c.name, func(b *testing.B) {
			buf := make([]byte, 4096)
			best := time.Duration(1 << 62)
			b.SetBytes(4096)
			i := 0
			t0 := time.Now()
			for b.Loop() {
				if _, err := c.f.ReadAt(buf, offs[i&(len(offs)-1)]); err != nil {
					b.Fatal(err)
				}
				i++
				if i&(len(offs)-1) == 0 {
					best = min(best, time.Since(t0))
					t0 = time.Now()
				}
			}
			b.ReportMetric(float64(len(offs))/best.Seconds()/1e3, "best-kreads/s")
		})
	}
}

// BenchmarkWritable measures random 4 KiB writes and reads of an
// append-only layer on page-cached files.
func BenchmarkWritable(b *testing.B) {
	dir := b.TempDir()
	w, err := lsmt.Create(openFile(b, filepath.Join(dir, "d"), os.O_RDWR|os.O_CREATE), openFile(b, filepath.Join(dir, "i"), os.O_RDWR|os.O_CREATE),
		lsmt.CreateOptions{VirtualSize: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	r := rand.New(rand.NewPCG(7, 8))
	buf := make([]byte, 4096)
	b.Run("write", func(b *testing.B) {
		b.SetBytes(4096)
		for b.Loop() {
			if _, err := w.WriteAt(buf, r.Int64N(1<<18)*4096); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Logf("%d records", len(w.Mappings()))
	b.Run("read", func(b *testing.B) {
		b.SetBytes(4096)
		for b.Loop() {
			if _, err := w.ReadAt(buf, r.Int64N(1<<18)*4096); err != nil {
				b.Fatal(err)
			}
		}
	})
}
