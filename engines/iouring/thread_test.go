package iouring_test

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/engines/iouring"
)

// TestSubmitterThreadExits has goroutines that lock their OS thread and end
// without unlocking it, so their thread exits right after their reads —
// possibly after submitting other goroutines' requests too (the kernel
// cancels requests of an exiting thread). Every read must still succeed.
func TestSubmitterThreadExits(t *testing.T) {
	e := withOptions(iouring.Options{Entries: 64})(t, core.EngineConfig{})
	defer e.Close()
	path := filepath.Join(t.TempDir(), "data")
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := e.Open(path, core.OpenOptions{Flag: os.O_RDONLY, Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Go(func() {
			if g%2 == 0 {
				runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
			}
			r := rand.New(rand.NewPCG(uint64(g), 1))
			buf := make([]byte, 8192)
			for range 8 {
				off := r.Int64N(int64(len(data)/4096-2)) * 4096
				if n, err := f.ReadAt(buf, off); n != len(buf) || err != nil || !bytes.Equal(buf, data[off:off+8192]) {
					t.Errorf("goroutine %d: ReadAt(%d) = %d, %v", g, off, n, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
