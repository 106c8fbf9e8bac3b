package zfile_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/zfile"
	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
)

// batcher is a core.BatchCodec in front of an in-process codec, as a codec
// plugin is: it counts batched calls and blocks, and single-block calls.
// With fail set, every call fails as a whole, as when a plugin dies.
type batcher struct {
	core.Codec
	calls, batched, single atomic.Int64
	fail                   error
}

func (b *batcher) Decompress(dst, src []byte) (int, error) {
	b.single.Add(1)
	if b.fail != nil {
		return 0, b.fail
	}
	return b.Codec.Decompress(dst, src)
}

func (b *batcher) CompressBatch(blocks []core.CodecBlock) error {
	return core.CompressBatch(b.Codec, blocks)
}

func (b *batcher) DecompressBatch(blocks []core.CodecBlock) error {
	b.calls.Add(1)
	b.batched.Add(int64(len(blocks)))
	if b.fail != nil {
		return b.fail
	}
	for i := range blocks {
		blk := &blocks[i]
		if cap(blk.Dst) != len(blk.Dst) {
			return fmt.Errorf("destination of %d bytes has room for %d: a codec could write past the block", len(blk.Dst), cap(blk.Dst))
		}
		blk.N, blk.Err = b.Codec.Decompress(blk.Dst, blk.Src)
	}
	return nil
}

// single hides a codec's batching (liblz4's, with cgo_codecs): the reader
// then decodes block by block, the reference the batched path must match.
type single struct{ core.Codec }

// failing is an in-process codec whose every call fails with err: the
// per-block peer of a batcher with fail set.
type failing struct {
	core.Codec
	err error
}

func (f failing) Decompress([]byte, []byte) (int, error) { return 0, f.err }

