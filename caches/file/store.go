package file

import (
	"container/list"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/overlaybd-go/overlaybd/caches/internal/cachefile"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/audit"
)

// The checksum companion file: a 32-byte header ("OBDFCRC1", u64 blob size,
// u32 page size, zero padding) and one little-endian u64 per page:
// present<<32 | CRC32C(page). Entries are written after the page data.
const (
	crcSuffix = ".crc"
	crcMagic  = "OBDFCRC1"
	crcHeader = 32
	present   = uint64(1) << 32
)

var errMiss = errors.New("miss")

// store is the cache of one blob, shared by every File of that blob.
type store struct {
	c    *Cache
	name string

	// Guarded by c.mu.
	elem     *list.Element
	refs     int
	evicting bool

	used   atomic.Int64 // bytes on disk (data + checksums)
	acctMu sync.Mutex   // orders the measurements of used

	// mu guards the files and the page table: readers and fillers hold
	// it shared, open/clear/close hold it exclusively.
	mu    sync.RWMutex
	data  *cachefile.File
	meta  *cachefile.File
	size  int64
	pages []atomic.Uint64

	fillMu sync.Mutex
	fills  map[int64]chan struct{}
}

func (s *store) path() string { return filepath.Join(s.c.dir, s.name) }

// open opens the store's files if they are not open. Cached pages are
// trusted only with a valid checksum file for a blob of the same size.
func (s *store) open(size int64) (delta int64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.data != nil {
		if s.size != size {
			return 0, fmt.Errorf("file cache %s: opened with size %d, cached with size %d", s.name, size, s.size)
		}
		return 0, nil
	}
	data, err := cachefile.Open(s.c.eng, s.path())
	if err != nil {
		return 0, fmt.Errorf("file cache: %w", err)
	}
	meta, err := cachefile.Open(s.c.eng, s.path()+crcSuffix)
	if err != nil {
		data.Close()
		return 0, fmt.Errorf("file cache: %w", err)
	}
	np := (size + PageSize - 1) / PageSize
	s.data, s.meta, s.size = data, meta, size
	s.pages = make([]atomic.Uint64, np)
	s.fills = map[int64]chan struct{}{}
	hdr := make([]byte, crcHeader)
	valid := false
	if _, err := meta.ReadAt(hdr, 0); err == nil && string(hdr[:8]) == crcMagic &&
		int64(binary.LittleEndian.Uint64(hdr[8:])) == size && binary.LittleEndian.Uint32(hdr[16:]) == PageSize {
		tab := make([]byte, 8*np)
		if n, err := meta.ReadAt(tab, crcHeader); err == nil || (errors.Is(err, io.EOF) && n >= 0) {
			for i := range np {
				if int64(len(tab)) >= 8*(i+1) {
					s.pages[i].Store(binary.LittleEndian.Uint64(tab[8*i:]))
				}
			}
			valid = true
		}
	}
	if dsize, _, err := data.Stat(); err != nil || dsize != size {
		valid = false
	}
	if !valid {
		if err := s.resetLocked(); err != nil {
			s.closeLocked()
			return 0, err
		}
	}
	return s.measure(), nil
}

// resetLocked empties the files: the data file becomes one hole of the
// blob's size, the checksum file a header and an empty table.
func (s *store) resetLocked() error {
	for i := range s.pages {
		s.pages[i].Store(0)
	}
	hdr := make([]byte, crcHeader)
	copy(hdr, crcMagic)
	binary.LittleEndian.PutUint64(hdr[8:], uint64(s.size))
	binary.LittleEndian.PutUint32(hdr[16:], PageSize)
	err := errors.Join(s.data.Reset(s.size), s.meta.Reset(crcHeader+8*int64(len(s.pages))))
	if err == nil {
		_, err = s.meta.WriteAt(hdr, 0)
	}
	if err != nil {
		return fmt.Errorf("file cache %s: reset: %w", s.name, err)
	}
	return nil
}

// clearLocked drops every cached page of an open store.
func (s *store) clearLocked() {
	if err := s.resetLocked(); err != nil {
		s.c.log.Warn("file cache: clearing a blob failed", "blob", s.name, "err", err)
	}
}

func (s *store) closeLocked() {
	if s.data != nil {
		s.data.Close()
		s.meta.Close()
	}
	s.data, s.meta, s.pages = nil, nil, nil
}

