package zfile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/overlaybd-go/overlaybd/core"
)

// Defaults of the reader.
const (
	// DefaultCacheBytes is the default budget of the decoded-block cache.
	DefaultCacheBytes = 8 << 20
	// readWindow bounds the compressed bytes fetched by one ReadAt of the
	// underlying file when a read spans many blocks.
	readWindow = 1 << 20
	// groupShift sets how many blocks share one 64-bit base offset.
	groupShift = 6
	// batchMax bounds the blocks of one batched codec call: 64 blocks of
	// 64 KiB, in and out, fill one data plane lane of the plugin host.
	batchMax = 64
)

// windows holds *[]byte buffers of readWindow bytes for compressed data,
// shared by every reader.
var windows = sync.Pool{New: func() any { b := make([]byte, readWindow); return &b }}

// ReaderOption configures Open.
type ReaderOption func(*readerConfig)

type readerConfig struct {
	cacheBytes int64
	workers    int
	checksum   core.Checksum
	codec      core.Codec // set by tests: used instead of the registry's
}

// WithCacheBytes sets the budget of the decoded-block cache (0 disables it).
func WithCacheBytes(n int64) ReaderOption { return func(c *readerConfig) { c.cacheBytes = n } }

// WithWorkers sets how many goroutines one large read may use to decode
// blocks in parallel (default GOMAXPROCS, at most 4). The goroutines live
// only for the duration of the read.
func WithWorkers(n int) ReaderOption { return func(c *readerConfig) { c.workers = n } }

// WithChecksum sets the checksum implementation (default: core.Checksums'
// "crc32c", or the standard library's when none is registered).
func WithChecksum(cs core.Checksum) ReaderOption { return func(c *readerConfig) { c.checksum = cs } }

// Reader is a read-only core.File of the original bytes of a ZFile. It is
// safe for concurrent use. Close closes the underlying file.
type Reader struct {
	f       core.File
	hdr     Header // the header or trailer whose index fields are used
	first   Header // the header at offset 0
	codec   core.Codec
	algo    string
	cs      core.Checksum
	bs      int64
	size    int64
	nblocks int64
	dataOff int64 // offset of block 0

	base []int64  // offset of block g<<groupShift
	rel  []uint32 // offset of block i minus base[i>>groupShift]

	last   int64           // offset just past the last block
	batch  core.BatchCodec // the codec when it batches (a codec plugin), else nil
	minBat int64           // the fewest blocks a span needs to be batched
	cache  *blockCache
	work   int
	blocks sync.Pool // *[]byte of bs bytes

	refetches atomic.Uint64

	mu     sync.RWMutex // held shared by reads, exclusively by Close
	closed bool
}

// IsZFile reports whether r starts with a ZFile header, following
// upstream's is_zfile: fewer than 512 bytes is an error, a wrong magic or a
// clear header bit is (false, nil), and a header digest that does not match
// is an error wrapping core.ErrChecksum.
func IsZFile(r io.ReaderAt) (bool, error) {
	b := make([]byte, HeaderSize)
	if n, err := r.ReadAt(b, 0); n < HeaderSize {
		if err == nil || err == io.EOF {
			err = core.ErrCorrupt
		}
		return false, fmt.Errorf("zfile: read header: %d of %d bytes: %w", n, HeaderSize, err)
	}
	h, err := ParseHeader(b)
	if err != nil || !h.Has(FlagHeader) {
		return false, nil
	}
	if err := checkDigest(h, b, "header"); err != nil {
		return false, err
	}
	return true, nil
}

