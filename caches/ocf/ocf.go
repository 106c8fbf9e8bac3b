// Package ocf is a block cache in the spirit of overlaybd's "ocf" cache
// type (Open CAS): all blobs share one cache file, "<cacheDir>/cache_media",
// divided into slots of blockSize bytes, replaced in least-recently-used
// order, so the cache never exceeds its size bound whatever the blobs.
//
// OCF's on-media format cannot be reused; this is the project's own. The
// metadata lives in "<cacheDir>/cache_meta": a header and one 128-byte
// entry per slot naming the blob (sha256 of its key), the block index, the
// valid length and a CRC32C per 4 KiB sector, the entry itself protected by
// a CRC32C. A slot is filled by first erasing its entry, then writing the
// data, then writing the new entry; every read checks the sectors it
// serves. After a crash at any point a slot is therefore either known with
// checksums that match its data, or dropped — a block the cache is unsure
// of is never served.
//
// The cache registers itself in core.Caches as "ocf".
package ocf

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/overlaybd-go/overlaybd/caches/internal/auditing"
	"github.com/overlaybd-go/overlaybd/caches/internal/cachefile"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/audit"
)

func init() {
	core.Caches.Register("ocf", core.NoNumber, func(cfg core.CacheConfig) (core.Cache, error) {
		return New(Options{Dir: cfg.Dir, CapacityBytes: cfg.CapacityBytes, BlockSize: cfg.BlockSize,
			RefillSize: cfg.RefillSize, Logger: cfg.Logger, Audit: cfg.Audit, Engine: cfg.Engine, CloseEngine: cfg.CloseEngine})
	})
}

// File names in the cache directory.
const (
	MediaName = "cache_media"
	MetaName  = "cache_meta"
)

