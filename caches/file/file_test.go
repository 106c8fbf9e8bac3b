package file_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/overlaybd-go/overlaybd/caches/file"
	"github.com/overlaybd-go/overlaybd/caches/internal/cachetest"
	"github.com/overlaybd-go/overlaybd/core"
)

func openCache(t testing.TB, dir string, capacity int64) core.Cache {
	c, err := file.New(file.Options{Dir: dir, CapacityBytes: capacity, MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSuite(t *testing.T) { cachetest.Suite(t, openCache) }

func TestRegistered(t *testing.T) {
	f, err := core.Caches.Lookup("file")
	if err != nil {
		t.Fatal(err)
	}
	c, err := f(core.CacheConfig{Dir: t.TempDir(), RefillSize: 65536})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := f(core.CacheConfig{Dir: t.TempDir(), RefillSize: 5000}); err == nil {
		t.Fatal("refillSize 5000 accepted")
	}
}

// TestRefillGranularity: a 4 KiB miss fetches one refillSize-aligned span,
// and the neighbouring reads inside it are hits.
func TestRefillGranularity(t *testing.T) {
	c := openCache(t, t.TempDir(), 0)
	defer c.Close()
	data := cachetest.Data(4<<20, 1)
	src := cachetest.NewSource(data)
	f, err := c.Open(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, 4096)
	f.ReadAt(p, 1<<20+8192)
	if src.Reads.Load() != 1 || src.Bytes.Load() != 256<<10 {
		t.Fatalf("fetched %d bytes in %d reads, want one 256 KiB refill", src.Bytes.Load(), src.Reads.Load())
	}
	for off := int64(1 << 20); off < 1<<20+256<<10; off += 4096 {
		f.ReadAt(p, off)
		if !bytes.Equal(p, data[off:off+4096]) {
			t.Fatal("content differs")
		}
	}
	if src.Reads.Load() != 1 {
		t.Fatalf("reads inside a cached span went to the source (%d reads)", src.Reads.Load())
	}
	if st := c.Stats(); st.Hits != 64 || st.Misses != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestDamagedCacheFileHeals: bytes of a cached page changed on disk are
// noticed by the page checksum, dropped and fetched again.
func TestDamagedCacheFileHeals(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir, 0)
	defer c.Close()
	data := cachetest.Data(1<<20, 2)
	src := cachetest.NewSource(data)
	f, err := c.Open(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, 1<<20)
	f.ReadAt(p, 0)
	// Damage the cache file behind the cache's back.
	cf, err := os.OpenFile(filepath.Join(dir, src.Key()), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	cf.WriteAt([]byte("garbage!"), 500000)
	cf.Close()
	before := src.Bytes.Load()
	q := make([]byte, 100)
	if _, err := f.ReadAt(q, 499990); err != nil || !bytes.Equal(q, data[499990:500090]) {
		t.Fatalf("damaged page served: %v", err)
	}
	if src.Bytes.Load() == before {
		t.Fatal("damaged page not fetched again")
	}
	if c.Stats().Invalidations == 0 {
		t.Fatal("no invalidation counted")
	}
	// And it stays healed.
	before = src.Bytes.Load()
	f.ReadAt(q, 499990)
	if src.Bytes.Load() != before || !bytes.Equal(q, data[499990:500090]) {
		t.Fatal("healed page not cached")
	}
}

// TestUnknownFilesAreNotTrusted: a cache file without its checksum table
// (an upstream cache, or a crash before the table was written) is refilled
// rather than served.
func TestUnknownFilesAreNotTrusted(t *testing.T) {
	dir := t.TempDir()
	data := cachetest.Data(300000, 3)
	src := cachetest.NewSource(data)
	bad := bytes.Repeat([]byte{0xee}, len(data))
	os.WriteFile(filepath.Join(dir, src.Key()), bad, 0o644)
	c := openCache(t, dir, 0)
	defer c.Close()
	f, err := c.Open(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cachetest.Check(t, f, data, 20, 30000, 1)
}

// TestDiskFilledFromOutside: another writer fills the cache's filesystem.
func TestDiskFilledFromOutside(t *testing.T) {
	fs := cachetest.SmallFS(t, 8<<20)
	c, err := file.New(file.Options{Dir: filepath.Join(fs, "cache"), MinFreeBytes: -1, RefillSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	src := cachetest.NewSource(cachetest.Data(4<<20, 41))
	cachetest.DiskFull(t, cachetest.DiskFullCase{FS: fs, Cache: c, Src: src, Chunk: 64 << 10, Warm: 1 << 20, ExpectFailures: true})
}