// Open reads the header, trailer and jump table of the ZFile f and returns
// a reader of its original bytes. Errors on bad input wrap core.ErrCorrupt
// (core.ErrChecksum for checksum mismatches, core.ErrUnsupported for
// algorithms no codec is registered for). The reader owns f: Close closes
// it; on error f is left open.
func Open(f core.File, opts ...ReaderOption) (*Reader, error) {
	cfg := readerConfig{cacheBytes: DefaultCacheBytes, workers: min(runtime.GOMAXPROCS(0), 4)}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.checksum == nil {
		cfg.checksum = checksum()
	}
	if cfg.workers < 1 {
		cfg.workers = 1
	}
	fsize := f.Size()
	slot := make([]byte, HeaderSize)
	if err := readFull(f, slot, 0); err != nil {
		return nil, fmt.Errorf("zfile: read header: %w", err)
	}
	first, err := ParseHeader(slot)
	if err != nil {
		return nil, err
	}
	if !first.Has(FlagHeader) {
		return nil, fmt.Errorf("zfile: header bit clear at offset 0: %w (%w)", ErrNotZFile, core.ErrCorrupt)
	}
	if err := checkDigest(first, slot, "header"); err != nil {
		return nil, err
	}
	h := first
	if !first.Has(FlagHeaderOverwrite) {
		if !first.Has(FlagData) {
			return nil, fmt.Errorf("zfile: header is not a data file header (flags %#x): %w", first.Flags, core.ErrCorrupt)
		}
		if fsize < 2*HeaderSize {
			return nil, fmt.Errorf("zfile: file of %d bytes has no room for a trailer: %w", fsize, core.ErrCorrupt)
		}
		tslot := make([]byte, HeaderSize)
		if err := readFull(f, tslot, fsize-HeaderSize); err != nil {
			return nil, fmt.Errorf("zfile: read trailer: %w", err)
		}
		t, err := ParseHeader(tslot)
		if err != nil {
			return nil, fmt.Errorf("zfile: trailer at %d: %w", fsize-HeaderSize, err)
		}
		if t.Has(FlagHeader) || !t.Has(FlagData) || !t.Has(FlagSealed) {
			return nil, fmt.Errorf("zfile: trailer flags %#x (want data and sealed, not header): %w", t.Flags, core.ErrCorrupt)
		}
		if err := checkDigest(t, tslot, "trailer"); err != nil {
			return nil, err
		}
		h = t
	}
	r := &Reader{f: f, hdr: *h, first: *first, cs: cfg.checksum, work: cfg.workers, codec: cfg.codec}
	if err := r.load(fsize); err != nil {
		return nil, err
	}
	if cfg.cacheBytes > 0 {
		r.cache = newBlockCache(int(cfg.cacheBytes/r.bs), int(r.bs))
	}
	bs := int(r.bs)
	r.blocks.New = func() any { b := make([]byte, bs); return &b }
	return r, nil
}

// load validates the index fields of r.hdr and reads the jump table.
func (r *Reader) load(fsize int64) error {
	h := &r.hdr
	switch {
	case h.BlockSize == 0 || h.BlockSize > maxReadBlockSize:
		return fmt.Errorf("zfile: block size %d: %w", h.BlockSize, core.ErrCorrupt)
	case h.UseDict != 0:
		return fmt.Errorf("zfile: compression dictionaries are not supported (upstream never writes them): %w", core.ErrUnsupported)
	case h.IndexSize > MaxIndexSize:
		return fmt.Errorf("zfile: jump table of %d entries exceeds %d: %w", h.IndexSize, MaxIndexSize, core.ErrCorrupt)
	case h.OriginalSize > 1<<62:
		return fmt.Errorf("zfile: original size %d: %w", h.OriginalSize, core.ErrCorrupt)
	}
	r.bs = int64(h.BlockSize)
	r.size = int64(h.OriginalSize)
	r.nblocks = int64(h.IndexSize)
	if want := (r.size + r.bs - 1) / r.bs; want != r.nblocks {
		return fmt.Errorf("zfile: %d blocks of %d bytes cannot hold %d bytes: %w", r.nblocks, r.bs, r.size, core.ErrCorrupt)
	}
	limit := fsize
	if !r.first.Has(FlagHeaderOverwrite) {
		limit = fsize - HeaderSize // the trailer
	}
	tableLen := 4 * r.nblocks
	if h.IndexOffset > uint64(limit) || int64(h.IndexOffset) > limit-tableLen {
		return fmt.Errorf("zfile: jump table [%d, +%d) beyond %d: %w", h.IndexOffset, tableLen, limit, core.ErrCorrupt)
	}
	r.dataOff = HeaderSize + int64(h.DictSize)
	name, codec, err := codecFor(h.Algorithm)
	if err != nil {
		return err
	}
	if r.codec != nil {
		codec = r.codec
	}
	r.algo, r.codec = name, codec
	r.batch, _ = codec.(core.BatchCodec)
	r.minBat = 2
	if m, ok := codec.(core.BatchMinimum); ok {
		r.minBat = max(2, int64(m.MinBatch()))
	}
	// The table is read in 1 MiB pieces straight into the offset arrays,
	// so a large file costs about 4 bytes of memory per block.
	r.base = make([]int64, (r.nblocks>>groupShift)+1)
	r.rel = make([]uint32, r.nblocks)
	off := r.dataOff
	maxStored := r.bs + r.bs/2 + 1024 // generous bound over any codec's expansion
	minStored := uint32(1)
	if h.Verify {
		minStored = 5
	}
	var crc uint32
	var entryErr error // reported after the checksum, the more precise cause
	piece := make([]byte, min(tableLen, 1<<20))
	for i := int64(0); i < r.nblocks; {
		n := min(int64(len(piece)), 4*(r.nblocks-i))
		raw := piece[:n]
		if err := readFull(r.f, raw, int64(h.IndexOffset)+4*i); err != nil {
			return fmt.Errorf("zfile: read jump table: %w", err)
		}
		crc = r.cs.Update(crc, raw)
		for k := 0; k < len(raw); k, i = k+4, i+1 {
			e := binary.LittleEndian.Uint32(raw[k:])
			if e < minStored || int64(e) > maxStored {
				if entryErr == nil {
					entryErr = fmt.Errorf("zfile: jump table entry %d: stored block length %d for %d-byte blocks: %w", i, e, r.bs, core.ErrCorrupt)
				}
				continue
			}
			if i&(1<<groupShift-1) == 0 {
				r.base[i>>groupShift] = off
			}
			r.rel[i] = uint32(off - r.base[i>>groupShift])
			off += int64(e)
		}
	}
	if h.Has(FlagDigest) && crc != h.IndexCRC {
		return fmt.Errorf("zfile: jump table checksum %#08x, computed %#08x: %w (%w)", h.IndexCRC, crc, core.ErrChecksum, core.ErrCorrupt)
	}
	if entryErr != nil {
		return entryErr
	}
	if off > int64(h.IndexOffset) {
		return fmt.Errorf("zfile: blocks end at %d, after the jump table at %d: %w", off, h.IndexOffset, core.ErrCorrupt)
	}
	r.last = off
	return nil
}