const (
	sector     = 4096
	entrySize  = 128
	metaHeader = 4096
	entryMagic = 0x4F434642 // "OCFB"
	metaMagic  = "OBDOCF01"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Options configures a Cache.
type Options struct {
	// Dir is the cache directory (created if missing).
	Dir string
	// CapacityBytes bounds the bytes of the media and metadata files
	// together (required).
	CapacityBytes int64
	// BlockSize is the slot size: 4096, 8192, 16384, 32768 or 65536
	// (default 65536).
	BlockSize int64
	// RefillSize is the unit fetched on a miss, a multiple of 512 rounded
	// up to whole blocks (default 256 KiB).
	RefillSize int64
	// Logger receives log lines (nil: slog.Default()).
	Logger *slog.Logger
	// Audit receives file:read, file:write and eviction events (nil:
	// none; see also SetAuditor).
	Audit core.Auditor
	// Engine performs the IO of the media and metadata files (nil: a
	// psync engine of the cache's own). It is closed by Close only with
	// CloseEngine.
	Engine core.Engine
	// CloseEngine makes Close close Engine.
	CloseEngine bool
}

type blockKey struct {
	blob  [32]byte
	index int64
}

type slot struct {
	id    int64
	key   blockKey
	valid bool // key maps to this slot
	pins  int
	elem  *list.Element // in lru when valid
	n     int           // valid bytes
	crcs  [16]uint32
}

// Cache is the block cache. It is safe for concurrent use.
type Cache struct {
	dir    string
	bs     int64
	refill int64
	nslots int64
	log    *slog.Logger
	eng    core.Engine
	ownEng bool
	media  *cachefile.File
	meta   *cachefile.File

	mu     sync.Mutex
	slots  []*slot
	index  map[blockKey]*slot
	lru    *list.List // valid, unpinned-or-pinned slots; front = most recent
	free   []*slot
	fills  map[blockKey]chan struct{}
	closed bool
	open   int

	hits, misses, evictions, invalidations, fetched, served atomic.Uint64
	storeFailures                                           atomic.Uint64
	fullWarned                                              atomic.Bool

	audit auditing.Hook
}

// SetAuditor installs the auditor of the cache's file:read, file:write and
// eviction events (nil: none).
func (c *Cache) SetAuditor(a core.Auditor) { c.audit.Set(a) }

// Auditor returns the installed auditor (nil: none).
func (c *Cache) Auditor() core.Auditor { return c.audit.Get() }

var _ core.AuditedCache = (*Cache)(nil)

// New opens or creates the cache files. Metadata of another geometry is
// discarded.
func New(o Options) (*Cache, error) {
	if o.Dir == "" {
		return nil, errors.New("ocf cache: empty directory")
	}
	if o.BlockSize == 0 {
		o.BlockSize = 65536
	}
	switch o.BlockSize {
	case 4096, 8192, 16384, 32768, 65536:
	default:
		return nil, fmt.Errorf("ocf cache: blockSize %d must be 4096, 8192, 16384, 32768 or 65536", o.BlockSize)
	}
	if o.RefillSize == 0 {
		o.RefillSize = 256 << 10
	}
	if o.RefillSize%512 != 0 || o.RefillSize <= 0 {
		return nil, fmt.Errorf("ocf cache: refillSize %d must be a multiple of 512", o.RefillSize)
	}
	o.RefillSize = (o.RefillSize + o.BlockSize - 1) / o.BlockSize * o.BlockSize
	nslots := (o.CapacityBytes - metaHeader) / (o.BlockSize + entrySize)
	if nslots < 1 {
		return nil, fmt.Errorf("ocf cache: capacity %d holds no block of %d bytes", o.CapacityBytes, o.BlockSize)
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("ocf cache: %w", err)
	}
	c := &Cache{dir: o.Dir, bs: o.BlockSize, refill: o.RefillSize, nslots: nslots, log: o.Logger,
		index: map[blockKey]*slot{}, lru: list.New(), fills: map[blockKey]chan struct{}{}}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.audit.Set(o.Audit)
	c.eng, c.ownEng = cachefile.Engine(o.Engine, c.log)
	c.ownEng = c.ownEng || o.CloseEngine
	closeEngine := func() {
		if c.ownEng {
			c.eng.Close()
		}
	}
	var err error
	if c.media, err = cachefile.Open(c.eng, filepath.Join(o.Dir, MediaName)); err != nil {
		closeEngine()
		return nil, fmt.Errorf("ocf cache: %w", err)
	}
	if c.meta, err = cachefile.Open(c.eng, filepath.Join(o.Dir, MetaName)); err != nil {
		c.media.Close()
		closeEngine()
		return nil, fmt.Errorf("ocf cache: %w", err)
	}
	if err := c.load(); err != nil {
		c.media.Close()
		c.meta.Close()
		closeEngine()
		return nil, err
	}
	c.preallocate()
	return c, nil
}

// preallocate reserves the disk space of both files, so that a disk filled
// from outside cannot make the cache's writes fail. When the filesystem
// cannot (no fallocate, not enough free space) the files stay sparse and a
// write that fails is served without caching.
func (c *Cache) preallocate() {
	var need int64
	files := []struct {
		f    *cachefile.File
		size int64
	}{{c.media, c.nslots * c.bs}, {c.meta, metaHeader + c.nslots*entrySize}}
	for _, x := range files {
		if _, alloc, err := x.f.Stat(); err == nil {
			need += max(0, x.size-alloc)
		}
	}
	if need == 0 {
		return
	}
	if fs, err := c.media.Statfs(); err == nil && int64(fs.Bavail)*int64(fs.Bsize) < need {
		c.log.Warn("ocf cache: not enough free space to reserve the cache files; they stay sparse",
			"dir", c.dir, "need", need, "free", int64(fs.Bavail)*int64(fs.Bsize))
		return
	}
	for _, x := range files {
		if err := x.f.Allocate(0, x.size); err != nil {
			c.log.Warn("ocf cache: cannot reserve the cache files; they stay sparse", "dir", c.dir, "err", err)
			return
		}
	}
}

func (c *Cache) header() []byte {
	h := make([]byte, metaHeader)
	copy(h, metaMagic)
	binary.LittleEndian.PutUint64(h[8:], uint64(c.bs))
	binary.LittleEndian.PutUint64(h[16:], uint64(c.nslots))
	binary.LittleEndian.PutUint32(h[24:], crc32.Checksum(h[:24], castagnoli))
	return h
}

// load reads the metadata and registers every slot whose entry checks out.
func (c *Cache) load() error {
	want := c.header()
	got := make([]byte, metaHeader)
	_, err := c.meta.ReadAt(got, 0)
	size := metaHeader + c.nslots*entrySize
	if err != nil || string(got[:28]) != string(want[:28]) {
		// New cache, or another geometry: start empty.
		if err := errors.Join(c.meta.Reset(size), c.media.Reset(c.nslots*c.bs)); err != nil {
			return fmt.Errorf("ocf cache: reset: %w", err)
		}
		if _, err := c.meta.WriteAt(want, 0); err != nil {
			return fmt.Errorf("ocf cache: %w", err)
		}
	}
	tab := make([]byte, c.nslots*entrySize)
	if _, err := c.meta.ReadAt(tab, metaHeader); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("ocf cache: read metadata: %w", err)
	}
	c.slots = make([]*slot, c.nslots)
	for i := range c.slots {
		s := &slot{id: int64(i)}
		c.slots[i] = s
		if decodeEntry(tab[i*entrySize:(i+1)*entrySize], s, c.bs) {
			if _, dup := c.index[s.key]; !dup {
				s.valid = true
				c.index[s.key] = s
				s.elem = c.lru.PushBack(s)
				continue
			}
		}
		c.free = append(c.free, s)
	}
	// Slots are taken from the end of the free list: lowest ids first, so
	// that a sequential fill lands in consecutive slots and is read back
	// with one pread per run.
	slices.Reverse(c.free)
	return nil
}

