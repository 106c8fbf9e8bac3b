package conformance

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/overlaybd-go/overlaybd/core"
)

// WritableOptions tune [RunWritable].
type WritableOptions struct {
	// Seed fixes the random operations; 0 takes [Seed]().
	Seed int64
	// Ops is the number of random operations (default 10,000).
	Ops int
	// VirtualSize is the device size (default 16 MiB).
	VirtualSize int64
	// MaxLayers bounds the commits and seals of a run, i.e. the read-only
	// layers the device stacks (default 32; negative: no commits or seals).
	MaxLayers int
	// Granularity, when set, aligns the offsets and lengths of the
	// generated writes, discards and write-zeroes (a multiple of the kind's
	// Alignment); requests meant to be rejected still use the Alignment.
	Granularity int64
	// Base starts the device over read-only lowers with a random content
	// (data separated by holes and zeroed ranges, as [RunReadOnly]
	// makes): the kind must implement [BaseCreator].
	Base bool
	// ZeroStatus checks that block status reports every range the model
	// knows holds no data (never written, discarded, write-zeroed; the
	// zero ranges of the Base content) as reading zeros, on top of the
	// checks made for every kind.
	ZeroStatus bool
	// AllocationGrain is the granularity at which the kind allocates
	// (default 512): a block of this size that was written to stays
	// allowed to report data until it is wholly discarded or
	// write-zeroed (a sparse file keeps partly punched file-system
	// blocks allocated).
	AllocationGrain int64
	// Cell names the run in logs and failures (default: the kind's
	// Name).
	Cell string
	// Logf receives the seed and a summary (may be nil).
	Logf func(format string, args ...any)
}

// Counts are the operations a run performed, by kind.
type Counts struct {
	// Writes, Reads, Discards, Zeroes, Statuses and Syncs count the
	// single requests of each kind; Parallel the rounds of concurrent
	// writes and reads.
	Writes, Reads, Discards, Zeroes, Statuses, Syncs, Parallel int
	// Rejected counts requests that had to fail (past the end,
	// unaligned); Reopens, Commits, Seals and Flattens the device-wide
	// operations.
	Rejected, Reopens, Commits, Seals, Flattens int
	// Crashes counts reopens after a (simulated) power loss.
	Crashes int
}

// Operation weights, per 10,000.
var writableMix = []struct {
	op     string
	weight int
}{
	{"write", 3400},
	{"read", 2600},
	{"discard", 900},
	{"zero", 700},
	{"status", 600},
	{"sync", 400},
	{"parallel", 120},
	{"bad-range", 150},
	{"unaligned", 150},
	{"reopen", 15},
	{"crash", 10},
	{"commit", 12},
	{"seal", 6},
	{"flatten", 3},
}

