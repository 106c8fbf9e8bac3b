package kinds

import (
	"bytes"
	"testing"

	"github.com/overlaybd-go/overlaybd/conformance"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/envelope"
	"github.com/overlaybd-go/overlaybd/core/zfile"
)

// runs returns the operations per run and the number of seeds: 10,000 and
// one in the regular suite, 100,000 and four with OVERLAYBD_LONG=1.
func runs(t *testing.T) (ops, seeds int) {
	if conformance.Long() {
		return 100_000, 4
	}
	if testing.Short() {
		return 2_000, 1
	}
	return 10_000, 1
}

func runWritable(t *testing.T, kind conformance.WritableKind, opts conformance.WritableOptions, wantStack bool) {
	t.Parallel()
	ops, seeds := runs(t)
	for i := 0; i < seeds; i++ {
		seed, err := conformance.Seed()
		if err != nil {
			t.Fatal(err)
		}
		o := opts
		o.Seed, o.Ops, o.Logf = seed+int64(i), ops, t.Logf
		dir := t.TempDir()
		if lk, ok := kind.(LSMTWritable); ok {
			// LSMT layers report their holes: block status is checked
			// against the model's allocation.
			if o.AllocationGrain, err = lk.AllocationGrain(dir); err != nil {
				t.Fatal(err)
			}
			o.ZeroStatus = true
		}
		c, err := conformance.RunWritable(kind, dir, o)
		if err != nil {
			t.Fatal(err)
		}
		if c.Reopens == 0 || c.Discards == 0 || c.Zeroes == 0 || c.Rejected == 0 || c.Statuses == 0 ||
			(wantStack && (c.Commits == 0 || c.Seals+c.Flattens == 0)) {
			t.Errorf("run did not exercise every operation: %+v", c)
		}
	}
}

// Both writable LSMT kinds run the random scenarios against the model
// through sync, reopen, commit, seal, stacking and flattening.
func TestLSMTWritableConformance(t *testing.T) {
	t.Run("append-only", func(t *testing.T) {
		runWritable(t, LSMTWritable{}, conformance.WritableOptions{}, true)
	})
	// Sparse layers take 512-byte requests; alone they match the model.
	t.Run("sparse", func(t *testing.T) {
		runWritable(t, LSMTWritable{Sparse: true}, conformance.WritableOptions{MaxLayers: -1, Cell: "lsmt/sparse (single layer)"}, false)
	})
	// Over read-only layers, sparse layers take 512-byte requests too:
	// partly written filesystem blocks keep the lower's data across a
	// reopen (TestLSMTSparsePartialBlockOverLower).
	t.Run("sparse-stacked", func(t *testing.T) {
		runWritable(t, LSMTWritable{Sparse: true}, conformance.WritableOptions{Cell: "lsmt/sparse (stacked)"}, true)
	})
	// Over an image's lowers: two sealed zstd ZFile layers in tar
	// envelopes beneath an append-only layer whose commits are lz4
	// ZFiles, and two committed layers beneath a sparse one.
	t.Run("append-only-over-zfile-tar", func(t *testing.T) {
		runWritable(t, LSMTWritable{
			Lowers:   LSMTReadOnly{Layers: 2, Seal: true, Tar: true, ZFile: &zfile.Options{Algorithm: "zstd"}},
			Envelope: &envelope.CreateOptions{ZFile: &zfile.Options{Algorithm: "lz4"}},
		}, conformance.WritableOptions{Base: true}, true)
	})
	t.Run("sparse-over-committed", func(t *testing.T) {
		runWritable(t, LSMTWritable{Sparse: true, Lowers: LSMTReadOnly{Layers: 2}}, conformance.WritableOptions{Base: true}, true)
	})
}

// TestLSMTSparsePartialBlockOverLower checks that a sparse layer over a
// lower keeps the lower's data in the unwritten sectors of a partly written
// filesystem block across a reopen (the allocation of the data file is
// block granular, FORMAT-LSMT §4.4).
func TestLSMTSparsePartialBlockOverLower(t *testing.T) {
	dir := t.TempDir()
	dev, err := LSMTWritable{Sparse: true}.Create(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	lower := bytes.Repeat([]byte{0xAB}, 512)
	if _, err := dev.File().WriteAt(lower, 8192); err != nil {
		t.Fatal(err)
	}
	if err := dev.(conformance.Committer).Commit(); err != nil {
		t.Fatal(err)
	}
	// One sector in the same 4 KiB block, two sectors further.
	if _, err := dev.File().WriteAt(bytes.Repeat([]byte{0xCD}, 512), 8192+1024); err != nil {
		t.Fatal(err)
	}
	check := func(when string, f core.File) {
		got := make([]byte, 512)
		if _, err := f.ReadAt(got, 8192); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, lower) {
			t.Errorf("%s: the lower layer's sector reads %#x..., want 0xab", when, got[0])
		}
	}
	check("before reopen", dev.File())
	if err := dev.File().Sync(); err != nil {
		t.Fatal(err)
	}
	if err := dev.Reopen(); err != nil {
		t.Fatal(err)
	}
	check("after reopen", dev.File())
}