func encodeEntry(s *slot) []byte {
	b := make([]byte, entrySize)
	binary.LittleEndian.PutUint32(b[0:], entryMagic)
	binary.LittleEndian.PutUint64(b[8:], uint64(s.key.index))
	copy(b[16:48], s.key.blob[:])
	binary.LittleEndian.PutUint32(b[48:], uint32(s.n))
	for i, v := range s.crcs {
		binary.LittleEndian.PutUint32(b[56+4*i:], v)
	}
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(b[8:], castagnoli))
	return b
}

func decodeEntry(b []byte, s *slot, bs int64) bool {
	if binary.LittleEndian.Uint32(b) != entryMagic || binary.LittleEndian.Uint32(b[4:]) != crc32.Checksum(b[8:], castagnoli) {
		return false
	}
	s.key.index = int64(binary.LittleEndian.Uint64(b[8:]))
	copy(s.key.blob[:], b[16:48])
	s.n = int(binary.LittleEndian.Uint32(b[48:]))
	for i := range s.crcs {
		s.crcs[i] = binary.LittleEndian.Uint32(b[56+4*i:])
	}
	return s.n > 0 && int64(s.n) <= bs && s.key.index >= 0
}

// Stats returns the counters; UsedBytes counts the slots in use.
func (c *Cache) Stats() core.CacheStats {
	c.mu.Lock()
	used := int64(len(c.index)) * c.bs
	c.mu.Unlock()
	return core.CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Evictions: c.evictions.Load(),
		Invalidations: c.invalidations.Load(), FetchedBytes: c.fetched.Load(), ServedBytes: c.served.Load(),
		UsedBytes: used + metaHeader + c.nslots*entrySize, CapacityBytes: metaHeader + c.nslots*(c.bs+entrySize),
		StoreFailures: c.storeFailures.Load()}
}

// Close closes the cache files. Files must be closed first.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	if c.open > 0 {
		return fmt.Errorf("ocf cache: %d files still open", c.open)
	}
	c.closed = true
	err := errors.Join(c.media.Close(), c.meta.Close())
	if c.ownEng {
		err = errors.Join(err, c.eng.Close())
	}
	return err
}

// Engine returns the engine that performs the IO of the cache files.
func (c *Cache) Engine() core.Engine { return c.eng }

// Open returns a read-only file with the content of src.
func (c *Cache) Open(_ context.Context, src core.Source) (core.File, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("ocf cache: %w", core.ErrClosed)
	}
	c.open++
	return &File{c: c, src: src, blob: sha256.Sum256([]byte(src.Key()))}, nil
}

// lookup pins the slot holding k, if any.
func (c *Cache) lookupLocked(k blockKey) *slot {
	s := c.index[k]
	if s != nil {
		s.pins++
		c.lru.MoveToFront(s.elem)
	}
	return s
}

func (c *Cache) unpin(s *slot) {
	c.mu.Lock()
	c.unpinLocked(s)
	c.mu.Unlock()
}

// unpinLocked drops a reader's pin; a slot dropped while pinned goes back
// to the free list with its last pin.
func (c *Cache) unpinLocked(s *slot) {
	s.pins--
	if s.pins == 0 && !s.valid {
		c.free = append(c.free, s)
	}
}

// dropLocked forgets a slot's block (its entry is erased on disk).
func (c *Cache) dropLocked(s *slot) {
	if !s.valid {
		return
	}
	delete(c.index, s.key)
	c.lru.Remove(s.elem)
	s.valid, s.elem = false, nil
	c.meta.WriteAt(make([]byte, entrySize), metaHeader+s.id*entrySize)
	if s.pins == 0 {
		c.free = append(c.free, s)
	}
}

