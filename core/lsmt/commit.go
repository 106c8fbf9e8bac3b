package lsmt

import (
	"bufio"
	"fmt"
	"io"

	"github.com/overlaybd-go/overlaybd/core"
)

// CommitOptions are the header values of a committed layer
// (FORMAT-LSMT §7.1).
type CommitOptions struct {
	// UUID of the new layer; the null UUID is stored when unset (the
	// source's own UUID is never carried over, as upstream).
	UUID UUID
	// Parent replaces the parent UUID read from the source when not nil.
	Parent *UUID
	// Message is the user tag, at most TagSize bytes.
	Message []byte
}

// commitChunk is upstream's copy step: data records are emitted in pieces
// of 64 sectors (32 KiB) from the start of each record.
const commitChunk = 64

// compact writes a committed layer to out strictly sequentially
// (FORMAT-LSMT §7): header, the live data of recs in order, the coalesced
// index padded to 256 records, trailer. recs are sorted and
// non-overlapping; their tags select srcs. Header values come from the
// header of srcs[0] (virtual size) and of srcs[len-1] (parent).
func compact(out io.Writer, srcs []core.File, recs []Mapping, opts CommitOptions) error {
	if len(opts.Message) > TagSize {
		return fmt.Errorf("lsmt: commit message of %d bytes is longer than %d", len(opts.Message), TagSize)
	}
	top, err := readHeader(srcs[0], 0)
	if err != nil {
		return fmt.Errorf("lsmt: commit: source header: %w", err)
	}
	if top.VirtualSize > 1<<62 {
		return fmt.Errorf("lsmt: commit: source header virtual size %d is impossible: %w", top.VirtualSize, core.ErrCorrupt)
	}
	bottom := top
	if len(srcs) > 1 {
		if bottom, err = readHeader(srcs[len(srcs)-1], 0); err != nil {
			return fmt.Errorf("lsmt: commit: bottom source header: %w", err)
		}
	}
	h := Header{
		Flags:       FlagHeader | FlagDataFile | FlagSealed,
		VirtualSize: top.VirtualSize,
		UUID:        opts.UUID,
		ParentUUID:  bottom.ParentUUID,
		Tag:         opts.Message,
	}
	if opts.Parent != nil {
		h.ParentUUID = *opts.Parent
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	hb, err := h.MarshalBinary()
	if err != nil {
		return err
	}
	if _, err := bw.Write(hb); err != nil {
		return fmt.Errorf("lsmt: commit: write header: %w", err)
	}
	cursor := uint64(dataStartSector)
	emitted := make([]Mapping, 0, len(recs))
	const slab = 2048 // sectors read at once (a multiple of commitChunk)
	buf := make([]byte, slab*SectorSize)
	for _, m := range recs {
		if m.Zeroed {
			m.MOffset = cursor
			emitted = append(emitted, m)
			continue
		}
		if int(m.Tag) >= len(srcs) {
			return fmt.Errorf("lsmt: commit: record %v selects source %d of %d", m, m.Tag, len(srcs))
		}
		off, src, left := m.Offset, m.MOffset, uint64(m.Length)
		for left > 0 {
			n := min(left, slab)
			p := buf[:n*SectorSize]
			if k, err := srcs[m.Tag].ReadAt(p, int64(src)*SectorSize); k < len(p) {
				return fmt.Errorf("lsmt: commit: read %d bytes of source %d at %d: got %d: %v: %w", len(p), m.Tag, src*SectorSize, k, err, core.ErrCorrupt)
			}
			for c := uint64(0); c < n; c += commitChunk {
				k := min(commitChunk, n-c)
				emitted = append(emitted, Mapping{Offset: off + c, Length: uint32(k), MOffset: cursor + c, Tag: m.Tag})
			}
			if _, err := bw.Write(p); err != nil {
				return fmt.Errorf("lsmt: commit: write data: %w", err)
			}
			off, src, cursor, left = off+n, src+n, cursor+n, left-n
		}
	}
	index := coalesce(emitted)
	const unit = HeaderSize / RecordSize
	for len(index)%unit != 0 {
		index = append(index, invalidMapping)
	}
	rb := make([]byte, RecordSize)
	for _, m := range index {
		PutMapping(rb, m)
		if _, err := bw.Write(rb); err != nil {
			return fmt.Errorf("lsmt: commit: write index: %w", err)
		}
	}
	t := h
	t.Flags = FlagDataFile | FlagSealed
	t.IndexOffset = cursor * SectorSize
	t.IndexSize = uint64(len(index))
	tb, err := t.MarshalBinary()
	if err != nil {
		return err
	}
	if _, err := bw.Write(tb); err != nil {
		return fmt.Errorf("lsmt: commit: write trailer: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("lsmt: commit: %w", err)
	}
	return nil
}

// coalesce joins neighbours that are contiguous in both logical and file
// space with the same kind and tag while the joined length stays below
// MaxLength (upstream's compress_raw_index).
func coalesce(ms []Mapping) []Mapping {
	if len(ms) == 0 {
		return ms
	}
	out := ms[:1]
	for _, b := range ms[1:] {
		a := &out[len(out)-1]
		if a.End() == b.Offset && a.MEnd() == b.MOffset && a.Zeroed == b.Zeroed && a.Tag == b.Tag && a.Length+b.Length < MaxLength {
			a.Length += b.Length
			continue
		}
		out = append(out, b)
	}
	return out
}

// Commit writes the layer as a committed layer to out, sequentially, byte
// for byte as upstream's overlaybd-commit does. The layer stays open and
// unchanged; writes must not run concurrently with a commit.
func (w *Writable) Commit(out io.Writer, opts CommitOptions) error {
	if w.closed.Load() {
		return core.ErrClosed
	}
	return compact(out, []core.File{w.data}, w.Mappings(), opts)
}

// Commit writes the sealed (or committed) layer as a compacted committed
// layer to out (overlaybd-commit --commit_sealed).
func (r *ReadOnly) Commit(out io.Writer, opts CommitOptions) error {
	return compact(out, []core.File{r.f}, r.recs, opts)
}

// Seal turns the layer into a sealed read-only layer in place
// (FORMAT-LSMT §4.2): the index (rounded up to 512 bytes with zeros) and a
// trailer are appended to the data file. The index file is closed; the
// returned ReadOnly owns the data file.
func (w *Writable) Seal() (*ReadOnly, error) {
	if w.closed.Load() {
		return nil, core.ErrClosed
	}
	w.wmu.Lock()
	recs := w.Mappings()
	indexOff := w.data.Size()
	if !w.sparse {
		indexOff = w.dataEnd
	}
	n := len(recs) * RecordSize
	raw := make([]byte, (n+SectorSize-1)/SectorSize*SectorSize)
	for i, m := range recs {
		m.Tag = w.tag
		PutMapping(raw[i*RecordSize:], m)
	}
	dh, err := readHeader(w.data, 0)
	if err != nil {
		w.wmu.Unlock()
		return nil, fmt.Errorf("lsmt: seal: %w", err)
	}
	t := Header{
		Flags:       FlagDataFile | FlagSealed | dh.Flags&FlagSparse,
		IndexOffset: uint64(indexOff),
		IndexSize:   uint64(len(recs)),
		VirtualSize: dh.VirtualSize,
		UUID:        dh.UUID,
		ParentUUID:  dh.ParentUUID,
	}
	tb, err := t.MarshalBinary()
	if err == nil {
		_, err = w.data.WriteAt(append(raw, tb...), indexOff)
	}
	if err == nil {
		err = w.data.Sync()
	}
	w.wmu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("lsmt: seal: %w", err)
	}
	w.closed.Store(true)
	if w.index != nil {
		if err := w.index.Close(); err != nil {
			_ = w.data.Close()
			return nil, fmt.Errorf("lsmt: seal: close index: %w", err)
		}
	}
	r, err := OpenReadOnly(w.data)
	if err != nil {
		_ = w.data.Close()
		return nil, fmt.Errorf("lsmt: seal: reopen: %w", err)
	}
	return r, nil
}
