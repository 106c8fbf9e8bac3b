package lsmt

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/overlaybd-go/overlaybd/core"
	"golang.org/x/sys/unix"
)

// ErrUnaligned reports a write or discard whose offset or length is not a
// multiple of SectorSize (upstream fails these with EFAULT).
var ErrUnaligned = errors.New("lsmt: offset or length is not a multiple of 512")

// fdFile is implemented by files backed by a file descriptor
// (engines/psync); sparse layers need it for hole punching and
// SEEK_DATA/SEEK_HOLE.
type fdFile interface{ Fd() uintptr }

// truncater is implemented by files that can change their size.
type truncater interface{ Truncate(size int64) error }

// CreateOptions are the header values of a new writable layer.
type CreateOptions struct {
	// VirtualSize is the size of the virtual device in bytes (a multiple
	// of 512; 0 adopts the lower stack's size when stacked).
	VirtualSize int64
	// UUID identifies the layer; the null UUID means a fresh random one.
	UUID UUID
	// ParentUUID is the UUID of the layer below (null for none).
	ParentUUID UUID
	// Sparse creates a sparse layer (data file only) instead of an
	// append-only one.
	Sparse bool
}

// Writable is a writable layer of either kind:
//
//   - append-only: the data file holds a header and then every write's
//     bytes, appended; the index file holds a header and then one 16-byte
//     record per write piece (≤ 4 MiB) or discard piece (≤ 16383 sectors),
//     appended, exactly as upstream writes them;
//   - sparse: the data file holds a header and then the virtual disk in
//     place (virtual byte X at file byte 4096+X); what is written is found
//     from the file's allocation (SEEK_DATA/SEEK_HOLE) on reopen.
//
// Sparse layers keep their discards across a reopen, which upstream does
// not: a discard punches a hole (as upstream) and is also logged as a
// zeroed record in the layer's index file, which upstream never reads for a
// sparse layer (overlaybd-create -s leaves it empty). On reopen the logged
// zeroed ranges are applied first and the allocated extents on top, so a
// range written after its discard is data again while a discarded range
// still reads as zeros and still hides the layers beneath it. Without an
// index file a sparse layer behaves as upstream's.
//
// A Writable is a core.File, core.Discarder, core.ZeroWriter and
// core.BlockStatuser, safe for concurrent use: writes are serialised,
// reads run in parallel with them.
type Writable struct {
	data, index core.File
	sparse      bool
	blockSize   int64  // sparse: allocation unit of the data file's file system
	header      Header // the layer's header values (index header, or data header when sparse)
	log         *slog.Logger

	wmu      sync.Mutex // serialises writers and the file ends below
	dataEnd  int64      // append-only: size of the data file
	indexEnd int64      // next record position in the index file (0: sparse log not started)
	staleEnd int64      // end of a torn index tail still to be cut (0: none)
	tag      uint8      // the runtime tag written into records (number of lowers when stacked)

	mu    sync.RWMutex // guards idx and vsize
	idx   rwIndex
	vsize int64

	viewOnce sync.Once
	v        view

	closed atomic.Bool
}