// takeLocked returns a slot to fill, pinned and erased on disk: a free one,
// or the least recently used unpinned one.
func (c *Cache) takeLocked() *slot {
	var s *slot
	for len(c.free) > 0 {
		s = c.free[len(c.free)-1]
		c.free = c.free[:len(c.free)-1]
		if !s.valid && s.pins == 0 {
			break
		}
		s = nil
	}
	if s == nil {
		for e := c.lru.Back(); e != nil; e = e.Prev() {
			v := e.Value.(*slot)
			if v.pins == 0 {
				s = v
				break
			}
		}
		if s == nil {
			return nil
		}
		delete(c.index, s.key)
		c.lru.Remove(s.elem)
		s.valid, s.elem = false, nil
		c.evictions.Add(1)
		// Erase the entry before the data changes.
		c.meta.WriteAt(make([]byte, entrySize), metaHeader+s.id*entrySize)
	}
	s.pins++
	return s
}

// File is one blob read through the block cache. It implements core.File
// (read-only) and core.Invalidator.
type File struct {
	c      *Cache
	src    core.Source
	blob   [32]byte
	closed atomic.Bool
}

// Size returns the blob's size.
func (f *File) Size() int64 { return f.src.Size() }

// WriteAt fails: layers are read-only.
func (f *File) WriteAt([]byte, int64) (int, error) {
	return 0, fmt.Errorf("ocf cache: %w", core.ErrReadOnly)
}

// Sync does nothing.
func (f *File) Sync() error { return nil }

// Close releases the file.
func (f *File) Close() error {
	if f.closed.Swap(true) {
		return nil
	}
	f.c.mu.Lock()
	f.c.open--
	f.c.mu.Unlock()
	return nil
}

// Invalidate drops the blocks overlapping [off, off+length).
func (f *File) Invalidate(off, length int64) error {
	if inv, ok := f.src.(core.Invalidator); ok {
		inv.Invalidate(off, length)
	}
	c := f.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for b := max(off, 0) / c.bs; b*c.bs < off+length; b++ {
		if s := c.index[blockKey{f.blob, b}]; s != nil {
			c.dropLocked(s)
			c.invalidations.Add(1)
		}
	}
	return nil
}

// ReadAt reads through the cache.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	return f.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext reads through the cache, block by block.
func (f *File) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if f.closed.Load() {
		return 0, fmt.Errorf("ocf cache: %w", core.ErrClosed)
	}
	size := f.src.Size()
	if off < 0 {
		return 0, fmt.Errorf("ocf cache: read at %d: %w", off, core.ErrOutOfRange)
	}
	if off >= size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := min(int64(len(p)), size-off)
	missed := false
	for pos := off; pos < off+n; {
		if next := f.readRun(p[:n], off, pos); next > pos {
			pos = next
			continue
		}
		next, err := f.readBlock(ctx, p[:n], off, pos, &missed)
		if err != nil {
			return 0, err
		}
		pos = next
	}
	if !missed {
		f.c.hits.Add(1)
	}
	f.c.served.Add(uint64(n))
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

// maxRun bounds the blocks one pread of readRun covers.
const maxRun = 32

