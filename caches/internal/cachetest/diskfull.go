package cachetest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/internal/smallfs"
)

// SmallFS mounts a tmpfs of size bytes for the test (smallfs.Mount).
func SmallFS(t testing.TB, size int64) string { t.Helper(); return smallfs.Mount(t, size) }

// FillDisk fills the file system of dir with the file name (smallfs.Fill).
func FillDisk(t testing.TB, dir, name string) int64 { t.Helper(); return smallfs.Fill(t, dir, name) }

// FreeBytes returns the free bytes of dir's file system.
func FreeBytes(t testing.TB, dir string) int64 { t.Helper(); return smallfs.FreeBytes(t, dir) }

// DiskFullCase describes a cache under the full-disk check.
type DiskFullCase struct {
	// FS is the small filesystem (SmallFS) the cache and the filler share.
	FS string
	// Cache is the cache, keeping its data on FS.
	Cache core.Cache
	// Src is the source, reporting a layer directory on FS when the cache
	// needs one.
	Src *Source
	// Chunk is the size of each read (a divisor of the source's size).
	Chunk int
	// Warm is the number of bytes read before the disk fills up.
	Warm int64
	// ExpectFailures says whether the cache has to fail writes while the
	// disk is full (false for caches whose space is reserved).
	ExpectFailures bool
}

// DiskFull checks a cache while another writer fills its filesystem: reads
// return the right bytes all along (from the source when the cache cannot
// keep them), each read costs at most one fetch and at most one failed
// store (no retry loop), the bytes warmed before stay served from the cache,
// and once the filler's file is removed the cache stores again and serves a
// second pass without fetching.
func DiskFull(t *testing.T, c DiskFullCase) {
	t.Helper()
	ctx := context.Background()
	f, err := c.Cache.Open(ctx, c.Src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := c.Src.Data()
	size := int64(len(data))
	p := make([]byte, c.Chunk)
	read := func(off int64) {
		t.Helper()
		n, err := f.ReadAt(p, off)
		if err != nil || n != c.Chunk || !bytes.Equal(p, data[off:off+int64(c.Chunk)]) {
			t.Fatalf("read %d@%d: n=%d err=%v (content equal: %v)", c.Chunk, off, n, err,
				n == c.Chunk && bytes.Equal(p, data[off:off+int64(c.Chunk)]))
		}
	}
	for off := int64(0); off < c.Warm; off += int64(c.Chunk) {
		read(off)
	}

	filled := FillDisk(t, c.FS, "filler")
	t.Logf("filler wrote %d bytes; %d bytes free", filled, FreeBytes(t, c.FS))
	st0, r0 := c.Cache.Stats(), c.Src.Reads.Load()
	reads := 0
	for off := int64(0); off < size; off += int64(c.Chunk) {
		read(off)
		reads++
	}
	st1, r1 := c.Cache.Stats(), c.Src.Reads.Load()
	fetches, failures := r1-r0, int64(st1.StoreFailures-st0.StoreFailures)
	t.Logf("disk full: %d reads, %d fetches, %d store failures", reads, fetches, failures)
	coldReads := int64(size-c.Warm) / int64(c.Chunk)
	if fetches > coldReads {
		t.Errorf("disk full: %d fetches for %d reads of uncached ranges: more than one per read", fetches, coldReads)
	}
	if failures > fetches {
		t.Errorf("disk full: %d store failures for %d fetches", failures, fetches)
	}
	if c.ExpectFailures && failures == 0 {
		t.Errorf("disk full: no store failed; the filler did not fill the disk")
	}
	if !c.ExpectFailures && failures != 0 {
		t.Errorf("disk full: %d store failures in a cache whose space is reserved", failures)
	}

	// Space comes back.
	if err := os.Remove(filepath.Join(c.FS, "filler")); err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < size; off += int64(c.Chunk) {
		read(off)
	}
	st2, r2 := c.Cache.Stats(), c.Src.Reads.Load()
	if st2.StoreFailures != st1.StoreFailures {
		t.Errorf("after space came back: %d more store failures", st2.StoreFailures-st1.StoreFailures)
	}
	for off := int64(0); off < size; off += int64(c.Chunk) {
		read(off)
	}
	if r3 := c.Src.Reads.Load(); r3 != r2 {
		t.Errorf("after space came back: the second pass fetched %d times; the cache did not recover", r3-r2)
	}
	_ = r2
}
