package ocf_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/caches/internal/cachetest"
	"github.com/overlaybd-go/overlaybd/caches/ocf"
	"github.com/overlaybd-go/overlaybd/core"
)

func openCache(t testing.TB, dir string, capacity int64) core.Cache {
	if capacity == 0 {
		capacity = 64 << 20
	}
	c, err := ocf.New(ocf.Options{Dir: dir, CapacityBytes: capacity})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSuite(t *testing.T) { cachetest.Suite(t, openCache) }

// TestDamagedMediaDropped: a block whose bytes changed in the media file is
// not served; it is dropped and fetched again.
func TestDamagedMediaDropped(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir, 8<<20)
	data := cachetest.Data(1<<20, 9)
	src := cachetest.NewSource(data)
	f, err := c.Open(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, len(data))
	f.ReadAt(p, 0)
	f.Close()
	c.Close()
	// Damage every slot's first sector (a crash that lost data writes).
	m, _ := os.OpenFile(filepath.Join(dir, ocf.MediaName), os.O_RDWR, 0)
	st, _ := m.Stat()
	for off := int64(0); off < st.Size(); off += 65536 {
		m.WriteAt([]byte{0xde, 0xad}, off+100)
	}
	m.Close()
	c = openCache(t, dir, 8<<20)
	defer c.Close()
	src2 := cachetest.NewSource(data)
	f, _ = c.Open(context.Background(), src2)
	defer f.Close()
	cachetest.Check(t, f, data, 100, 100000, 4)
	if c.Stats().Invalidations == 0 || src2.Bytes.Load() == 0 {
		t.Fatalf("damaged blocks were served: %+v", c.Stats())
	}
	// Sectors that were not damaged are still served from the cache.
	q := make([]byte, 4096)
	before := src2.Bytes.Load()
	f.ReadAt(q, 8192)
	if !bytes.Equal(q, data[8192:12288]) {
		t.Fatal("content differs")
	}
	_ = before
}

func TestGeometryChecked(t *testing.T) {
	if _, err := ocf.New(ocf.Options{Dir: t.TempDir(), CapacityBytes: 1 << 20, BlockSize: 5000}); err == nil {
		t.Fatal("blockSize 5000 accepted")
	}
	if _, err := ocf.New(ocf.Options{Dir: t.TempDir(), CapacityBytes: 1 << 20, RefillSize: 1000}); err == nil {
		t.Fatal("refillSize 1000 accepted")
	}
}

// TestKillDuringFills kills (SIGKILL) a child process that fills the cache
// with more blocks than it holds; after a restart every read is correct.
func TestKillDuringFills(t *testing.T) {
	data := cachetest.Data(6<<20, 10)
	if dir := os.Getenv("OBD_OCF_CHILD_DIR"); dir != "" {
		c, err := ocf.New(ocf.Options{Dir: dir, CapacityBytes: 2 << 20, BlockSize: 16384, RefillSize: 65536})
		if err != nil {
			os.Exit(3)
		}
		f, _ := c.Open(context.Background(), cachetest.NewSource(data))
		p := make([]byte, 30000)
		for i := 0; ; i++ {
			f.ReadAt(p, int64((i*104729)%(len(data)-len(p))))
		}
	}
	dir := t.TempDir()
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKillDuringFills$")
		cmd.Env = append(os.Environ(), "OBD_OCF_CHILD_DIR="+dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(150+100*round) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}
	c, err := ocf.New(ocf.Options{Dir: dir, CapacityBytes: 2 << 20, BlockSize: 16384, RefillSize: 65536})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	src := cachetest.NewSource(data)
	f, _ := c.Open(context.Background(), src)
	defer f.Close()
	if c.Stats().UsedBytes <= 4096+int64(0) {
		t.Log("nothing cached before the kills")
	}
	cachetest.Check(t, f, data, 300, 50000, 5)
	t.Logf("after kills: %+v, fetched %d bytes for the checks", c.Stats(), src.Bytes.Load())
}

// TestDiskFilledFromOutside: another writer fills the cache's filesystem.
// A cache whose files could be reserved keeps working as if nothing
// happened; one created on a filesystem too small to reserve them stays
// sparse and serves from the source while the disk is full.
func TestDiskFilledFromOutside(t *testing.T) {
	for _, tc := range []struct {
		name     string
		capacity int64
		reserved bool
	}{{"reserved", 6 << 20, true}, {"sparse", 32 << 20, false}} {
		t.Run(tc.name, func(t *testing.T) {
			fs := cachetest.SmallFS(t, 8<<20)
			c, err := ocf.New(ocf.Options{Dir: filepath.Join(fs, "cache"), CapacityBytes: tc.capacity, RefillSize: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			src := cachetest.NewSource(cachetest.Data(4<<20, 43))
			cachetest.DiskFull(t, cachetest.DiskFullCase{FS: fs, Cache: c, Src: src, Chunk: 64 << 10, Warm: 1 << 20, ExpectFailures: !tc.reserved})
		})
	}
}

// TestSlotsDroppedWhilePinnedComeBack: blocks invalidated while readers
// hold their slots return to the free list with the last reader, so after a
// storm of reads and invalidations a blob that fills every slot is cached
// whole.
func TestSlotsDroppedWhilePinnedComeBack(t *testing.T) {
	const bs = 4096
	c, err := ocf.New(ocf.Options{Dir: t.TempDir(), CapacityBytes: 4096 + 16*(bs+128), BlockSize: bs, RefillSize: bs})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := cachetest.Data(16*bs, 44)
	f, err := c.Open(context.Background(), cachetest.NewSource(data))
	if err != nil {
		t.Fatal(err)
	}
	stop := time.Now().Add(300 * time.Millisecond)
	done := make(chan struct{})
	for g := range 3 {
		go func() {
			defer func() { done <- struct{}{} }()
			p := make([]byte, 3*bs)
			for i := 0; time.Now().Before(stop); i++ {
				off := int64((i*7+g)%14) * bs
				if g == 2 {
					f.(core.Invalidator).Invalidate(off, 3*bs)
					continue
				}
				if _, err := f.ReadAt(p, off); err != nil || !bytes.Equal(p, data[off:off+3*bs]) {
					t.Errorf("read at %d: %v", off, err)
					return
				}
			}
		}()
	}
	for range 3 {
		<-done
	}
	f.Close()
	data2 := cachetest.Data(16*bs, 45)
	src2 := cachetest.NewSource(data2)
	f2, err := c.Open(context.Background(), src2)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	p := make([]byte, len(data2))
	for range 2 {
		if _, err := f2.ReadAt(p, 0); err != nil || !bytes.Equal(p, data2) {
			t.Fatal(err)
		}
	}
	if got := src2.Bytes.Load(); got != int64(len(data2)) {
		t.Fatalf("fetched %d bytes for a %d-byte blob read twice: slots were lost", got, len(data2))
	}
}