// readRun serves the read p (at off) from position pos out of the cached
// blocks that follow pos in consecutive slots, with one pread and the
// checksums of every sector it returns. It returns the position it served
// up to (pos when the block at pos is not cached or fails its check).
func (f *File) readRun(p []byte, off, pos int64) int64 {
	c := f.c
	end := off + int64(len(p))
	b := pos / c.bs
	var run [maxRun]*slot
	k := 0
	c.mu.Lock()
	for i := b; i*c.bs < end && k < maxRun; i++ {
		s := c.index[blockKey{f.blob, i}]
		if s == nil || (k > 0 && (s.id != run[k-1].id+1 || int64(run[k-1].n) != c.bs)) {
			break
		}
		s.pins++
		c.lru.MoveToFront(s.elem)
		run[k] = s
		k++
	}
	c.mu.Unlock()
	if k == 0 {
		return pos
	}
	defer func() {
		c.mu.Lock()
		for _, s := range run[:k] {
			c.unpinLocked(s)
		}
		c.mu.Unlock()
	}()
	// Blob bytes [pos, rend) lie in the run; the pread covers their
	// sectors.
	last := run[k-1]
	rend := min(end, (b+int64(k)-1)*c.bs+int64(last.n))
	if rend <= pos {
		return pos
	}
	base := run[0].id*c.bs - b*c.bs // media offset = blob offset + base
	a0 := pos / sector * sector
	a1 := min((rend+sector-1)/sector*sector, (b+int64(k)-1)*c.bs+int64(last.n))
	var buf []byte
	if a0 == pos && a1 == rend {
		buf = p[pos-off : rend-off]
	} else {
		bp := runBufs.Get().(*[]byte)
		defer runBufs.Put(bp)
		if int64(cap(*bp)) < a1-a0 {
			*bp = make([]byte, a1-a0)
		}
		buf = (*bp)[:a1-a0]
	}
	start := c.audit.Start()
	if _, err := c.media.ReadAt(buf, a0+base); err != nil {
		return pos
	}
	c.audit.IO(audit.EventFileRead, c.media.Path(), a0+base, a1-a0, start)
	for sec := a0; sec < a1; sec += sector {
		s := run[(sec/c.bs)-b]
		in := sec % c.bs
		data := buf[sec-a0 : min(sec+sector, a1)-a0]
		if crc32.Checksum(data, castagnoli) != s.crcs[in/sector] {
			c.log.Warn("ocf cache: cached block failed its checksum; dropping it", "slot", s.id)
			c.mu.Lock()
			if s.valid {
				c.dropLocked(s)
				c.invalidations.Add(1)
			}
			c.mu.Unlock()
			// Serve what checked out before the bad block.
			good := min(max(sec/c.bs*c.bs, pos), rend)
			if good > pos && &buf[0] != &p[pos-off] {
				copy(p[pos-off:good-off], buf[pos-a0:])
			}
			return good
		}
	}
	if &buf[0] != &p[pos-off] {
		copy(p[pos-off:rend-off], buf[pos-a0:])
	}
	return rend
}

var runBufs = sync.Pool{New: func() any { b := make([]byte, 0, 256<<10); return &b }}

// readBlock serves the read p (at off) from position pos, inside the block
// b holding pos, and returns the position it served up to: the end of the
// block (or of the read) on a hit, and up to the end of the fetched run
// when it had to fetch.
func (f *File) readBlock(ctx context.Context, p []byte, off, pos int64, missed *bool) (int64, error) {
	c := f.c
	b := pos / c.bs
	end := min((b+1)*c.bs, off+int64(len(p)))
	q, in := p[pos-off:end-off], pos-b*c.bs
	k := blockKey{f.blob, b}
	for attempt := 0; attempt < 4; attempt++ {
		c.mu.Lock()
		s := c.lookupLocked(k)
		c.mu.Unlock()
		if s != nil {
			ok := f.readSlot(s, q, in)
			c.unpin(s)
			if ok {
				return end, nil
			}
		}
		if !*missed {
			*missed = true
			c.misses.Add(1)
		}
		next, err := f.fill(ctx, b, p, off, pos)
		if err != nil {
			return 0, err
		}
		if next > pos {
			return next, nil
		}
	}
	// Keeps being evicted: read straight through.
	if _, err := f.src.ReadAtContext(ctx, q, pos); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	c.fetched.Add(uint64(len(q)))
	return end, nil
}

// readSlot reads from a pinned slot, checking every sector it touches; a
// slot that fails is dropped.
func (f *File) readSlot(s *slot, q []byte, in int64) bool {
	c := f.c
	if in+int64(len(q)) > int64(s.n) {
		return false
	}
	s0, s1 := in/sector, (in+int64(len(q))-1)/sector
	a0, a1 := s0*sector, min((s1+1)*sector, int64(s.n))
	buf := make([]byte, a1-a0)
	start := c.audit.Start()
	if _, err := c.media.ReadAt(buf, s.id*c.bs+a0); err != nil {
		return false
	}
	c.audit.IO(audit.EventFileRead, c.media.Path(), s.id*c.bs+a0, a1-a0, start)
	for i := s0; i <= s1; i++ {
		sec := buf[(i-s0)*sector : min((i-s0+1)*sector, int64(len(buf)))]
		if crc32.Checksum(sec, castagnoli) != s.crcs[i] {
			c.log.Warn("ocf cache: cached block failed its checksum; dropping it", "slot", s.id)
			c.mu.Lock()
			if s.valid {
				c.dropLocked(s)
				c.invalidations.Add(1)
			}
			c.mu.Unlock()
			return false
		}
	}
	copy(q, buf[in-a0:])
	return true
}

