package lsmt

import (
	"errors"
	"fmt"
	"io"

	"github.com/overlaybd-go/overlaybd/core"
)

// view resolves virtual sectors to backing files: a merged read-only index
// (lower, may be nil) under an optional writable layer (upper). It is the
// read path shared by ReadOnly, Writable and Stack.
type view struct {
	lower    *flatIndex
	upper    *Writable
	upperTag uint8
	files    []core.File // by tag: read-only layers top first, then the upper's data file
}

// lookup appends the clipped mappings for sectors [b, e) in order.
func (v *view) lookup(dst []Mapping, b, e uint64) []Mapping {
	if v.upper == nil {
		if v.lower == nil {
			return dst
		}
		return v.lower.Lookup(dst, b, e)
	}
	var ua [8]Mapping
	ups := v.upper.lookup(ua[:0], b, e)
	if v.lower == nil {
		for _, u := range ups {
			u.Tag = v.upperTag
			dst = append(dst, u)
		}
		return dst
	}
	pos := b
	for _, u := range ups {
		if u.Offset > pos {
			dst = v.lower.Lookup(dst, pos, u.Offset)
		}
		u.Tag = v.upperTag
		dst = append(dst, u)
		pos = u.End()
	}
	if pos < e {
		dst = v.lower.Lookup(dst, pos, e)
	}
	return dst
}

// readAt fills p from the virtual byte offset off of a device of size
// bytes, with io.ReaderAt semantics.
func (v *view) readAt(p []byte, off, size int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("lsmt: read at %d: negative offset: %w", off, core.ErrOutOfRange)
	}
	if off >= size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	var eof error
	n := int64(len(p))
	if n > size-off {
		n, eof = size-off, io.EOF
	}
	end := off + n
	for pos := off; pos < end; {
		// Resolve at most MaxIOSize at a time to bound the lookup.
		chunkEnd := min(end, pos+MaxIOSize)
		if err := v.readRange(p[pos-off:chunkEnd-off], pos); err != nil {
			return int(pos - off), err
		}
		pos = chunkEnd
	}
	return int(n), eof
}

// readRange fills p (at most MaxIOSize bytes) from virtual offset off.
func (v *view) readRange(p []byte, off int64) error {
	end := off + int64(len(p))
	sb := uint64(off) / SectorSize
	se := (uint64(end) + SectorSize - 1) / SectorSize
	var arr [8]Mapping
	ms := v.lookup(arr[:0], sb, se)
	pos := off
	var batch []core.IORequest
	for _, m := range ms {
		mb := max(int64(m.Offset)*SectorSize, off)
		me := min(int64(m.End())*SectorSize, end)
		if mb > pos {
			clear(p[pos-off : mb-off])
		}
		dst := p[mb-off : me-off]
		if m.Zeroed {
			clear(dst)
		} else {
			src := int64(m.MOffset)*SectorSize + (mb - int64(m.Offset)*SectorSize)
			if len(ms) > 1 {
				if _, ok := v.files[m.Tag].(core.BatchFile); ok {
					batch = append(batch, core.IORequest{Op: core.OpRead, Buf: dst, Off: src, N: int(m.Tag)})
					pos = me
					continue
				}
			}
			if err := readFull(v.files[m.Tag], dst, src); err != nil {
				return fmt.Errorf("lsmt: read layer %d at %d: %w", m.Tag, src, err)
			}
		}
		pos = me
	}
	if pos < end {
		clear(p[pos-off:])
	}
	if len(batch) > 0 {
		return v.readBatch(batch)
	}
	return nil
}

// readBatch submits the gathered reads, one batch per backing file, and
// completes short reads.
func (v *view) readBatch(reqs []core.IORequest) error {
	tags := make([]int, len(reqs))
	for i := range reqs {
		tags[i] = reqs[i].N
		reqs[i].N = 0
	}
	done := make([]bool, len(reqs))
	for i := range reqs {
		if done[i] {
			continue
		}
		var group []core.IORequest
		var idx []int
		for j := i; j < len(reqs); j++ {
			if !done[j] && tags[j] == tags[i] {
				group = append(group, reqs[j])
				idx = append(idx, j)
				done[j] = true
			}
		}
		f := v.files[tags[i]]
		if err := f.(core.BatchFile).Batch(group); err != nil {
			return fmt.Errorf("lsmt: batch read layer %d: %w", tags[i], err)
		}
		for k, r := range group {
			if r.Err != nil || r.N < len(r.Buf) {
				if r.Err != nil && !errors.Is(r.Err, io.EOF) {
					return fmt.Errorf("lsmt: read layer %d at %d: %w", tags[idx[k]], r.Off, r.Err)
				}
				if err := readFull(f, r.Buf[r.N:], r.Off+int64(r.N)); err != nil {
					return fmt.Errorf("lsmt: read layer %d at %d: %w", tags[idx[k]], r.Off, err)
				}
			}
		}
	}
	return nil
}

// readFull reads len(p) bytes at off; bytes past the end of f read as
// zeros (a backing file may end inside a mapped range, FORMAT-LSMT §6.3).
func readFull(f core.File, p []byte, off int64) error {
	for len(p) > 0 {
		n, err := f.ReadAt(p, off)
		p, off = p[n:], off+int64(n)
		if len(p) == 0 {
			return nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				clear(p)
				return nil
			}
			return err
		}
		if n == 0 {
			return fmt.Errorf("read returned no data: %w", io.ErrNoProgress)
		}
	}
	return nil
}

// maxExtents bounds the answer of blockStatus.
const maxExtents = 1024

// blockStatus describes [off, off+length) of a device of size bytes.
func (v *view) blockStatus(off, length, size int64) ([]core.Extent, error) {
	if off < 0 || length < 0 || off >= size && length > 0 {
		return nil, fmt.Errorf("lsmt: block status [%d, +%d) of a %d-byte device: %w", off, length, size, core.ErrOutOfRange)
	}
	end := min(off+length, size)
	var out []core.Extent
	add := func(b, e int64, fl core.ExtentFlags) {
		if e <= b {
			return
		}
		if n := len(out); n > 0 && out[n-1].Flags == fl && out[n-1].Offset+out[n-1].Length == b {
			out[n-1].Length += e - b
			return
		}
		out = append(out, core.Extent{Offset: b, Length: e - b, Flags: fl})
	}
	const hole = core.ExtentHole | core.ExtentZero
	for pos := off; pos < end && len(out) < maxExtents; {
		chunkEnd := min(end, pos+(1<<30))
		ms := v.lookup(nil, uint64(pos)/SectorSize, (uint64(chunkEnd)+SectorSize-1)/SectorSize)
		cur := pos
		for _, m := range ms {
			mb := max(int64(m.Offset)*SectorSize, pos)
			me := min(int64(m.End())*SectorSize, chunkEnd)
			add(cur, mb, hole)
			if m.Zeroed {
				add(mb, me, hole)
			} else {
				add(mb, me, 0)
			}
			cur = me
		}
		add(cur, chunkEnd, hole)
		pos = chunkEnd
	}
	if len(out) > maxExtents {
		out = out[:maxExtents]
	}
	return out, nil
}