// blockOffset returns the file offset of block i (0 ≤ i ≤ nblocks).
func (r *Reader) blockOffset(i int64) int64 {
	if i == r.nblocks {
		return r.last
	}
	return r.base[i>>groupShift] + int64(r.rel[i])
}

// blockLen returns the uncompressed length of block i.
func (r *Reader) blockLen(i int64) int64 {
	return min(r.bs, r.size-i*r.bs)
}

// Header returns the header or trailer whose fields describe the file (the
// trailer unless the header was overwritten).
func (r *Reader) Header() Header { return r.hdr }

// FirstHeader returns the header at offset 0 as stored.
func (r *Reader) FirstHeader() Header { return r.first }

// Algorithm returns the registry name of the file's codec.
func (r *Reader) Algorithm() string { return r.algo }

// BlockCount returns the number of blocks.
func (r *Reader) BlockCount() int64 { return r.nblocks }

// StoredBlock returns the file offset and stored length (payload plus CRC)
// of block i.
func (r *Reader) StoredBlock(i int64) (off, length int64) {
	off = r.blockOffset(i)
	return off, r.blockOffset(i+1) - off
}

// Size implements core.File: the size of the original file.
func (r *Reader) Size() int64 { return r.size }

// WriteAt implements core.File; a ZFile is read-only.
func (r *Reader) WriteAt([]byte, int64) (int, error) {
	return 0, fmt.Errorf("zfile: %w", core.ErrReadOnly)
}

// Sync implements core.File.
func (r *Reader) Sync() error { return nil }

// Close waits for reads in flight and closes the underlying file.
func (r *Reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if r.cache != nil {
		r.cache.reset()
	}
	return r.f.Close()
}

// ReadAt implements io.ReaderAt over the original bytes.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return 0, fmt.Errorf("zfile: read: %w", core.ErrClosed)
	}
	if off < 0 {
		return 0, fmt.Errorf("zfile: read at %d: %w", off, core.ErrOutOfRange)
	}
	if off >= r.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := len(p)
	var eof error
	if int64(n) > r.size-off {
		n = int(r.size - off)
		eof = io.EOF
	}
	if n == 0 {
		return 0, nil
	}
	if err := r.read(p[:n], off); err != nil {
		return 0, err
	}
	return n, eof
}