// fileCodec returns the registry's codec for the algorithm of the ZFile z.
func fileCodec(t testing.TB, z []byte) core.Codec {
	t.Helper()
	h, err := zfile.ParseHeader(z)
	if err != nil {
		t.Fatal(err)
	}
	_, f, err := core.Codecs.LookupNumber(int(h.Algorithm))
	if err != nil {
		t.Fatal(err)
	}
	c, err := f()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestBatchedReads reads every vector through a batching codec: whole
// reads with one and four workers, with and without the cache, and random
// reads; every block is decoded and multi-block reads are batched.
func TestBatchedReads(t *testing.T) {
	for rel, want := range zfileVectors(t) {
		t.Run(rel, func(t *testing.T) {
			z := readVector(t, rel)
			for _, workers := range []int{1, 4} {
				for _, cache := range []int64{0, zfile.DefaultCacheBytes} {
					bc := &batcher{Codec: fileCodec(t, z)}
					r, err := zfile.Open(zfiletest.NewMemFile(z), zfile.WithCodec(bc), zfile.WithWorkers(workers), zfile.WithCacheBytes(cache))
					if err != nil {
						t.Fatal(err)
					}
					got := make([]byte, len(want))
					if n, err := r.ReadAt(got, 0); n != len(got) || (err != nil && err != io.EOF) || !bytes.Equal(got, want) {
						t.Fatalf("workers %d cache %d: %d, %v, equal %v", workers, cache, n, err, bytes.Equal(got, want))
					}
					if decoded := bc.batched.Load() + bc.single.Load(); decoded != r.BlockCount() {
						t.Fatalf("workers %d: %d blocks decoded of %d", workers, decoded, r.BlockCount())
					}
					// Several workers may cut a span to a single block.
					if workers == 1 && r.BlockCount() > 1 && bc.single.Load() != 0 {
						t.Fatalf("workers %d: %d blocks decoded one at a time", workers, bc.single.Load())
					}
					if workers == 1 && r.BlockCount() > 4*batchBlocks && bc.calls.Load() > r.BlockCount()/batchBlocks+20 {
						t.Fatalf("%d blocks in %d calls", r.BlockCount(), bc.calls.Load())
					}
					checkRandomReads(t, r, want, 100)
					r.Close()
				}
			}
		})
	}
}

// batchBlocks is the reader's largest batch.
const batchBlocks = 64

// readCases are reads around block 100 of a 4 KiB-block file (and the
// whole file): the block alone, parts of it, spans of 2, 3, 5 and more
// blocks that start before, at, or in it, and spans that end in it.
var readCases = []struct{ off, n int64 }{
	{100 * 4096, 4096}, {100*4096 + 10, 100}, {99*4096 + 100, 4096}, {99 * 4096, 2 * 4096},
	{98*4096 + 1, 3 * 4096}, {97 * 4096, 5 * 4096}, {100 * 4096, 5*4096 + 7}, {90*4096 + 3, 20 * 4096},
	{0, 1 << 20}, {0, int64(len(plain))}, {1, int64(len(plain)) - 1}, {40 * 4096, 61*4096 - 1},
	{101 * 4096, 8192}, {0, 100 * 4096},
}

// TestBatchedErrorsAsPerBlock damages one block (its stored bytes, so that
// the CRC fails, or with block CRCs off so that the codec fails or yields a
// wrong length) and checks that every read returns the very error the
// per-block path returns, with one worker and with four, and that a batch
// call failing as a whole reports the first block in the per-block words.
func TestBatchedErrorsAsPerBlock(t *testing.T) {
	type damaged struct {
		name string
		z    []byte
	}
	var files []damaged
	for _, tc := range []struct {
		opts zfile.Options
		at   []int64 // byte offsets within the stored block 100 to flip
	}{
		{zfile.Options{}, []int64{7}},
		{zfile.Options{Algorithm: "zstd"}, []int64{0}},
		{zfile.Options{NoCRC: true}, []int64{0, 1, 2}},
		{zfile.Options{NoCRC: true, Algorithm: "zstd"}, []int64{0, 5, 9}},
	} {
		z := compress(t, plain, tc.opts)
		r, err := zfile.Open(zfiletest.NewMemFile(z))
		if err != nil {
			t.Fatal(err)
		}
		off, l := r.StoredBlock(100)
		r.Close()
		for _, at := range tc.at {
			b := bytes.Clone(z)
			b[off+min(at, l-1)] ^= 0x5a
			files = append(files, damaged{fmt.Sprintf("%s-nocrc%v-at%d", tc.opts.Algorithm, tc.opts.NoCRC, at), b})
		}
	}
	compared, failed := 0, 0
	for _, f := range files {
		for _, workers := range []int{1, 4} {
			for _, cache := range []int64{0, zfile.DefaultCacheBytes} {
				plainR, err := zfile.Open(zfiletest.NewMemFile(f.z), zfile.WithCodec(single{fileCodec(t, f.z)}), zfile.WithWorkers(workers), zfile.WithCacheBytes(cache))
				if err != nil {
					t.Fatal(err)
				}
				bc := &batcher{Codec: fileCodec(t, f.z)}
				batchR, err := zfile.Open(zfiletest.NewMemFile(f.z), zfile.WithCodec(bc), zfile.WithWorkers(workers), zfile.WithCacheBytes(cache))
				if err != nil {
					t.Fatal(err)
				}
				for _, rc := range readCases {
					want := make([]byte, rc.n)
					got := make([]byte, rc.n)
					n1, err1 := plainR.ReadAt(want, rc.off)
					n2, err2 := batchR.ReadAt(got, rc.off)
					if n1 != n2 || fmt.Sprint(err1) != fmt.Sprint(err2) || (err1 == nil && !bytes.Equal(got, want)) {
						t.Fatalf("%s workers %d cache %d: ReadAt(%d, %d): per block %d, %v; batched %d, %v", f.name, workers, cache, rc.n, rc.off, n1, err1, n2, err2)
					}
					if err2 != nil && !errors.Is(err2, core.ErrCorrupt) {
						t.Fatalf("%s: %v does not wrap ErrCorrupt", f.name, err2)
					}
					compared++
					if err1 != nil {
						failed++
					}
				}
				plainR.Close()
				batchR.Close()
			}
		}
	}
	if failed < compared/3 {
		t.Fatalf("only %d of %d reads failed: the damage missed", failed, compared)
	}

	// A batch call that fails as a whole.
	gone := fmt.Errorf("codec plugin: process gone: %w", core.ErrCorrupt)
	z := compress(t, plain, zfile.Options{})
	c := fileCodec(t, z)
	plainR, err := zfile.Open(zfiletest.NewMemFile(z), zfile.WithCodec(failing{c, gone}), zfile.WithWorkers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer plainR.Close()
	batchR, err := zfile.Open(zfiletest.NewMemFile(z), zfile.WithCodec(&batcher{Codec: c, fail: gone}), zfile.WithWorkers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer batchR.Close()
	for _, rc := range readCases {
		buf := make([]byte, rc.n)
		_, err1 := plainR.ReadAt(buf, rc.off)
		_, err2 := batchR.ReadAt(buf, rc.off)
		if err1 == nil || fmt.Sprint(err1) != fmt.Sprint(err2) || !errors.Is(err2, gone) {
			t.Fatalf("failed call, ReadAt(%d, %d): per block %v; batched %v", rc.n, rc.off, err1, err2)
		}
	}
}

// TestBatchedRefetch is TestRefetchAfterInvalidate through a batching
// codec: the damaged block in the middle of a batch is fetched again the
// same number of times, and its neighbours decode once.
func TestBatchedRefetch(t *testing.T) {
	z := compress(t, plain[:64<<10], zfile.Options{})
	r0, _ := zfile.Open(zfiletest.NewMemFile(z))
	off, _ := r0.StoredBlock(5)
	bad := bytes.Clone(z)
	bad[off+3] ^= 0x20
	for _, tc := range []struct {
		healAfter int
		ok        bool
	}{{1, true}, {3, true}, {4, false}} {
		hf := &healingFile{MemFile: zfiletest.NewMemFile(bad), good: z, badOff: off + 3, healAfter: tc.healAfter}
		bc := &batcher{Codec: fileCodec(t, z)}
		r, err := zfile.Open(hf, zfile.WithCacheBytes(0), zfile.WithCodec(bc), zfile.WithWorkers(1))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64<<10)
		_, err = r.ReadAt(buf, 0)
		if tc.ok && (err != nil || !bytes.Equal(buf, plain[:64<<10])) {
			t.Fatalf("heal after %d: %v", tc.healAfter, err)
		}
		if !tc.ok && !errors.Is(err, core.ErrChecksum) {
			t.Fatalf("never healed: %v", err)
		}
		if want := min(tc.healAfter, 3); hf.invalidations != want || r.Refetches() != uint64(want) {
			t.Fatalf("heal after %d: %d invalidations, %d refetches", tc.healAfter, hf.invalidations, r.Refetches())
		}
		if tc.ok && (bc.calls.Load() != 2 || bc.batched.Load() != 15) {
			// Blocks 0-4 in one call, 6-15 in another; block 5 alone
			// through refetch.
			t.Fatalf("heal after %d: %d blocks in %d calls", tc.healAfter, bc.batched.Load(), bc.calls.Load())
		}
		r.Close()
	}
}

// TestReadAllocs checks that reads with one worker allocate nothing, block
// by block, through a batching codec and with the registry's codec as it is
// (liblz4's batches with cgo_codecs): single blocks, parts of blocks, spans
// of a few blocks and large reads.
func TestReadAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, algo := range []string{"lz4", "zstd"} {
		z := compress(t, plain, zfile.Options{Algorithm: algo})
		for _, mode := range []string{"per-block", "batched", "registry"} {
			var opts []zfile.ReaderOption
			switch mode {
			case "per-block":
				opts = append(opts, zfile.WithCodec(single{fileCodec(t, z)}))
			case "batched":
				opts = append(opts, zfile.WithCodec(&batcher{Codec: fileCodec(t, z)}))
			}
			r, err := zfile.Open(zfiletest.NewMemFile(z), append(opts, zfile.WithWorkers(1))...)
			if err != nil {
				t.Fatal(err)
			}
			for _, rc := range []struct{ off, n int64 }{{0, 4096}, {4096 + 100, 1000}, {3*4096 + 5, 8192}, {8 * 4096, 64 << 10}, {0, int64(len(plain))}, {12345, 1 << 20}} {
				buf := make([]byte, rc.n)
				if _, err := r.ReadAt(buf, rc.off); err != nil {
					t.Fatal(err)
				}
				if a := testing.AllocsPerRun(20, func() {
					if _, err := r.ReadAt(buf, rc.off); err != nil {
						t.Fatal(err)
					}
				}); a != 0 {
					t.Errorf("%s %s: ReadAt(%d, %d): %v allocations", algo, mode, rc.n, rc.off, a)
				}
			}
			r.Close()
		}
	}
}

// minBatcher is a batcher that asks for at least min blocks per batch
// (core.BatchMinimum), as liblz4 does.
type minBatcher struct {
	*batcher
	min int
}

func (m minBatcher) MinBatch() int { return m.min }

// TestBatchMinimum checks that spans with fewer blocks than the codec's
// minimum decode block by block and larger ones in one call.
func TestBatchMinimum(t *testing.T) {
	z := compress(t, plain, zfile.Options{})
	bc := &batcher{Codec: fileCodec(t, z)}
	r, err := zfile.Open(zfiletest.NewMemFile(z), zfile.WithCodec(minBatcher{bc, 8}), zfile.WithWorkers(1), zfile.WithCacheBytes(0))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for blocks := int64(1); blocks <= 10; blocks++ {
		for _, skew := range []int64{0, 100} {
			calls, single := bc.calls.Load(), bc.single.Load()
			n := blocks*4096 - 2*skew // skew: the first and last blocks partial
			buf := make([]byte, n)
			if _, err := r.ReadAt(buf, 40*4096+skew); err != nil || !bytes.Equal(buf, plain[40*4096+skew:40*4096+skew+n]) {
				t.Fatalf("%d blocks: %v", blocks, err)
			}
			dc, ds := bc.calls.Load()-calls, bc.single.Load()-single
			if blocks < 8 && (dc != 0 || ds != blocks) || blocks >= 8 && (dc != 1 || ds != 0) {
				t.Fatalf("%d blocks, skew %d: %d batched calls, %d single", blocks, skew, dc, ds)
			}
		}
	}
}
