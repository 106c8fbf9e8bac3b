package lsmt

import (
	"fmt"
	"sort"

	"github.com/overlaybd-go/overlaybd/core"
)

// rwIndex is the index of a writable layer: an ordered set of
// non-overlapping mappings with upstream's insert semantics (FORMAT-LSMT §5):
// a new mapping replaces whatever it covers, cutting the records at its
// edges; neighbours are never merged.
//
// It is kept as a list of sorted chunks of at most rwChunkMax records, so an
// insert costs O(log n + rwChunkMax) instead of moving the whole array.
// It is not safe for concurrent use; the layer guards it.
type rwIndex struct {
	chunks [][]Mapping
	n      int
}

const rwChunkMax = 512

// Len returns the number of records.
func (x *rwIndex) Len() int { return x.n }

// firstChunk returns the first chunk whose last record ends after sector s.
func (x *rwIndex) firstChunk(s uint64) int {
	return sort.Search(len(x.chunks), func(i int) bool {
		c := x.chunks[i]
		return c[len(c)-1].End() > s
	})
}

// find returns the position (chunk, record) of the first record that ends
// after sector s; ci == len(chunks) when there is none.
func (x *rwIndex) find(s uint64) (ci, ri int) {
	ci = x.firstChunk(s)
	if ci == len(x.chunks) {
		return ci, 0
	}
	c := x.chunks[ci]
	ri = sort.Search(len(c), func(i int) bool { return c[i].End() > s })
	return ci, ri
}

func clip(m Mapping, b, e uint64) Mapping {
	if b > m.Offset {
		if !m.Zeroed {
			m.MOffset += b - m.Offset
		}
		m.Length -= uint32(b - m.Offset)
		m.Offset = b
	}
	if e < m.End() {
		m.Length = uint32(e - m.Offset)
	}
	return m
}

// Insert adds m, replacing what it covers.
func (x *rwIndex) Insert(m Mapping) {
	if m.Length == 0 {
		return
	}
	b, e := m.Offset, m.End()
	ci, ri := x.find(b)
	// Collect the replacement: left remainder, m, right remainder.
	var repl [3]Mapping
	nr := 0
	// Walk the overlapped records to find the end position (cj, rj).
	cj, rj := ci, ri
	removed := 0
	for cj < len(x.chunks) {
		c := x.chunks[cj]
		if rj == len(c) {
			cj, rj = cj+1, 0
			continue
		}
		r := c[rj]
		if r.Offset >= e {
			break
		}
		if removed == 0 && r.Offset < b {
			repl[nr] = clip(r, r.Offset, b)
			nr++
		}
		if r.End() > e {
			repl[2] = clip(r, e, r.End())
		}
		removed++
		rj++
	}
	repl[nr] = m
	nr++
	if repl[2].Length != 0 {
		repl[nr] = repl[2]
		nr++
	}
	x.splice(ci, ri, cj, rj, repl[:nr], removed)
}

// splice replaces the records from (ci, ri) up to (cj, rj) exclusive with
// repl.
func (x *rwIndex) splice(ci, ri, cj, rj int, repl []Mapping, removed int) {
	x.n += len(repl) - removed
	if ci == len(x.chunks) {
		// Append after everything.
		if len(x.chunks) > 0 && len(x.chunks[len(x.chunks)-1]) < rwChunkMax {
			last := len(x.chunks) - 1
			x.chunks[last] = append(x.chunks[last], repl...)
			return
		}
		x.chunks = append(x.chunks, append(make([]Mapping, 0, rwChunkMax), repl...))
		return
	}
	if cj == len(x.chunks) {
		cj, rj = len(x.chunks)-1, len(x.chunks[len(x.chunks)-1])
	}
	if ci == cj {
		c := x.chunks[ci]
		old := len(c)
		nl := old - (rj - ri) + len(repl)
		if nl > 0 && nl <= cap(c) {
			// In place: move the tail, then put the replacement.
			if nl > old {
				c = c[:nl]
			}
			copy(c[ri+len(repl):], c[rj:old])
			copy(c[ri:], repl)
			x.chunks[ci] = c[:nl]
			return
		}
		nc := make([]Mapping, 0, nl)
		nc = append(nc, c[:ri]...)
		nc = append(nc, repl...)
		nc = append(nc, c[rj:]...)
		x.setChunk(ci, ci+1, nc)
		return
	}
	first := append(x.chunks[ci][:ri:ri], repl...)
	last := x.chunks[cj][rj:]
	merged := make([]Mapping, 0, len(first)+len(last))
	merged = append(merged, first...)
	merged = append(merged, last...)
	x.setChunk(ci, cj+1, merged)
}