// read fills p (within the file) starting at off.
func (r *Reader) read(p []byte, off int64) error {
	first := off / r.bs
	last := (off + int64(len(p)) - 1) / r.bs
	if last-first < 4 {
		return r.readSpan(p, off, first, last)
	}
	// Cut the span into windows of compressed data and decode them on up
	// to r.work goroutines. With several workers, spans of about a quarter
	// of each worker's share balance the load; one worker takes whole
	// windows (fewer, larger reads of the file below measured faster). Spans
	// are cut as they are claimed, so a read allocates nothing for them.
	// A batching codec decodes each span in one call (up to 64 blocks);
	// one span per worker rather than four measured no different through
	// a codec plugin.
	window := int64(readWindow)
	if r.work > 1 {
		window = (r.blockOffset(last+1) - r.blockOffset(first)) / int64(4*r.work)
		window = min(max(window, 64<<10), readWindow)
	}
	if r.work <= 1 || r.blockOffset(last+1)-r.blockOffset(first) <= window {
		for b := first; b <= last; {
			e := r.spanEnd(b, last, window)
			if err := r.readBlocks(p, off, b, e); err != nil {
				return err
			}
			b = e + 1
		}
		return nil
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		next = first
		errs error
	)
	work := func() {
		for {
			mu.Lock()
			if next > last || errs != nil {
				mu.Unlock()
				return
			}
			b := next
			e := r.spanEnd(b, last, window)
			next = e + 1
			mu.Unlock()
			if err := r.readBlocks(p, off, b, e); err != nil {
				mu.Lock()
				if errs == nil {
					errs = err
				}
				mu.Unlock()
				return
			}
		}
	}
	// The calling goroutine is one of the workers.
	for range min(r.work, int((r.blockOffset(last+1)-r.blockOffset(first))/window)+1) - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
	return errs
}

// readBlocks fills the part of p (the read at off) that lies in blocks b..e.
func (r *Reader) readBlocks(p []byte, off, b, e int64) error {
	lo := max(off, b*r.bs)
	hi := min(off+int64(len(p)), (e+1)*r.bs)
	return r.readSpan(p[lo-off:hi-off], lo, b, e)
}

// spanEnd returns the last block of the span that starts at block b: as
// many blocks up to last as fit in window compressed bytes, at least one.
func (r *Reader) spanEnd(b, last, window int64) int64 {
	e := b
	start := r.blockOffset(b)
	for e < last && r.blockOffset(e+2)-start <= window {
		e++
	}
	return e
}

// readSpan fills p with the original bytes at off, which lie in blocks
// first..last, fetching their compressed bytes with one read when they fit
// in a window. Blocks that p covers completely are decoded straight into p
// without a cache lookup (only partial reads fill the cache, and a lookup
// that misses costs a lock and a map probe per block); the others go
// through the cache.
func (r *Reader) readSpan(p []byte, off, first, last int64) error {
	if r.batch != nil && last-first+1 >= r.minBat {
		return r.readSpanBatched(p, off, first, last)
	}
	start := r.blockOffset(first)
	end := r.blockOffset(last + 1)
	var comp []byte
	var bufp *[]byte
	fetched := false
	fetch := func() error {
		if fetched {
			return nil
		}
		fetched = true
		if end-start <= readWindow {
			bufp = windows.Get().(*[]byte)
			comp = (*bufp)[:end-start]
		} else {
			comp = make([]byte, end-start)
		}
		if err := readFull(r.f, comp, start); err != nil {
			return fmt.Errorf("zfile: read blocks %d-%d at %d: %w", first, last, start, err)
		}
		return nil
	}
	defer func() {
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
		if err := fetch(); err != nil {
			return err
		}
		s := r.blockOffset(i) - start
		stored := comp[s : r.blockOffset(i+1)-start]
		if whole {
			if err := r.decode(dst, stored, i); err != nil {
				if err = r.refetch(dst, i, err); err != nil {
					return err
				}
			}
			continue
		}
		bp := r.blocks.Get().(*[]byte)
		blk := (*bp)[:bLen]
		if err := r.decode(blk, stored, i); err != nil {
			if err = r.refetch(blk, i, err); err != nil {
				r.blocks.Put(bp)
				return err
			}
		}
		copy(dst, blk[lo-bOff:])
		if r.cache != nil {
			r.cache.add(i, blk)
		}
		r.blocks.Put(bp)
	}
	return nil
}

// maxRefetch is how many times a block that fails its check is fetched
// again after its cached copy was invalidated (upstream retries 3 times).
const maxRefetch = 3

// refetch handles a block that failed its CRC or did not decode. When the
// underlying file keeps copies (a cache: core.Invalidator), the block's
// stored bytes are invalidated and fetched again, up to maxRefetch times;
// otherwise the first error stands. dst receives the block on success.
func (r *Reader) refetch(dst []byte, i int64, first error) error {
	inv, ok := r.f.(core.Invalidator)
	if !ok {
		return first
	}
	off, n := r.StoredBlock(i)
	stored := make([]byte, n)
	err := first
	for try := 1; try <= maxRefetch; try++ {
		r.refetches.Add(1)
		if ierr := inv.Invalidate(off, n); errors.Is(ierr, core.ErrUnsupported) {
			return err // nothing keeps copies: fetching again gives the same bytes
		} else if ierr != nil {
			return fmt.Errorf("%w (invalidating the block for a re-fetch failed: %v)", err, ierr)
		}
		if rerr := readFull(r.f, stored, off); rerr != nil {
			return fmt.Errorf("zfile: re-fetch block %d at %d: %w", i, off, rerr)
		}
		if err = r.decode(dst, stored, i); err == nil {
			return nil
		}
	}
	return fmt.Errorf("%w (after %d re-fetches)", err, maxRefetch)
}

