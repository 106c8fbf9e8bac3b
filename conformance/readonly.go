package conformance

import (
	"errors"
	"fmt"
	"sync"

	"github.com/overlaybd-go/overlaybd/core"
)

// ReadOnlyOptions tune [RunReadOnly].
type ReadOnlyOptions struct {
	// Seed fixes the content and the reads; 0 takes [Seed]().
	Seed int64
	// Reads is the number of random reads (default 2,000), made by
	// Readers goroutines at once (default 4).
	Reads, Readers int
	// VirtualSize is the size of the content (default 16 MiB).
	VirtualSize int64
	// ZeroStatus checks that block status reports every zero range of
	// the content as reading zeros (for kinds that store them as holes).
	ZeroStatus bool
	// Logf receives the seed and a summary (may be nil).
	Logf func(format string, args ...any)
}

// RunReadOnly makes a random content (data separated by holes and zeroed
// ranges) in the model, has kind build a read-only file of it, and checks
// the whole file, opts.Reads random reads from several goroutines at once,
// block status, reads across the end, and that writes fail with
// core.ErrReadOnly.
func RunReadOnly(kind ReadOnlyKind, dir string, opts ReadOnlyOptions) error {
	if opts.Seed == 0 {
		s, err := Seed()
		if err != nil {
			return fmt.Errorf("conformance: %s: %w", SeedEnv, err)
		}
		opts.Seed = s
	}
	if opts.Reads == 0 {
		opts.Reads = 2000
	}
	if opts.Readers == 0 {
		opts.Readers = 4
	}
	if opts.VirtualSize == 0 {
		opts.VirtualSize = 16 << 20
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	logf("conformance: cell %s seed %d (replay with %s=%d)", kind.Name(), opts.Seed, SeedEnv, opts.Seed)

	r := newRunner(kind.Name(), opts.Seed, opts.VirtualSize, 512)
	r.begin("fill the model")
	r.fill()
	if opts.ZeroStatus {
		if err := r.trackAllocation(0); err != nil {
			return err
		}
	}
	r.begin("build")
	f, err := kind.Build(dir, r.model)
	if err != nil {
		return r.fail("Build: %v", err)
	}
	closed := false
	defer func() {
		if !closed {
			f.Close()
		}
	}()
	if err := r.verifyAll(f); err != nil {
		return err
	}

	// Concurrent random reads: each reader has its own random source and
	// buffers, derived from the seed.
	var wg sync.WaitGroup
	errs := make([]error, opts.Readers)
	for g := 0; g < opts.Readers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rr := newRunner(kind.Name(), opts.Seed+int64(g)+1, opts.VirtualSize, 1)
			rr.model, rr.unalloc, rr.written, rr.grain = r.model, r.unalloc, r.written, r.grain
			for i := 0; i < opts.Reads/opts.Readers; i++ {
				off, n := rr.span()
				if rr.rng.IntN(50) == 0 {
					off = rr.size() - n/2
				}
				rr.begin("reader %d: read(off=%d, len=%d)", g, off, n)
				if err := rr.checkRead(f, off, n); err != nil {
					errs[g] = err
					return
				}
				if bs, ok := f.(core.BlockStatuser); ok && rr.rng.IntN(10) == 0 {
					rr.begin("reader %d: block-status(off=%d, len=%d)", g, off, min(n, rr.size()-off))
					if off < rr.size() {
						if err := rr.checkStatus(bs, off, min(n, rr.size()-off)); err != nil {
							errs[g] = err
							return
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}

	r.begin("write to a read-only file")
	if _, err := f.WriteAt(make([]byte, 512), 0); !errors.Is(err, core.ErrReadOnly) {
		return r.fail("WriteAt returned %v, want an error wrapping core.ErrReadOnly", err)
	}
	if d, ok := f.(core.Discarder); ok {
		r.begin("discard on a read-only file")
		if err := r.expectRejected(f, d.Discard(0, 4096), 0, 4096); err != nil {
			return err
		}
	}
	if err := r.verifyAll(f); err != nil {
		return err
	}
	r.begin("close")
	closed = true
	if err := f.Close(); err != nil {
		return r.fail("Close: %v", err)
	}
	logf("conformance: cell %s passed", kind.Name())
	return nil
}

// fill writes a random content into the model: 200 ranges of random data
// (some of them zeros) with zeroed ranges over some of them. The edges of
// the last ranges stay among the boundaries later requests aim at.
func (r *runner) fill() {
	for i := 0; i < 200; i++ {
		off, n := r.span()
		if r.rng.IntN(4) == 0 {
			r.model.Zero(off, n)
		} else {
			r.model.Write(r.data(n), off)
		}
	}
}
