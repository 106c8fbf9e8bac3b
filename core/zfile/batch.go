package zfile

import (
	"fmt"
	"sync"

	"github.com/overlaybd-go/overlaybd/core"
)

// blockBatch holds the blocks of a span that one batched codec call
// decodes. Blocks a read covers completely decode straight into the
// caller's buffer; a partially read block decodes into a pooled block
// buffer, whose part the read wants is copied out afterwards.
type blockBatch struct {
	blocks [batchMax]core.CodecBlock
	index  [batchMax]int64 // block number of blocks[k]
	part   [batchMax]partBlock
	n      int
}

// partBlock is the partially read block of a batch entry: its pooled
// buffer (nil for a whole block), the caller's part of it, and where that
// part starts within the block.
type partBlock struct {
	buf  *[]byte
	dst  []byte
	from int64
}

// batches holds *blockBatch values, shared by every reader.
var batches = sync.Pool{New: func() any { return new(blockBatch) }}

// readSpanBatched is readSpan for a codec that batches (core.BatchCodec):
// the blocks of the span are checked against their CRCs as they are
// gathered and decoded up to batchMax at a time in one codec call, so a
// codec across a process boundary pays its round trip once per batch
// rather than once per block. Errors, and the order in which blocks fail,
// are those of readSpan: a block that fails its CRC or does not decode is
// fetched again where the file below keeps copies, and the first block
// that stays bad is the read's error.
func (r *Reader) readSpanBatched(p []byte, off, first, last int64) error {
	start := r.blockOffset(first)
	end := r.blockOffset(last + 1)
	var comp []byte
	var bufp *[]byte
	bt := batches.Get().(*blockBatch)
	defer func() {
		bt.release(r)
		batches.Put(bt)
		if bufp != nil {
			windows.Put(bufp)
		}
	}()
	for i := first; i <= last; i++ {
		bOff := i * r.bs
		bLen := r.blockLen(i)
		lo := max(off, bOff)
		hi := min(off+int64(len(p)), bOff+bLen)
		dst := p[lo-off : hi-off]
		whole := lo == bOff && hi == bOff+bLen
		if r.cache != nil && !whole && r.cache.copyOut(i, dst, int(lo-bOff)) {
			continue
		}
		if comp == nil {
			if end-start <= readWindow {
				bufp = windows.Get().(*[]byte)
				comp = (*bufp)[:end-start]
			} else {
				comp = make([]byte, end-start)
			}
			if err := readFull(r.f, comp, start); err != nil {
				return fmt.Errorf("zfile: read blocks %d-%d at %d: %w", first, last, start, err)
			}
		}
		s := r.blockOffset(i) - start
		stored := comp[s : r.blockOffset(i+1)-start]
		payload, cerr := r.payload(stored, i)
		if cerr != nil {
			// Decode what precedes the bad block first, so that the
			// first bad block is the one reported; then this block
			// goes where decode's failure would have sent it.
			if err := r.flush(bt); err != nil {
				return err
			}
			if err := r.retryBlock(dst, lo-bOff, bLen, whole, i, cerr); err != nil {
				return err
			}
			continue
		}
		k := bt.n
		bt.n++
		bt.index[k] = i
		b := &bt.blocks[k]
		b.Src = payload
		if whole {
			// Clip the capacity, as decode does.
			b.Dst = dst[:len(dst):len(dst)]
		} else {
			bp := r.blocks.Get().(*[]byte)
			b.Dst = (*bp)[:bLen:bLen]
			bt.part[k] = partBlock{buf: bp, dst: dst, from: lo - bOff}
		}
		if bt.n == batchMax {
			if err := r.flush(bt); err != nil {
				return err
			}
		}
	}
	return r.flush(bt)
}

// retryBlock handles block i, whose read part is dst from byte from of the
// block (of bLen bytes), after its first decode failed with err: refetch,
// then for a partially read block the copy to the caller and the cache.
func (r *Reader) retryBlock(dst []byte, from, bLen int64, whole bool, i int64, err error) error {
	if whole {
		return r.refetch(dst, i, err)
	}
	bp := r.blocks.Get().(*[]byte)
	defer r.blocks.Put(bp)
	blk := (*bp)[:bLen]
	if err := r.refetch(blk, i, err); err != nil {
		return err
	}
	copy(dst, blk[from:])
	if r.cache != nil {
		r.cache.add(i, blk)
	}
	return nil
}

// flush decodes the blocks gathered in bt in one codec call and settles
// them in order: a block that failed goes through refetch, with the error
// decode would have returned; a partially read block is copied to the
// caller and cached. It empties bt and returns the first error that
// stands; the blocks after it are dropped.
func (r *Reader) flush(bt *blockBatch) error {
	if bt.n == 0 {
		return nil
	}
	// A failure of the whole call is a failure of every block.
	callErr := r.batch.DecompressBatch(bt.blocks[:bt.n])
	var first error
	for k := range bt.n {
		b := &bt.blocks[k]
		pb := &bt.part[k]
		if first == nil {
			err := b.Err
			if callErr != nil {
				err = callErr
			}
			if err != nil || b.N != len(b.Dst) {
				first = r.refetch(b.Dst, bt.index[k], r.decodeError(bt.index[k], b.N, len(b.Dst), err))
			}
			if first == nil && pb.buf != nil {
				copy(pb.dst, b.Dst[pb.from:])
				if r.cache != nil {
					r.cache.add(bt.index[k], b.Dst)
				}
			}
		}
		if pb.buf != nil {
			r.blocks.Put(pb.buf)
		}
		*b, *pb = core.CodecBlock{}, partBlock{}
	}
	bt.n = 0
	return first
}

// release returns the pooled buffers of blocks still in bt (after an early
// return) and drops bt's references to the caller's memory.
func (bt *blockBatch) release(r *Reader) {
	for k := range bt.n {
		if bt.part[k].buf != nil {
			r.blocks.Put(bt.part[k].buf)
		}
		bt.blocks[k], bt.part[k] = core.CodecBlock{}, partBlock{}
	}
	bt.n = 0
}
