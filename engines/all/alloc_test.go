package all_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
)

// TestNoAllocationPerRequest checks that a 4 KiB read or write, aligned and
// O_DIRECT where the filesystem allows it, costs no heap allocation on its
// way through any engine: request state lives in pooled or preallocated
// structures. (A garbage collection during the run may empty a pool, so a
// small average is tolerated.)
func TestNoAllocationPerRequest(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items")
	}
	dir, err := os.MkdirTemp(os.Getenv("OVERLAYBD_BENCH_DIR"), "engines-alloc")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "data")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"psync", "libaio", "io_uring", "posixaio"} {
		for _, direct := range []bool{false, true} {
			factory, err := core.Engines.Lookup(name)
			if err != nil {
				t.Fatal(err)
			}
			e, err := factory(core.EngineConfig{})
			if err != nil {
				t.Fatal(err)
			}
			f, err := e.Open(path, core.OpenOptions{Flag: os.O_RDWR, Direct: direct, Buffered: !direct})
			if err != nil {
				t.Fatal(err)
			}
			buf := aligned(4096)
			off := int64(0)
			allocs := testing.AllocsPerRun(500, func() {
				off = (off + 4096) % (1 << 20)
				if n, err := f.ReadAt(buf, off); n != len(buf) {
					t.Fatalf("%s: ReadAt = %d, %v", name, n, err)
				}
				if n, err := f.WriteAt(buf, off); n != len(buf) {
					t.Fatalf("%s: WriteAt = %d, %v", name, n, err)
				}
			})
			t.Logf("%s (%s, direct %v): %.3f allocations per read+write", name, e.Name(), direct, allocs)
			if allocs > 0.1 {
				t.Errorf("%s (direct %v): %.3f allocations per read+write, want 0", name, direct, allocs)
			}
			f.Close()
			e.Close()
		}
	}
}
