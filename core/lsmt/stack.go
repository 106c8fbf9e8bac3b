package lsmt

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/overlaybd-go/overlaybd/core"
)

// Stack is the merged view of up to MaxStackLayers read-only layers and an
// optional writable layer on top: for every sector the topmost layer with a
// record covering it (data or zeroed) wins; sectors no layer covers read as
// zeros. The read-only layers are merged into one index when the stack is
// built, so a lookup costs one search however many layers there are.
//
// A Stack is a core.File, core.Discarder, core.ZeroWriter and
// core.BlockStatuser; writes go to the writable layer (core.ErrReadOnly
// without one). It owns its layers: Close closes them.
type Stack struct {
	lowers []*ReadOnly // bottom first
	upper  *Writable
	merged []Mapping
	v      view
	lsize  int64
	wmu    sync.Mutex // serialises writes to a sparse upper (read-modify-write of partial blocks)
}

// NewStack stacks lowers (bottom first, as the lowers of an image config)
// and, if upper is not nil, the writable layer on top. An upper of virtual
// size 0 adopts (and persists) the lower stack's size. The upper's records
// are tagged with the number of lowers from then on, as upstream does.
func NewStack(lowers []*ReadOnly, upper *Writable) (*Stack, error) {
	if len(lowers) > MaxStackLayers {
		return nil, fmt.Errorf("lsmt: stack of %d read-only layers, at most %d: %w", len(lowers), MaxStackLayers, core.ErrUnsupported)
	}
	if len(lowers) == 0 && upper == nil {
		return nil, fmt.Errorf("lsmt: empty stack: %w", core.ErrUnsupported)
	}
	s := &Stack{lowers: lowers, upper: upper}
	layers := make([][]Mapping, len(lowers))
	files := make([]core.File, 0, len(lowers)+1)
	for i := range lowers {
		top := lowers[len(lowers)-1-i]
		layers[i] = top.recs
		files = append(files, top.f)
		if s.lsize == 0 && top.vsize > 0 {
			s.lsize = top.vsize
		}
	}
	merged, err := mergeIndexes(layers)
	if err != nil {
		return nil, err
	}
	s.merged = merged
	s.v = view{files: files}
	if len(lowers) > 0 {
		s.v.lower = newFlatIndex(merged)
	}
	if upper != nil {
		if upper.Size() == 0 && s.lsize > 0 {
			if err := upper.SetVirtualSize(s.lsize); err != nil {
				return nil, fmt.Errorf("lsmt: adopt the lower stack's size: %w", err)
			}
		}
		upper.wmu.Lock()
		upper.tag = uint8(len(lowers))
		upper.wmu.Unlock()
		s.v.upper = upper
		s.v.upperTag = uint8(len(lowers))
		s.v.files = append(s.v.files, upper.data)
	}
	return s, nil
}

// OpenStack opens each file as a read-only layer (bottom first) and stacks
// them under upper (which may be nil). On success the Stack owns the files;
// on failure none of them is closed.
func OpenStack(files []core.File, upper *Writable) (*Stack, error) {
	lowers := make([]*ReadOnly, len(files))
	for i, f := range files {
		r, err := OpenReadOnly(f)
		if err != nil {
			return nil, fmt.Errorf("lsmt: open lower %d: %w", i, err)
		}
		lowers[i] = r
	}
	return NewStack(lowers, upper)
}

// Lowers returns the read-only layers, bottom first.
func (s *Stack) Lowers() []*ReadOnly { return s.lowers }

// Upper returns the writable layer, or nil.
func (s *Stack) Upper() *Writable { return s.upper }

// MergedIndex returns the merged index of the read-only layers, with tags
// selecting the layer (0 = topmost). The slice is shared; do not modify it.
func (s *Stack) MergedIndex() []Mapping { return s.merged }

// Size returns the virtual size: the upper's, else that of the topmost
// read-only layer whose size is not 0.
func (s *Stack) Size() int64 {
	if s.upper != nil {
		return s.upper.Size()
	}
	return s.lsize
}