// RunWritable runs opts.Ops random operations on a new device of kind and on
// the model, checks every read and status against the model, reads back the
// range of every discard and write-zeroes at once, and checks the
// whole device after every reopen, commit, seal and flatten and at the end.
// dir must be an empty folder. The first difference is returned as a
// *Failure; errors of the harness itself (e.g. a device that cannot be
// created) are returned as they are.
func RunWritable(kind WritableKind, dir string, opts WritableOptions) (Counts, error) {
	var c Counts
	if opts.Seed == 0 {
		s, err := Seed()
		if err != nil {
			return c, fmt.Errorf("conformance: %s: %w", SeedEnv, err)
		}
		opts.Seed = s
	}
	if opts.Ops == 0 {
		opts.Ops = 10_000
	}
	if opts.VirtualSize == 0 {
		opts.VirtualSize = 16 << 20
	}
	if opts.MaxLayers == 0 {
		opts.MaxLayers = 32
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if opts.Cell == "" {
		opts.Cell = kind.Name()
	}
	logf("conformance: cell %s seed %d (replay with %s=%d), %d operations", opts.Cell, opts.Seed, SeedEnv, opts.Seed, opts.Ops)

	r := newRunner(opts.Cell, opts.Seed, opts.VirtualSize, kind.Alignment())
	if g := opts.Granularity; g > 0 {
		if g%r.align != 0 || opts.VirtualSize%g != 0 {
			return c, fmt.Errorf("conformance: granularity %d is not a multiple of the alignment %d or does not divide the size", g, r.align)
		}
		r.gran = g
	}
	var dev Device
	var err error
	if opts.Base {
		bc, ok := kind.(BaseCreator)
		if !ok {
			return c, fmt.Errorf("conformance: %s cannot start over lowers (no CreateOver)", opts.Cell)
		}
		r.begin("fill the model")
		r.fill()
		r.begin("create over lowers(vsize=%d)", opts.VirtualSize)
		dev, err = bc.CreateOver(dir, r.model)
	} else {
		r.begin("create(vsize=%d)", opts.VirtualSize)
		dev, err = kind.Create(dir, opts.VirtualSize)
	}
	if err != nil {
		return c, r.fail("Create: %v", err)
	}
	if opts.ZeroStatus {
		if err := r.trackAllocation(opts.AllocationGrain); err != nil {
			return c, err
		}
	}
	defer func() {
		if dev != nil {
			dev.Close()
		}
	}()
	if err := r.verifyAll(dev.File()); err != nil {
		return c, err
	}

	total := 0
	for _, m := range writableMix {
		total += m.weight
	}
	layers := 0
	flattens := 0
	// Rare operations also happen at fixed points, so that even a short
	// run reopens, commits, seals and flattens.
	forced := map[int]string{opts.Ops / 5: "reopen", 2 * opts.Ops / 5: "commit", opts.Ops / 2: "seal",
		3 * opts.Ops / 5: "flatten", 7 * opts.Ops / 10: "crash", 4 * opts.Ops / 5: "reopen"}
	for i := 0; i < opts.Ops; i++ {
		pick := r.rng.IntN(total)
		op := ""
		for _, m := range writableMix {
			if pick < m.weight {
				op = m.op
				break
			}
			pick -= m.weight
		}
		if f, ok := forced[i]; ok && i > 0 {
			op = f
		}
		f := dev.File()
		switch op {
		case "write":
			off, n := r.span()
			p := r.data(n)
			r.begin("write(off=%d, len=%d)", off, n)
			got, err := f.WriteAt(p, off)
			if err != nil || got != int(n) {
				return c, r.fail("WriteAt returned %d, %v; want %d, nil", got, err, n)
			}
			r.write(p, off)
			r.markDirty(off, n)
			c.Writes++
		case "read":
			off, n := r.span()
			if r.rng.IntN(50) == 0 { // a read across the end of the device
				off = r.size() - n/2
			}
			r.begin("read(off=%d, len=%d)", off, n)
			if err := r.checkRead(f, off, n); err != nil {
				return c, err
			}
			c.Reads++
		case "discard":
			d, ok := f.(core.Discarder)
			if !ok {
				continue
			}
			off, n := r.span()
			r.begin("discard(off=%d, len=%d)", off, n)
			if err := d.Discard(off, n); err != nil {
				return c, r.fail("Discard: %v", err)
			}
			r.zero(off, n)
			if err := r.checkRead(f, off, n); err != nil {
				err.(*Failure).Msg = "after the discard: " + err.(*Failure).Msg
				return c, err
			}
			r.markDirty(off, n)
			c.Discards++
		case "zero":
			z, ok := f.(core.ZeroWriter)
			if !ok {
				continue
			}
			off, n := r.span()
			r.begin("write-zeroes(off=%d, len=%d)", off, n)
			if err := z.WriteZeroes(off, n); err != nil {
				return c, r.fail("WriteZeroes: %v", err)
			}
			r.zero(off, n)
			if err := r.checkRead(f, off, n); err != nil {
				err.(*Failure).Msg = "after the write-zeroes: " + err.(*Failure).Msg
				return c, err
			}
			r.markDirty(off, n)
			c.Zeroes++
		case "status":
			bs, ok := f.(core.BlockStatuser)
			if !ok {
				continue
			}
			off, n := r.span()
			r.begin("block-status(off=%d, len=%d)", off, n)
			if err := r.checkStatus(bs, off, n); err != nil {
				return c, err
			}
			c.Statuses++
		case "sync":
			r.begin("sync")
			if err := f.Sync(); err != nil {
				return c, r.fail("Sync: %v", err)
			}
			r.synced()
			c.Syncs++
		case "parallel":
			if err := r.parallel(f); err != nil {
				return c, err
			}
			c.Parallel++
		case "bad-range":
			// A write or discard reaching past the end must fail and
			// change nothing.
			n := r.length(4 << 20)
			off := r.size() - n + r.align*(1+r.rng.Int64N(8))
			if r.rng.IntN(4) == 0 {
				off = r.size() + r.align*r.rng.Int64N(64)
			}
			if d, ok := f.(core.Discarder); ok && r.rng.IntN(3) == 0 {
				r.begin("discard-past-end(off=%d, len=%d)", off, n)
				if err := r.expectRejected(f, d.Discard(off, n), off, n); err != nil {
					return c, err
				}
			} else {
				r.begin("write-past-end(off=%d, len=%d)", off, n)
				_, err := f.WriteAt(r.data(n), off)
				if err := r.expectRejected(f, err, off, n); err != nil {
					return c, err
				}
			}
			c.Rejected++
		case "unaligned":
			if r.align == 1 {
				continue
			}
			off, n := r.span()
			if r.rng.IntN(2) == 0 {
				off = min(off+1+r.rng.Int64N(r.align-1), r.size()-n)
				if off%r.align == 0 {
					off--
				}
			} else {
				n -= 1 + r.rng.Int64N(r.align-1)
			}
			if n <= 0 || off < 0 {
				continue
			}
			if d, ok := f.(core.Discarder); ok && r.rng.IntN(3) == 0 {
				r.begin("unaligned-discard(off=%d, len=%d)", off, n)
				if err := r.expectRejected(f, d.Discard(off, n), off, n); err != nil {
					return c, err
				}
			} else {
				r.begin("unaligned-write(off=%d, len=%d)", off, n)
				_, err := f.WriteAt(r.data(n), off)
				if err := r.expectRejected(f, err, off, n); err != nil {
					return c, err
				}
			}
			c.Rejected++
		case "reopen":
			r.begin("sync+reopen")
			if err := f.Sync(); err != nil {
				return c, r.fail("Sync: %v", err)
			}
			r.synced()
			if err := dev.Reopen(); err != nil {
				return c, r.fail("Reopen: %v", err)
			}
			if err := r.verifyAll(dev.File()); err != nil {
				return c, err
			}
			c.Reopens++
		case "crash":
			// What was synced must read back; what was not may read as
			// before or after the change, and the device must open.
			var err error
			if cr, ok := dev.(Crasher); ok {
				r.begin("crash+reopen (%d unsynced changes)", len(r.dirty))
				err = cr.Crash()
			} else {
				r.begin("reopen without sync (%d unsynced changes)", len(r.dirty))
				err = dev.Reopen()
			}
			if err != nil {
				return c, r.fail("reopen after a crash: %v", err)
			}
			nf := dev.File()
			for _, d := range r.dirty {
				p := make([]byte, d[1])
				if got, err := nf.ReadAt(p, d[0]); got != len(p) || (err != nil && !(err == io.EOF && d[0]+d[1] == r.size())) {
					return c, r.fail("ReadAt(%d, %d) after a crash returned %d, %v", d[0], d[1], got, err)
				}
				r.write(p, d[0]) // unknown allocation: counted as data
			}
			r.synced()
			if err := r.verifyAll(nf); err != nil {
				return c, err
			}
			c.Crashes++
		case "commit", "seal":
			if layers >= opts.MaxLayers {
				continue
			}
			var err error
			if op == "commit" {
				cm, ok := dev.(Committer)
				if !ok {
					continue
				}
				r.begin("commit (layer %d)", layers+1)
				err = cm.Commit()
				c.Commits++
			} else {
				s, ok := dev.(Sealer)
				if !ok {
					continue
				}
				r.begin("seal (layer %d)", layers+1)
				err = s.Seal()
				c.Seals++
			}
			if err != nil {
				return c, r.fail("%v", err)
			}
			r.synced()
			layers++
			if err := r.verifyAll(dev.File()); err != nil {
				return c, err
			}
		case "flatten":
			fl, ok := dev.(Flattener)
			if !ok {
				continue
			}
			flattens++
			r.begin("flatten")
			fdir := filepath.Join(dir, fmt.Sprintf("flatten-%d", flattens))
			if err := os.MkdirAll(fdir, 0o755); err != nil {
				return c, err
			}
			ro, err := fl.Flatten(fdir)
			if err != nil {
				return c, r.fail("Flatten: %v", err)
			}
			err = r.verifyAll(ro)
			ro.Close()
			os.RemoveAll(fdir)
			if err != nil {
				return c, err
			}
			c.Flattens++
		}
	}
	r.begin("final sync+reopen")
	if err := dev.File().Sync(); err != nil {
		return c, r.fail("Sync: %v", err)
	}
	if err := dev.Reopen(); err != nil {
		return c, r.fail("Reopen: %v", err)
	}
	if err := r.verifyAll(dev.File()); err != nil {
		return c, err
	}
	r.begin("close")
	err = dev.Close()
	dev = nil
	if err != nil {
		return c, r.fail("Close: %v", err)
	}
	logf("conformance: cell %s passed: %+v", opts.Cell, c)
	return c, nil
}