// fill fetches the refill-aligned run of blocks around block b that are
// missing, copies the part of the read p (at off) from pos on that the run
// covers into p, and stores the blocks. It returns the position up to which
// it served the read (pos when it fetched nothing: another reader was
// filling b, or b was cached meanwhile; the caller looks again).
func (f *File) fill(ctx context.Context, b int64, p []byte, off, pos int64) (int64, error) {
	c := f.c
	per := c.refill / c.bs
	size := f.src.Size()
	nblocks := (size + c.bs - 1) / c.bs
	b0 := b / per * per
	b1 := min(b0+per, nblocks)
	// Take the blocks of the run nobody holds or fills; wait for b if
	// another reader is filling it.
	c.mu.Lock()
	if ch, busy := c.fills[blockKey{f.blob, b}]; busy {
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		return pos, nil
	}
	var mine []int64
	for i := b0; i < b1; i++ {
		k := blockKey{f.blob, i}
		if _, ok := c.index[k]; ok {
			continue
		}
		if _, busy := c.fills[k]; busy {
			continue
		}
		c.fills[k] = make(chan struct{})
		mine = append(mine, i)
	}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		for _, i := range mine {
			k := blockKey{f.blob, i}
			close(c.fills[k])
			delete(c.fills, k)
		}
		c.mu.Unlock()
	}()
	if len(mine) == 0 {
		return pos, nil
	}
	lo, hi := mine[0]*c.bs, min((mine[len(mine)-1]+1)*c.bs, size)
	buf := make([]byte, hi-lo)
	if _, err := f.src.ReadAtContext(ctx, buf, lo); err != nil && !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("ocf cache: fill [%d, %d): %w", lo, hi, err)
	}
	c.fetched.Add(uint64(len(buf)))
	next := pos
	if end := min(hi, off+int64(len(p))); lo <= pos && pos < end {
		copy(p[pos-off:end-off], buf[pos-lo:])
		next = end
	}
	var evicted int64
	for _, i := range mine {
		data := buf[(i*c.bs)-lo : min((i+1)*c.bs, size)-lo]
		ev, err := c.store(blockKey{f.blob, i}, data)
		evicted += ev
		if err != nil {
			// The media cannot take more now (full disk): the rest of
			// the run is not cached either.
			c.storeFailures.Add(1)
			if !isNoSpace(err) {
				c.log.Warn("ocf cache: write failed; serving without caching", "err", err)
			} else if !c.fullWarned.Swap(true) {
				c.log.Warn("ocf cache: disk full; serving without caching", "dir", c.dir)
			}
			break
		}
		if c.fullWarned.Load() && c.fullWarned.Swap(false) {
			c.log.Info("ocf cache: writes succeed again; caching resumed", "dir", c.dir)
		}
	}
	if evicted > 0 && c.audit.Get() != nil {
		c.mu.Lock()
		used := int64(len(c.index)) * c.bs
		c.mu.Unlock()
		c.audit.Eviction(evicted*c.bs, evicted*c.bs, 0, used)
	}
	return next, nil
}

// isNoSpace reports a full disk or quota.
func isNoSpace(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)
}

// store writes one block into a slot: entry erased (by takeLocked), data
// written, new entry written, then published. It returns the number of
// blocks evicted to make room (0 or 1) and the write error, if any.
func (c *Cache) store(k blockKey, data []byte) (evicted int64, err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, nil
	}
	before := c.evictions.Load()
	s := c.takeLocked()
	evicted = int64(c.evictions.Load() - before)
	c.mu.Unlock()
	if s == nil {
		return 0, nil // every slot is in use by readers: do not cache
	}
	s.key, s.n = k, len(data)
	s.crcs = [16]uint32{}
	for i := 0; i*sector < len(data); i++ {
		s.crcs[i] = crc32.Checksum(data[i*sector:min((i+1)*sector, len(data))], castagnoli)
	}
	start := c.audit.Start()
	_, err = c.media.WriteAt(data, s.id*c.bs)
	c.audit.IO(audit.EventFileWrite, c.media.Path(), s.id*c.bs, int64(len(data)), start)
	if err == nil {
		_, err = c.meta.WriteAt(encodeEntry(s), metaHeader+s.id*entrySize)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s.pins--
	if err != nil {
		c.meta.WriteAt(make([]byte, entrySize), metaHeader+s.id*entrySize)
		c.free = append(c.free, s)
		return evicted, err
	}
	if old := c.index[k]; old != nil {
		c.dropLocked(old)
	}
	s.valid = true
	c.index[k] = s
	s.elem = c.lru.PushFront(s)
	return evicted, nil
}

var _ core.File = (*File)(nil)
var _ core.Invalidator = (*File)(nil)
