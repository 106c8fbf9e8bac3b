package download_test

import (
	"context"
	"os"
	"path/filepath"
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