// measure records the bytes the store occupies and returns the change.
func (s *store) measure() int64 {
	s.acctMu.Lock()
	defer s.acctMu.Unlock()
	var total int64
	for _, f := range []*cachefile.File{s.data, s.meta} {
		if f == nil {
			continue
		}
		if _, alloc, err := f.Stat(); err == nil {
			total += alloc
		}
	}
	return total - s.used.Swap(total)
}

// readAt serves a read: from the cache when every page is present and
// checks out, else by filling the missing span from src.
func (s *store) readAt(ctx context.Context, src core.Source, p []byte, off int64) (int, error) {
	size := src.Size()
	if off < 0 {
		return 0, fmt.Errorf("file cache %s: read at %d: %w", s.name, off, core.ErrOutOfRange)
	}
	if off >= size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := min(int64(len(p)), size-off)
	q := p[:n]
	var eof error
	if n < int64(len(p)) {
		eof = io.EOF
	}
	missed := false
	for attempt := 0; attempt < 4; attempt++ {
		if s.readCached(q, off) == nil {
			if !missed {
				s.c.hits.Add(1)
			}
			s.c.served.Add(uint64(n))
			s.c.touch(s)
			return int(n), eof
		}
		if !missed {
			s.c.misses.Add(1)
			missed = true
		}
		done, err := s.fill(ctx, src, q, off)
		if err != nil {
			return 0, err
		}
		if done {
			s.c.served.Add(uint64(n))
			s.c.touch(s)
			return int(n), eof
		}
	}
	// The range keeps being evicted under us: read it straight through.
	if _, err := src.ReadAtContext(ctx, q, off); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	s.c.fetched.Add(uint64(n))
	s.c.served.Add(uint64(n))
	return int(n), eof
}

// readCached reads q at off from the cache file if every page is present
// and matches its checksum. Pages that fail are dropped.
func (s *store) readCached(q []byte, off int64) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.data == nil {
		return errMiss
	}
	end := off + int64(len(q))
	p0, p1 := off/PageSize, (end-1)/PageSize
	for i := p0; i <= p1; i++ {
		if s.pages[i].Load()&present == 0 {
			return errMiss
		}
	}
	a0, a1 := p0*PageSize, min((p1+1)*PageSize, s.size)
	buf := q
	if a0 != off || a1 != end {
		buf = make([]byte, a1-a0)
	}
	start := s.c.audit.Start()
	if _, err := s.data.ReadAt(buf, a0); err != nil {
		return errMiss
	}
	if !start.IsZero() {
		s.c.audit.IO(audit.EventFileRead, s.path(), a0, int64(len(buf)), start)
	}
	var bad []int64
	for i := p0; i <= p1; i++ {
		pg := buf[(i-p0)*PageSize : min((i-p0+1)*PageSize, int64(len(buf)))]
		e := s.pages[i].Load()
		if e&present == 0 || uint32(e) != crc32.Checksum(pg, castagnoli) {
			bad = append(bad, i)
		}
	}
	if len(bad) > 0 {
		s.c.log.Warn("file cache: cached pages failed their checksum; dropping them", "blob", s.name, "pages", len(bad), "first_offset", bad[0]*PageSize)
		for _, i := range bad {
			s.dropPageLocked(i)
		}
		return errMiss
	}
	if &buf[0] != &q[0] {
		copy(q, buf[off-a0:])
	}
	return nil
}

// dropPageLocked forgets page i (its table entry, then its data).
func (s *store) dropPageLocked(i int64) {
	s.pages[i].Store(0)
	var zero [8]byte
	s.meta.WriteAt(zero[:], crcHeader+8*i)
	s.data.Punch(i*PageSize, PageSize)
	s.c.invalidations.Add(1)
}

// invalidate drops the pages overlapping [off, off+length).
func (s *store) invalidate(off, length int64) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.data == nil || length <= 0 || off >= s.size {
		return nil
	}
	for i := max(off, 0) / PageSize; i <= (min(off+length, s.size)-1)/PageSize; i++ {
		s.dropPageLocked(i)
	}
	return nil
}