// setChunk replaces chunks [i, j) with c, splitting c if it is too long
// and dropping it if empty.
func (x *rwIndex) setChunk(i, j int, c []Mapping) {
	var parts [][]Mapping
	for len(c) > rwChunkMax {
		half := rwChunkMax / 2
		parts = append(parts, append(make([]Mapping, 0, rwChunkMax), c[:half]...))
		c = c[half:]
	}
	if len(c) > 0 {
		parts = append(parts, append(make([]Mapping, 0, rwChunkMax), c...))
	}
	tail := append([][]Mapping(nil), x.chunks[j:]...)
	x.chunks = append(append(x.chunks[:i], parts...), tail...)
}

// Lookup appends to dst the records intersecting sectors [b, e), clipped
// to the range.
func (x *rwIndex) Lookup(dst []Mapping, b, e uint64) []Mapping {
	ci, ri := x.find(b)
	for ci < len(x.chunks) {
		c := x.chunks[ci]
		for ; ri < len(c); ri++ {
			if c[ri].Offset >= e {
				return dst
			}
			dst = append(dst, clip(c[ri], b, e))
		}
		ci, ri = ci+1, 0
	}
	return dst
}

// All returns a copy of every record in order.
func (x *rwIndex) All() []Mapping {
	out := make([]Mapping, 0, x.n)
	for _, c := range x.chunks {
		out = append(out, c...)
	}
	return out
}

// flatIndex is an immutable sorted, non-overlapping array of mappings with
// a lookup structure (radixIndex) over the records' end sectors.
type flatIndex struct {
	recs []Mapping
	rx   *radixIndex
}

func newFlatIndex(recs []Mapping) *flatIndex {
	ends := make([]uint64, len(recs))
	for i := range recs {
		ends[i] = recs[i].End()
	}
	return &flatIndex{recs: recs, rx: newRadixIndex(ends)}
}

// first returns the position of the first record that ends after sector s
// (len(recs) if none).
func (ix *flatIndex) first(s uint64) int { return ix.rx.upper(s) }

// Lookup appends to dst the records intersecting sectors [b, e), clipped
// to the range.
func (ix *flatIndex) Lookup(dst []Mapping, b, e uint64) []Mapping {
	recs := ix.recs
	for i := ix.first(b); i < len(recs) && recs[i].Offset < e; i++ {
		dst = append(dst, clip(recs[i], b, e))
	}
	return dst
}

// mergeIndexes builds the merged index of a stack (FORMAT-LSMT §8):
// layers are given top first, each sorted and non-overlapping; for every
// sector the topmost layer with a record covering it wins, and the result
// carries the layer's position as tag (0 = top).
func mergeIndexes(layers [][]Mapping) ([]Mapping, error) {
	return mergeIndexesLimit(layers, MaxIndexSize)
}

// mergeIndexesLimit is mergeIndexes with a bound on the merged record count.
func mergeIndexesLimit(layers [][]Mapping, limit int) ([]Mapping, error) {
	if len(layers) > MaxStackLayers+1 {
		return nil, fmt.Errorf("lsmt: %d layers, at most %d: %w", len(layers), MaxStackLayers, core.ErrUnsupported)
	}
	var res []Mapping
	for level, recs := range layers {
		res = mergeUnder(res, recs, uint8(level))
		if len(res) > limit {
			return nil, fmt.Errorf("lsmt: merged index of %d records exceeds %d: %w", len(res), limit, core.ErrUnsupported)
		}
	}
	return res, nil
}

// mergeUnder returns upper with the parts of lower that upper does not
// cover filled in, tagged tag.
func mergeUnder(upper, lower []Mapping, tag uint8) []Mapping {
	out := make([]Mapping, 0, len(upper)+len(lower))
	j := 0
	for _, l := range lower {
		l.Tag = tag
		pos, end := l.Offset, l.End()
		for pos < end {
			for j < len(upper) && upper[j].End() <= pos {
				out = append(out, upper[j])
				j++
			}
			if j < len(upper) && upper[j].Offset <= pos {
				pos = upper[j].End()
				continue
			}
			gapEnd := end
			if j < len(upper) && upper[j].Offset < gapEnd {
				gapEnd = upper[j].Offset
			}
			out = append(out, clip(l, pos, gapEnd))
			pos = gapEnd
		}
	}
	return append(out, upper[j:]...)
}