// Refetches returns how many times blocks were fetched again after failing
// their check.
func (r *Reader) Refetches() uint64 { return r.refetches.Load() }

// decode verifies the CRC of stored block i and decompresses it into dst,
// which has exactly the block's original length.
func (r *Reader) decode(dst, stored []byte, i int64) error {
	payload := stored
	if r.hdr.Verify {
		payload = stored[:len(stored)-4]
		want := binary.LittleEndian.Uint32(stored[len(stored)-4:])
		if got := r.cs.Update(BlockCRCSeed, payload); got != want {
			return r.crcError(i, want, got)
		}
	}
	// Clip the capacity: dst is often a window of the caller's buffer whose
	// neighbouring blocks other goroutines are decoding.
	n, err := r.codec.Decompress(dst[:len(dst):len(dst)], payload)
	if err != nil || n != len(dst) {
		return r.decodeError(i, n, len(dst), err)
	}
	return nil
}

// payload verifies the CRC of stored block i, when the file has block CRCs,
// and returns the compressed bytes without it (decode does the same
// inline).
func (r *Reader) payload(stored []byte, i int64) ([]byte, error) {
	if !r.hdr.Verify {
		return stored, nil
	}
	payload := stored[:len(stored)-4]
	want := binary.LittleEndian.Uint32(stored[len(stored)-4:])
	if got := r.cs.Update(BlockCRCSeed, payload); got != want {
		return nil, r.crcError(i, want, got)
	}
	return payload, nil
}

// crcError is the error of block i whose stored CRC is want and computed
// CRC got.
func (r *Reader) crcError(i int64, want, got uint32) error {
	return fmt.Errorf("zfile: block %d at %d: stored CRC %#08x, computed %#08x: %w (%w)",
		i, r.blockOffset(i), want, got, core.ErrChecksum, core.ErrCorrupt)
}

// decodeError is the error of block i whose codec returned n bytes of the
// want expected, and err.
func (r *Reader) decodeError(i int64, n, want int, err error) error {
	if err != nil {
		if !errors.Is(err, core.ErrCorrupt) {
			err = fmt.Errorf("%w (%w)", err, core.ErrCorrupt)
		}
		return fmt.Errorf("zfile: block %d at %d: %w", i, r.blockOffset(i), err)
	}
	return fmt.Errorf("zfile: block %d at %d decodes to %d bytes, want %d: %w", i, r.blockOffset(i), n, want, core.ErrCorrupt)
}

// VerifyBlocks checks the stored CRC of every block without decompressing,
// like upstream's zfile_validation_check (overlaybd-zfile --verify). A file
// written without block CRCs is an error wrapping core.ErrUnsupported.
func (r *Reader) VerifyBlocks() error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return fmt.Errorf("zfile: verify: %w", core.ErrClosed)
	}
	if !r.hdr.Verify {
		return fmt.Errorf("zfile: blocks carry no checksum: %w", core.ErrUnsupported)
	}
	bufp := windows.Get().(*[]byte)
	defer windows.Put(bufp)
	for b := int64(0); b < r.nblocks; {
		start := r.blockOffset(b)
		e := b
		for e+1 < r.nblocks && r.blockOffset(e+2)-start <= readWindow {
			e++
		}
		comp := (*bufp)[:r.blockOffset(e+1)-start]
		if int64(len(comp)) > readWindow {
			comp = make([]byte, r.blockOffset(e+1)-start)
		}
		if err := readFull(r.f, comp, start); err != nil {
			return fmt.Errorf("zfile: read blocks %d-%d: %w", b, e, err)
		}
		for i := b; i <= e; i++ {
			stored := comp[r.blockOffset(i)-start : r.blockOffset(i+1)-start]
			payload := stored[:len(stored)-4]
			want := binary.LittleEndian.Uint32(stored[len(stored)-4:])
			if got := r.cs.Update(BlockCRCSeed, payload); got != want {
				return r.crcError(i, want, got)
			}
		}
		b = e + 1
	}
	return nil
}

// readFull reads exactly len(p) bytes at off; a short file is ErrCorrupt.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = fmt.Errorf("truncated: %d of %d bytes at %d: %w", n, len(p), off, core.ErrCorrupt)
	}
	return err
}