// missing returns the first and last missing page overlapping
// [off, end), or ok=false if none is missing.
func (s *store) missing(off, end int64) (first, last int64, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.data == nil {
		return off / PageSize, (end - 1) / PageSize, true
	}
	first, last = -1, -1
	for i := off / PageSize; i <= (end-1)/PageSize; i++ {
		if s.pages[i].Load()&present == 0 {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	return first, last, first >= 0
}

// lockBlocks takes the refill blocks [b0, b1) in ascending order and
// reports whether it had to wait for another filler.
func (s *store) lockBlocks(b0, b1 int64) (waited bool, unlock func()) {
	var mine []int64
	for b := b0; b < b1; b++ {
		for {
			s.fillMu.Lock()
			ch, busy := s.fills[b]
			if !busy {
				s.fills[b] = make(chan struct{})
				s.fillMu.Unlock()
				mine = append(mine, b)
				break
			}
			s.fillMu.Unlock()
			<-ch
			waited = true
		}
	}
	return waited, func() {
		s.fillMu.Lock()
		for _, b := range mine {
			close(s.fills[b])
			delete(s.fills, b)
		}
		s.fillMu.Unlock()
	}
}

// fill fetches the refill-aligned span around the missing pages of the
// read, copies the read's bytes from it, writes it to the cache, and
// completes the read from the cache. done is false when another filler got
// there first (the caller reads the cache again).
func (s *store) fill(ctx context.Context, src core.Source, q []byte, off int64) (done bool, err error) {
	end := off + int64(len(q))
	first, last, ok := s.missing(off, end)
	if !ok {
		return false, nil
	}
	size := src.Size()
	r := s.c.refill
	spanOff := first * PageSize / r * r
	spanEnd := min(((last+1)*PageSize+r-1)/r*r, size)
	waited, unlock := s.lockBlocks(spanOff/r, (spanEnd+r-1)/r)
	defer unlock()
	if waited {
		return false, nil
	}
	buf := make([]byte, spanEnd-spanOff)
	if _, err := src.ReadAtContext(ctx, buf, spanOff); err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("file cache %s: fill [%d, %d): %w", s.name, spanOff, spanEnd, err)
	}
	s.c.fetched.Add(uint64(len(buf)))
	lo, hi := max(off, spanOff), min(end, spanEnd)
	copy(q[lo-off:hi-off], buf[lo-spanOff:])
	s.store(buf, spanOff)
	// The parts of the read outside the span were cached already.
	for _, part := range [][2]int64{{off, lo}, {hi, end}} {
		if part[0] >= part[1] {
			continue
		}
		sub := q[part[0]-off : part[1]-off]
		if s.readCached(sub, part[0]) != nil {
			if _, err := src.ReadAtContext(ctx, sub, part[0]); err != nil && !errors.Is(err, io.EOF) {
				return false, fmt.Errorf("file cache %s: read [%d, %d): %w", s.name, part[0], part[1], err)
			}
			s.c.fetched.Add(uint64(len(sub)))
		}
	}
	return true, nil
}

// store writes a fetched span (page-aligned at off) into the cache file and
// records its pages, within the cache's bound. Failures only mean the span
// is not cached.
func (s *store) store(buf []byte, off int64) {
	n := int64(len(buf))
	if !s.c.reserve(s, n+8*(n/PageSize+1)) {
		return
	}
	reserved := n + 8*(n/PageSize+1)
	s.mu.RLock()
	if s.data == nil {
		s.mu.RUnlock()
		s.c.settle(reserved, 0)
		return
	}
	start := s.c.audit.Start()
	_, err := s.data.WriteAt(buf, off)
	if !start.IsZero() {
		s.c.audit.IO(audit.EventFileWrite, s.path(), off, n, start)
	}
	if err == nil {
		tab := make([]byte, 8*((n+PageSize-1)/PageSize))
		for i := int64(0); i*PageSize < n; i++ {
			pg := buf[i*PageSize : min((i+1)*PageSize, n)]
			binary.LittleEndian.PutUint64(tab[8*i:], present|uint64(crc32.Checksum(pg, castagnoli)))
		}
		if _, err = s.meta.WriteAt(tab, crcHeader+8*(off/PageSize)); err == nil {
			for i := int64(0); i*PageSize < n; i++ {
				s.pages[off/PageSize+i].Store(binary.LittleEndian.Uint64(tab[8*i:]))
			}
		}
	}
	if err != nil {
		// Leave nothing half-written behind.
		s.data.Punch(off, n)
	}
	delta := s.measure()
	s.mu.RUnlock()
	s.c.settle(reserved, delta)
	if err != nil {
		s.c.storeFailures.Add(1)
		if isNoSpace(err) {
			if !s.c.fullWarned.Swap(true) {
				s.c.log.Warn("file cache: disk full; serving without caching and evicting", "dir", s.c.dir)
			}
			s.c.evictForDisk(s, n)
			return
		}
		s.c.log.Warn("file cache: write failed; serving without caching", "blob", s.name, "err", err)
		return
	}
	if s.c.fullWarned.Load() && s.c.fullWarned.Swap(false) {
		s.c.log.Info("file cache: writes succeed again; caching resumed", "dir", s.c.dir)
	}
}