// NewUUID returns a random version-4 UUID.
func NewUUID() UUID {
	var u UUID
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// Create writes the headers of a new writable layer into data and index
// (both empty) and returns it open. A sparse layer needs only data (index
// may be nil, or an empty file that will hold the discard log); data must
// then offer Truncate and, for hole punching, Fd. The Writable owns both
// files.
func Create(data, index core.File, opts CreateOptions) (*Writable, error) {
	if opts.VirtualSize < 0 || opts.VirtualSize%SectorSize != 0 {
		return nil, fmt.Errorf("lsmt: virtual size %d is not a non-negative multiple of 512: %w", opts.VirtualSize, ErrUnaligned)
	}
	if data == nil || (!opts.Sparse && index == nil) {
		return nil, fmt.Errorf("lsmt: create: missing data or index file: %w", core.ErrUnsupported)
	}
	if data.Size() != 0 || (index != nil && index.Size() != 0) {
		return nil, fmt.Errorf("lsmt: create: data and index files must be empty")
	}
	if opts.UUID.IsNull() {
		opts.UUID = NewUUID()
	}
	w := &Writable{data: data, sparse: opts.Sparse, vsize: opts.VirtualSize, log: slog.Default()}
	w.header = Header{
		Flags:       FlagHeader | FlagDataFile,
		VirtualSize: uint64(opts.VirtualSize),
		UUID:        opts.UUID,
		ParentUUID:  opts.ParentUUID,
	}
	if opts.Sparse {
		w.header.Flags |= FlagSparse
	}
	if err := writeHeader(data, &w.header, 0); err != nil {
		return nil, fmt.Errorf("lsmt: create: data header: %w", err)
	}
	w.dataEnd = HeaderSize
	if opts.Sparse {
		t, ok := data.(truncater)
		if !ok {
			return nil, fmt.Errorf("lsmt: create sparse layer: data file cannot be truncated: %w", core.ErrUnsupported)
		}
		if err := t.Truncate(opts.VirtualSize + HeaderSize); err != nil {
			return nil, fmt.Errorf("lsmt: create sparse layer: %w", err)
		}
		w.index = index
		w.blockSize = allocUnit(data)
		return w, nil
	}
	ih := w.header
	ih.Flags = FlagHeader
	ih.IndexOffset = HeaderSize
	if err := writeHeader(index, &ih, 0); err != nil {
		return nil, fmt.Errorf("lsmt: create: index header: %w", err)
	}
	w.index = index
	w.indexEnd = HeaderSize
	return w, nil
}

func writeHeader(f core.File, h *Header, off int64) error {
	b, err := h.MarshalBinary()
	if err != nil {
		return err
	}
	_, err = f.WriteAt(b, off)
	return err
}

func readHeader(f core.File, off int64) (*Header, error) {
	b := make([]byte, HeaderSize)
	if n, err := f.ReadAt(b, off); n < HeaderStructSize {
		if err == nil {
			err = fmt.Errorf("short read")
		}
		return nil, fmt.Errorf("read %d-byte header at %d (file of %d bytes): %w: %w", HeaderSize, off, f.Size(), err, core.ErrCorrupt)
	}
	return ParseHeader(b)
}

// OpenWritable opens an existing writable layer. For an append-only layer
// both files are needed; the index is replayed in file order. For a sparse
// layer index may be nil. A torn tail of an append-only index (records
// whose data never reached the data file, as after a crash) is dropped with
// a warning and cut off the index file; anything else that does not
// validate is an error wrapping core.ErrCorrupt. The Writable owns both
// files.
func OpenWritable(data, index core.File) (*Writable, error) {
	dh, err := readHeader(data, 0)
	if err != nil {
		return nil, fmt.Errorf("lsmt: data file header: %w", err)
	}
	if !dh.IsHeader() {
		return nil, fmt.Errorf("lsmt: data file header has the header bit clear: %w", core.ErrCorrupt)
	}
	w := &Writable{data: data, index: index, sparse: dh.IsSparse(), log: slog.Default()}
	if w.sparse {
		if err := w.loadSparse(dh); err != nil {
			return nil, err
		}
		return w, nil
	}
	if err := w.loadAppend(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Writable) loadAppend() error {
	if w.index == nil {
		return fmt.Errorf("lsmt: append-only layer needs its index file: %w", core.ErrUnsupported)
	}
	ih, err := readHeader(w.index, 0)
	if err != nil {
		return fmt.Errorf("lsmt: index file header: %w", err)
	}
	if !ih.IsHeader() || ih.IsDataFile() || ih.IsSealed() || ih.IndexOffset != HeaderSize {
		return fmt.Errorf("lsmt: index file header (flags %#x, index offset %d) is not that of a writable index: %w", uint32(ih.Flags), ih.IndexOffset, core.ErrCorrupt)
	}
	if ih.VirtualSize > 1<<62 || ih.VirtualSize%SectorSize != 0 {
		return fmt.Errorf("lsmt: virtual size %d is impossible: %w", ih.VirtualSize, core.ErrCorrupt)
	}
	w.header = *ih
	w.vsize = int64(ih.VirtualSize)
	w.dataEnd = w.data.Size()
	isize := w.index.Size()
	if isize < HeaderSize {
		return fmt.Errorf("lsmt: index file of %d bytes is shorter than its header: %w", isize, core.ErrCorrupt)
	}
	count := (isize - HeaderSize) / RecordSize
	if count > MaxIndexSize {
		return fmt.Errorf("lsmt: writable index of %d records exceeds %d: %w", count, MaxIndexSize, core.ErrCorrupt)
	}
	raw := make([]byte, count*RecordSize)
	if len(raw) > 0 {
		if _, err := w.index.ReadAt(raw, HeaderSize); err != nil {
			return fmt.Errorf("lsmt: read writable index: %w", err)
		}
	}
	end := uint64(w.dataEnd) / SectorSize
	recs := make([]Mapping, 0, count)
	pos := make([]int64, 0, count)
	for i := int64(0); i < count; i++ {
		m := DecodeMapping(raw[i*RecordSize:])
		if m.IsInvalid() {
			continue
		}
		m.Tag = 0
		recs = append(recs, m)
		pos = append(pos, i)
	}
	valid := count
	for i, m := range recs {
		if err := checkOneRange(m, dataStartSector, end); err != nil {
			if !tornTail(recs[i:]) {
				return fmt.Errorf("lsmt: writable index record %d %v: %w", pos[i], m, err)
			}
			w.log.Warn("lsmt: dropping index records whose data is missing (torn tail after a crash)",
				"records", len(recs)-i, "first", m.String(), "data_sectors", end)
			recs, valid = recs[:i], pos[i]
			break
		}
	}
	for _, m := range recs {
		w.idx.Insert(m)
	}
	w.indexEnd = HeaderSize + valid*RecordSize
	if w.indexEnd != isize {
		w.staleEnd = isize // cut before the first append; a read-only open changes nothing
	}
	return nil
}

// cutStale removes what follows the last valid record of the index file
// before the first append (w.wmu held): truncated away, or overwritten with
// padding records when the file cannot be truncated.
func (w *Writable) cutStale() error {
	if w.staleEnd == 0 {
		return nil
	}
	if t, ok := w.index.(truncater); ok {
		if err := t.Truncate(w.indexEnd); err != nil {
			return fmt.Errorf("lsmt: cut torn index tail: %w", err)
		}
	} else if n := (w.staleEnd - w.indexEnd) / RecordSize; n > 0 {
		pad := make([]byte, n*RecordSize)
		for i := int64(0); i < n; i++ {
			PutMapping(pad[i*RecordSize:], invalidMapping)
		}
		if _, err := w.index.WriteAt(pad, w.indexEnd); err != nil {
			return fmt.Errorf("lsmt: pad torn index tail: %w", err)
		}
		w.indexEnd += n * RecordSize
	}
	w.staleEnd = 0
	return nil
}

// tornTail reports whether recs (starting with a record that points past
// the data) were all appended after their first: the data file only grows,
// so a log whose data was lost has moffsets that never go back.
func tornTail(recs []Mapping) bool {
	for _, m := range recs[1:] {
		if m.MOffset < recs[0].MOffset {
			return false
		}
	}
	return true
}

func (w *Writable) loadSparse(dh *Header) error {
	if dh.VirtualSize > 1<<62 || dh.VirtualSize%SectorSize != 0 {
		return fmt.Errorf("lsmt: virtual size %d is impossible: %w", dh.VirtualSize, core.ErrCorrupt)
	}
	w.header = *dh
	w.vsize = int64(dh.VirtualSize)
	w.blockSize = allocUnit(w.data)
	size := w.data.Size()
	// The discard log (zeroed records) goes under the allocated extents.
	if w.index != nil {
		if n := w.index.Size(); n > 0 && n < HeaderSize {
			// The first discard's header write never completed (a crash):
			// no discard was logged yet; the header is rewritten.
			w.log.Warn("lsmt: sparse layer discard log shorter than its header, starting it again", "bytes", n)
		}
	}
	if w.index != nil && w.index.Size() >= HeaderSize {
		lh, err := readHeader(w.index, 0)
		if err != nil {
			return fmt.Errorf("lsmt: sparse layer discard log header: %w", err)
		}
		if !lh.IsHeader() || lh.IsDataFile() || !lh.IsSparse() || lh.IndexOffset != HeaderSize {
			return fmt.Errorf("lsmt: index file (flags %#x) is not the discard log of a sparse layer: %w", uint32(lh.Flags), core.ErrCorrupt)
		}
		count := (w.index.Size() - HeaderSize) / RecordSize
		if count > MaxIndexSize {
			return fmt.Errorf("lsmt: discard log of %d records exceeds %d: %w", count, MaxIndexSize, core.ErrCorrupt)
		}
		raw := make([]byte, count*RecordSize)
		if len(raw) > 0 {
			if _, err := w.index.ReadAt(raw, HeaderSize); err != nil {
				return fmt.Errorf("lsmt: read discard log: %w", err)
			}
		}
		for _, m := range DecodeIndex(raw, true) {
			if !m.Zeroed {
				return fmt.Errorf("lsmt: discard log holds a data record %v: %w", m, core.ErrCorrupt)
			}
			m.MOffset = m.Offset + dataStartSector
			w.idx.Insert(m)
		}
		w.indexEnd = HeaderSize + count*RecordSize
	}
	exts, err := dataExtents(w.data, HeaderSize, size)
	if err != nil {
		return fmt.Errorf("lsmt: sparse layer allocation map: %w", err)
	}
	for _, e := range exts {
		b, n := uint64(e[0]), uint64(e[1]-e[0])/SectorSize
		off := (b - HeaderSize) / SectorSize
		mo := b / SectorSize
		for n > 0 {
			l := min(n, MaxLength)
			w.idx.Insert(Mapping{Offset: off, Length: uint32(l), MOffset: mo})
			off, mo, n = off+l, mo+l, n-l
		}
	}
	return nil
}

// allocUnit returns the allocation unit of f's file system (st_blksize),
// 4096 when unknown or unusual.
func allocUnit(f core.File) int64 {
	if fdf, ok := f.(fdFile); ok {
		var st unix.Stat_t
		if unix.Fstat(int(fdf.Fd()), &st) == nil && st.Blksize >= SectorSize && st.Blksize <= 1<<20 &&
			st.Blksize&(st.Blksize-1) == 0 {
			return int64(st.Blksize)
		}
	}
	return 4096
}

// dataExtents lists the allocated byte ranges of f in [from, size) with
// SEEK_DATA/SEEK_HOLE; a file without a descriptor counts as allocated
// everywhere.
func dataExtents(f core.File, from, size int64) ([][2]int64, error) {
	fdf, ok := f.(fdFile)
	if !ok {
		if size > from {
			return [][2]int64{{from, size}}, nil
		}
		return nil, nil
	}
	fd := int(fdf.Fd())
	var out [][2]int64
	pos := from
	for pos < size {
		b, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if err != nil {
			if errors.Is(err, unix.ENXIO) {
				break
			}
			return nil, fmt.Errorf("SEEK_DATA at %d: %w", pos, err)
		}
		e, err := unix.Seek(fd, b, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("SEEK_HOLE at %d: %w", b, err)
		}
		e = min(e, size)
		if e > b {
			out = append(out, [2]int64{b, e})
		}
		pos = e
	}
	return out, nil
}

// Header returns the layer's header values (of the index file for an
// append-only layer, of the data file for a sparse one).
func (w *Writable) Header() Header {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.header
}

// Sparse reports whether the layer is a sparse one.
func (w *Writable) Sparse() bool { return w.sparse }

// Mappings returns a copy of the layer's index in order (tags 0).
func (w *Writable) Mappings() []Mapping {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.idx.All()
}

func (w *Writable) lookup(dst []Mapping, b, e uint64) []Mapping {
	w.mu.RLock()
	dst = w.idx.Lookup(dst, b, e)
	w.mu.RUnlock()
	return dst
}

// view returns the read path of the layer alone.
func (w *Writable) view() *view {
	w.viewOnce.Do(func() { w.v = view{upper: w, files: []core.File{w.data}} })
	return &w.v
}

// Size returns the virtual size.
func (w *Writable) Size() int64 {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.vsize
}

// ReadAt reads the layer alone (unwritten ranges read as zeros).
func (w *Writable) ReadAt(p []byte, off int64) (int, error) {
	if w.closed.Load() {
		return 0, core.ErrClosed
	}
	return w.view().readAt(p, off, w.Size())
}

// BlockStatus implements core.BlockStatuser for the layer alone.
func (w *Writable) BlockStatus(off, length int64) ([]core.Extent, error) {
	if w.closed.Load() {
		return nil, core.ErrClosed
	}
	return w.view().blockStatus(off, length, w.Size())
}

func (w *Writable) checkRange(op string, off, n int64) error {
	if w.closed.Load() {
		return core.ErrClosed
	}
	if off%SectorSize != 0 || n%SectorSize != 0 {
		return fmt.Errorf("lsmt: %s [%d, +%d): %w", op, off, n, ErrUnaligned)
	}
	if off < 0 || off+n > w.Size() || off+n < off {
		return fmt.Errorf("lsmt: %s [%d, +%d) beyond the %d-byte device: %w", op, off, n, w.Size(), core.ErrOutOfRange)
	}
	return nil
}

// WriteAt writes p at off; both must be multiples of 512. An append-only
// layer appends the bytes to the data file and one record per 4 MiB piece
// to the index file.
func (w *Writable) WriteAt(p []byte, off int64) (int, error) {
	if err := w.checkRange("write", off, int64(len(p))); err != nil {
		return 0, err
	}
	done := 0
	for done < len(p) {
		n := min(len(p)-done, MaxIOSize)
		if err := w.writePiece(p[done:done+n], off+int64(done)); err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

func (w *Writable) writePiece(p []byte, off int64) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if w.sparse {
		moff := HeaderSize + off
		if _, err := w.data.WriteAt(p, moff); err != nil {
			return fmt.Errorf("lsmt: write data at %d: %w", moff, err)
		}
		w.insert(Mapping{Offset: uint64(off) / SectorSize, Length: uint32(len(p) / SectorSize), MOffset: uint64(moff) / SectorSize})
		return nil
	}
	pos := w.dataEnd
	if _, err := w.data.WriteAt(p, pos); err != nil {
		return fmt.Errorf("lsmt: append data at %d: %w", pos, err)
	}
	w.dataEnd += int64(len(p))
	m := Mapping{Offset: uint64(off) / SectorSize, Length: uint32(len(p) / SectorSize), MOffset: uint64(pos) / SectorSize}
	if err := w.appendRecord(m); err != nil {
		return err
	}
	w.insert(m)
	return nil
}

func (w *Writable) insert(m Mapping) {
	m.Tag = 0
	w.mu.Lock()
	w.idx.Insert(m)
	w.mu.Unlock()
}

// appendRecord appends m with the layer's runtime tag to the index file
// (w.wmu held).
func (w *Writable) appendRecord(m Mapping) error {
	if err := w.cutStale(); err != nil {
		return err
	}
	var b [RecordSize]byte
	m.Tag = w.tag
	PutMapping(b[:], m)
	if _, err := w.index.WriteAt(b[:], w.indexEnd); err != nil {
		return fmt.Errorf("lsmt: append index record at %d: %w", w.indexEnd, err)
	}
	w.indexEnd += RecordSize
	return nil
}

// Discard deallocates [off, off+length): the range reads as zeros and
// hides the layers beneath. An append-only layer appends one zeroed record
// per 16383 sectors; a sparse layer punches a hole and logs the range.
func (w *Writable) Discard(off, length int64) error {
	if err := w.checkRange("discard", off, length); err != nil {
		return err
	}
	const maxBytes = MaxLength * SectorSize
	for length > 0 {
		n := min(length, maxBytes)
		if w.sparse && n < length {
			// Pieces of a sparse layer end on the file system's allocation
			// unit: a piece ending inside a block would leave that block
			// allocated (zeroed, not punched), and after a reopen it would
			// count as data again.
			if e := (off + n) / w.blockSize * w.blockSize; e > off {
				n = e - off
			}
		}
		if err := w.discardPiece(off, n); err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	return nil
}

// WriteZeroes makes [off, off+length) read as zeros, hiding the layers
// beneath; it is recorded as a discard (a zeroed record), except in a
// sparse layer without a discard log, where zeros are written so that the
// range stays zero after a reopen.
func (w *Writable) WriteZeroes(off, length int64) error {
	if w.sparse && w.index == nil {
		if err := w.checkRange("write zeroes", off, length); err != nil {
			return err
		}
		buf := make([]byte, min(length, MaxIOSize))
		for length > 0 {
			n := min(length, int64(len(buf)))
			if _, err := w.WriteAt(buf[:n], off); err != nil {
				return err
			}
			off, length = off+n, length-n
		}
		return nil
	}
	return w.Discard(off, length)
}

func (w *Writable) discardPiece(off, n int64) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	m := Mapping{Offset: uint64(off) / SectorSize, Length: uint32(n / SectorSize), Zeroed: true}
	if !w.sparse {
		m.MOffset = uint64(w.dataEnd) / SectorSize
		if err := w.appendRecord(m); err != nil {
			return err
		}
		w.insert(m)
		return nil
	}
	m.MOffset = m.Offset + dataStartSector
	if w.index != nil {
		if w.indexEnd == 0 {
			lh := w.header
			lh.Flags = FlagHeader | FlagSparse
			lh.IndexOffset = HeaderSize
			if err := writeHeader(w.index, &lh, 0); err != nil {
				return fmt.Errorf("lsmt: start discard log: %w", err)
			}
			w.indexEnd = HeaderSize
		}
		if err := w.appendRecord(m); err != nil {
			return err
		}
	}
	if err := w.punch(HeaderSize+off, n); err != nil {
		return err
	}
	w.insert(m)
	return nil
}

// punch deallocates a byte range of the sparse data file, or writes zeros
// there when the file has no descriptor.
func (w *Writable) punch(off, n int64) error {
	if f, ok := w.data.(fdFile); ok {
		err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("lsmt: punch hole [%d, +%d): %w", off, n, err)
		}
	}
	zero := make([]byte, min(n, MaxIOSize))
	for n > 0 {
		k := min(n, int64(len(zero)))
		if _, err := w.data.WriteAt(zero[:k], off); err != nil {
			return fmt.Errorf("lsmt: zero [%d, +%d): %w", off, k, err)
		}
		off, n = off+k, n-k
	}
	return nil
}

// Sync makes every completed write, discard and record durable.
func (w *Writable) Sync() error {
	if w.closed.Load() {
		return core.ErrClosed
	}
	if err := w.data.Sync(); err != nil {
		return fmt.Errorf("lsmt: sync data: %w", err)
	}
	if w.index != nil {
		w.wmu.Lock()
		started := w.indexEnd > 0
		w.wmu.Unlock()
		if started {
			if err := w.index.Sync(); err != nil {
				return fmt.Errorf("lsmt: sync index: %w", err)
			}
		}
	}
	return nil
}

// Close closes the layer's files. It does not sync.
func (w *Writable) Close() error {
	if w.closed.Swap(true) {
		return nil
	}
	w.wmu.Lock()
	defer w.wmu.Unlock()
	err := w.data.Close()
	if w.index != nil {
		if e := w.index.Close(); err == nil {
			err = e
		}
	}
	return err
}

// SetVirtualSize changes the virtual size and rewrites it in the headers
// (upstream's update_vsize); a sparse data file is truncated to the new
// size plus its header.
func (w *Writable) SetVirtualSize(vsize int64) error {
	if vsize < 0 || vsize%SectorSize != 0 {
		return fmt.Errorf("lsmt: virtual size %d: %w", vsize, ErrUnaligned)
	}
	w.wmu.Lock()
	defer w.wmu.Unlock()
	files := []core.File{w.data}
	if w.index != nil && w.indexEnd > 0 {
		files = append(files, w.index)
	}
	for _, f := range files {
		h, err := readHeader(f, 0)
		if err != nil {
			return fmt.Errorf("lsmt: update virtual size: %w", err)
		}
		h.VirtualSize = uint64(vsize)
		if err := writeHeader(f, h, 0); err != nil {
			return fmt.Errorf("lsmt: update virtual size: %w", err)
		}
	}
	if w.sparse {
		t, ok := w.data.(truncater)
		if !ok {
			return fmt.Errorf("lsmt: resize sparse layer: %w", core.ErrUnsupported)
		}
		if err := t.Truncate(vsize + HeaderSize); err != nil {
			return fmt.Errorf("lsmt: resize sparse layer: %w", err)
		}
	}
	w.mu.Lock()
	w.vsize = vsize
	w.header.VirtualSize = uint64(vsize)
	w.mu.Unlock()
	return nil
}
