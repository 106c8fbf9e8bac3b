package lsmt

import (
	"fmt"

	"github.com/overlaybd-go/overlaybd/core"
)

// ReadOnly is a committed or sealed layer opened for reading. It is a
// core.File of the layer's virtual size (writes fail with core.ErrReadOnly)
// and a core.BlockStatuser. It is safe for concurrent use.
type ReadOnly struct {
	f       core.File
	header  *Header
	trailer *Header
	recs    []Mapping
	v       view
	vsize   int64
}

// OpenReadOnly validates f as a committed or sealed layer (FORMAT-LSMT
// §6.2) and loads its index. Malformed files give errors wrapping
// core.ErrCorrupt. The ReadOnly owns f: Close closes it.
func OpenReadOnly(f core.File) (*ReadOnly, error) {
	h, t, recs, err := loadReadOnly(f)
	if err != nil {
		return nil, err
	}
	if t.VirtualSize > 1<<62 {
		return nil, fmt.Errorf("lsmt: virtual size %d is impossible: %w", t.VirtualSize, core.ErrCorrupt)
	}
	r := &ReadOnly{f: f, header: h, trailer: t, recs: recs, vsize: int64(t.VirtualSize)}
	r.v = view{lower: newFlatIndex(recs), files: []core.File{f}}
	return r, nil
}

// loadReadOnly performs the checks of FORMAT-LSMT §6.2 in upstream's
// order and returns the header, the trailer and the valid records (tags
// cleared).
func loadReadOnly(f core.File) (*Header, *Header, []Mapping, error) {
	size := f.Size()
	if size < 2*HeaderSize {
		return nil, nil, nil, fmt.Errorf("lsmt: file of %d bytes is too short for a header and a trailer (truncated?): %w", size, core.ErrCorrupt)
	}
	buf := make([]byte, HeaderSize)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return nil, nil, nil, fmt.Errorf("lsmt: read header: %w", err)
	}
	h, err := ParseHeader(buf)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("lsmt: header: %w", err)
	}
	if !h.IsHeader() {
		return nil, nil, nil, fmt.Errorf("lsmt: header block has the header bit clear: %w", core.ErrCorrupt)
	}
	if !h.IsDataFile() {
		return nil, nil, nil, fmt.Errorf("lsmt: header says index file, want a data file: %w", core.ErrCorrupt)
	}
	trailerOff := size - HeaderSize
	if _, err := f.ReadAt(buf, trailerOff); err != nil {
		return nil, nil, nil, fmt.Errorf("lsmt: read trailer: %w", err)
	}
	t, err := ParseHeader(buf)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("lsmt: trailer (file truncated or not a committed layer): %w", err)
	}
	if t.IsHeader() || !t.IsDataFile() || !t.IsSealed() {
		return nil, nil, nil, fmt.Errorf("lsmt: trailer flags %#x are not those of a sealed data file: %w", uint32(t.Flags), core.ErrCorrupt)
	}
	if t.IndexSize > MaxROIndexSize {
		return nil, nil, nil, fmt.Errorf("lsmt: index of %d records exceeds %d: %w", t.IndexSize, MaxROIndexSize, core.ErrCorrupt)
	}
	if t.IndexOffset > uint64(trailerOff) || t.IndexSize*RecordSize > uint64(trailerOff)-t.IndexOffset {
		return nil, nil, nil, fmt.Errorf("lsmt: index [%d, +%d records) lies outside the file (trailer at %d): %w", t.IndexOffset, t.IndexSize, trailerOff, core.ErrCorrupt)
	}
	raw := make([]byte, t.IndexSize*RecordSize)
	if len(raw) > 0 {
		if _, err := f.ReadAt(raw, int64(t.IndexOffset)); err != nil {
			return nil, nil, nil, fmt.Errorf("lsmt: read index: %w", err)
		}
	}
	recs := DecodeIndex(raw, true)
	if err := checkOrder(recs); err != nil {
		return nil, nil, nil, err
	}
	if err := checkRange(recs, dataStartSector, t.IndexOffset/SectorSize); err != nil {
		return nil, nil, nil, err
	}
	return h, t, recs, nil
}

// Header returns the layer's header (offset 0).
func (r *ReadOnly) Header() *Header { return r.header }

// Trailer returns the layer's trailer (the last 4096 bytes); its virtual
// size and UUID are the layer's.
func (r *ReadOnly) Trailer() *Header { return r.trailer }

// Mappings returns the layer's valid index records in order (tags 0). The
// slice is shared; do not modify it.
func (r *ReadOnly) Mappings() []Mapping { return r.recs }

// File returns the underlying file.
func (r *ReadOnly) File() core.File { return r.f }

// ReadAt reads the virtual device.
func (r *ReadOnly) ReadAt(p []byte, off int64) (int, error) { return r.v.readAt(p, off, r.vsize) }

// WriteAt fails: the layer is read-only.
func (r *ReadOnly) WriteAt(p []byte, off int64) (int, error) {
	return 0, fmt.Errorf("lsmt: write to a committed layer: %w", core.ErrReadOnly)
}

// Size returns the virtual size.
func (r *ReadOnly) Size() int64 { return r.vsize }

// Sync does nothing: nothing is ever written.
func (r *ReadOnly) Sync() error { return nil }

// Close closes the underlying file.
func (r *ReadOnly) Close() error { return r.f.Close() }

// BlockStatus implements core.BlockStatuser: unmapped and zeroed ranges are
// holes reading as zeros, mapped data is allocated.
func (r *ReadOnly) BlockStatus(off, length int64) ([]core.Extent, error) {
	return r.v.blockStatus(off, length, r.vsize)
}