// ReadAt reads the merged device.
func (s *Stack) ReadAt(p []byte, off int64) (int, error) {
	if s.upper != nil && s.upper.closed.Load() {
		return 0, core.ErrClosed
	}
	return s.v.readAt(p, off, s.Size())
}

// WriteAt writes to the writable layer.
//
// A sparse writable layer is rebuilt from its file's allocation on reopen,
// at the granularity of the file system's blocks, so a write that covers a
// block only partly would, after a reopen, hide the lower layers' data in
// the rest of that block (upstream has this bug). Over lower layers the
// Stack therefore completes such a write to whole blocks with what the
// stack reads there.
func (s *Stack) WriteAt(p []byte, off int64) (int, error) {
	if s.upper == nil {
		return 0, fmt.Errorf("lsmt: write to a stack without a writable layer: %w", core.ErrReadOnly)
	}
	if !s.upper.sparse || len(s.lowers) == 0 {
		return s.upper.WriteAt(p, off)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.upper.checkRange("write", off, int64(len(p))); err != nil {
		return 0, err
	}
	bs := s.upper.blockSize
	end := off + int64(len(p))
	for cur := off; cur < end; {
		ce := min((cur/MaxIOSize+1)*MaxIOSize, end)
		if err := s.writeBlocks(p[cur-off:ce-off], cur, bs); err != nil {
			return int(cur - off), err
		}
		cur = ce
	}
	return len(p), nil
}

// writeBlocks writes p at off into the sparse upper, extended to whole
// blocks of bs bytes with the stack's current content (s.wmu held).
func (s *Stack) writeBlocks(p []byte, off, bs int64) error {
	size := s.Size()
	end := off + int64(len(p))
	hb := off / bs * bs
	te := min((end+bs-1)/bs*bs, size)
	if hb == off && te <= end {
		_, err := s.upper.WriteAt(p, off)
		return err
	}
	buf := make([]byte, te-hb)
	if off > hb {
		if _, err := s.v.readAt(buf[:off-hb], hb, size); err != nil {
			return fmt.Errorf("lsmt: read the rest of a partly written block: %w", err)
		}
	}
	copy(buf[off-hb:], p)
	if end < te {
		if _, err := s.v.readAt(buf[end-hb:], end, size); err != nil {
			return fmt.Errorf("lsmt: read the rest of a partly written block: %w", err)
		}
	}
	_, err := s.upper.WriteAt(buf, hb)
	return err
}

// Discard discards in the writable layer; the range reads as zeros.
func (s *Stack) Discard(off, length int64) error {
	if s.upper == nil {
		return fmt.Errorf("lsmt: discard on a stack without a writable layer: %w", core.ErrReadOnly)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.upper.Discard(off, length)
}

// WriteZeroes zeroes a range in the writable layer.
func (s *Stack) WriteZeroes(off, length int64) error {
	if s.upper == nil {
		return fmt.Errorf("lsmt: write zeroes on a stack without a writable layer: %w", core.ErrReadOnly)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.upper.WriteZeroes(off, length)
}

// BlockStatus implements core.BlockStatuser over the merged view.
func (s *Stack) BlockStatus(off, length int64) ([]core.Extent, error) {
	return s.v.blockStatus(off, length, s.Size())
}

// Sync syncs the writable layer.
func (s *Stack) Sync() error {
	if s.upper == nil {
		return nil
	}
	return s.upper.Sync()
}

// Close closes every layer.
func (s *Stack) Close() error {
	var errs []error
	if s.upper != nil {
		errs = append(errs, s.upper.Close())
	}
	for _, l := range s.lowers {
		errs = append(errs, l.Close())
	}
	return errors.Join(errs...)
}

// Flatten writes the whole stack as one committed layer to out
// (overlaybd-merge, FORMAT-LSMT §7.4), byte for byte as upstream: records
// keep the tag of the layer their data came from (0 = topmost read-only
// layer, the writable layer last), the virtual size comes from the topmost
// read-only layer's header and the parent UUID from the bottom source's
// header. Writes must not run concurrently.
func (s *Stack) Flatten(out io.Writer, opts CommitOptions) error {
	recs := s.v.lookup(nil, 0, InvalidOffset)
	return compact(out, s.v.files, recs, opts)
}
