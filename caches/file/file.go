// Package file is overlaybd's default cache for remote layers: one sparse
// file per blob in the cache directory, named by the blob's digest
// ("<cacheDir>/sha256:<hex>"), filled refillSize bytes at a time, bounded in
// size by evicting whole blobs in least-recently-used order.
//
// Beyond upstream's design, every 4 KiB page of a cache file has a CRC32C
// recorded in a companion file ("<name>.crc") written after the data. A page
// is served from the cache only when it is recorded and its checksum
// matches; a page that fails is dropped (its range punched out) and fetched
// again, so a cache file damaged by a crash, a full disk or bit rot heals
// itself instead of serving bad bytes. Layers whose format has its own
// checks (ZFile block CRCs) can also drop a range through Invalidate after
// it failed their check.
//
// The cache registers itself in core.Caches as "file".
package file

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/overlaybd-go/overlaybd/caches/internal/auditing"
	"github.com/overlaybd-go/overlaybd/caches/internal/cachefile"
	"github.com/overlaybd-go/overlaybd/core"
)

func init() {
	core.Caches.Register("file", core.NoNumber, func(cfg core.CacheConfig) (core.Cache, error) {
		return New(Options{Dir: cfg.Dir, CapacityBytes: cfg.CapacityBytes, RefillSize: cfg.RefillSize, Logger: cfg.Logger, Audit: cfg.Audit,
			Engine: cfg.Engine, CloseEngine: cfg.CloseEngine})
	})
}

// PageSize is the unit of presence and checksums.
const PageSize = 4096

// Defaults of Options.
const (
	DefaultRefillSize = 256 << 10
	// DefaultMinFreeBytes is the free space the cache leaves on its
	// filesystem (upstream's 1 GiB).
	DefaultMinFreeBytes = 1 << 30
	// EvictionInterval is the period of the background eviction check.
	EvictionInterval = 10 * time.Second
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Options configures a Cache.
type Options struct {
	// Dir is the cache directory (created if missing).
	Dir string
	// CapacityBytes bounds the bytes the cache files occupy on disk (0:
	// no bound).
	CapacityBytes int64
	// RefillSize is the fetch granularity: a power of two, a multiple of
	// 4096 (default 256 KiB).
	RefillSize int64
	// MinFreeBytes is the free space to leave on the cache's filesystem
	// (0: DefaultMinFreeBytes; negative: none).
	MinFreeBytes int64
	// Logger receives log lines (nil: slog.Default()).
	Logger *slog.Logger
	// Audit receives upstream's file:read, file:write and eviction
	// events (nil: none; see also SetAuditor).
	Audit core.Auditor
	// Engine performs the IO of the cache files (nil: a psync engine of
	// the cache's own). It is closed by Close only with CloseEngine.
	Engine core.Engine
	// CloseEngine makes Close close Engine.
	CloseEngine bool
}

// Cache is the full-file sparse cache. It is safe for concurrent use.
type Cache struct {
	dir      string
	capacity int64
	refill   int64
	minFree  int64
	log      *slog.Logger
	eng      core.Engine
	ownEng   bool

	mu      sync.Mutex
	stores  map[string]*store
	lru     *list.List // of *store, front = most recently used
	used    int64      // bytes on disk of all stores
	pending int64      // bytes reserved by writes in progress
	closed  bool

	stop chan struct{}
	wg   sync.WaitGroup

	hits, misses, evictions, invalidations, fetched, served atomic.Uint64
	storeFailures                                           atomic.Uint64
	fullWarned                                              atomic.Bool

	audit auditing.Hook
}

// New opens (creating) a cache directory and registers the cache files
// already in it, oldest first in LRU order.
func New(o Options) (*Cache, error) {
	if o.Dir == "" {
		return nil, errors.New("file cache: empty directory")
	}
	if o.RefillSize == 0 {
		o.RefillSize = DefaultRefillSize
	}
	if o.RefillSize < PageSize || o.RefillSize%PageSize != 0 || o.RefillSize&(o.RefillSize-1) != 0 {
		return nil, fmt.Errorf("file cache: refillSize %d must be a power of two and a multiple of 4096", o.RefillSize)
	}
	if o.MinFreeBytes == 0 {
		o.MinFreeBytes = DefaultMinFreeBytes
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("file cache: %w", err)
	}
	c := &Cache{dir: o.Dir, capacity: o.CapacityBytes, refill: o.RefillSize, minFree: o.MinFreeBytes,
		log: o.Logger, stores: map[string]*store{}, lru: list.New(), stop: make(chan struct{})}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.audit.Set(o.Audit)
	if err := c.scan(); err != nil {
		return nil, err
	}
	c.eng, c.ownEng = cachefile.Engine(o.Engine, c.log)
	c.ownEng = c.ownEng || o.CloseEngine
	c.wg.Add(1)
	go c.evictLoop()
	return c, nil
}

// scan registers the cache files found in the directory.
func (c *Cache) scan() error {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("file cache: scan %s: %w", c.dir, err)
	}
	type found struct {
		name  string
		used  int64
		mtime time.Time
	}
	var fs []found
	for _, e := range ents {
		name := e.Name()
		if !e.Type().IsRegular() || strings.HasSuffix(name, crcSuffix) || strings.HasSuffix(name, ".tmp") {
			continue
		}
		used, mt := allocated(filepath.Join(c.dir, name))
		u2, _ := allocated(filepath.Join(c.dir, name+crcSuffix))
		fs = append(fs, found{name, used + u2, mt})
	}
	slices.SortFunc(fs, func(a, b found) int { return a.mtime.Compare(b.mtime) })
	for _, f := range fs {
		s := &store{c: c, name: f.name}
		s.used.Store(f.used)
		s.elem = c.lru.PushFront(s)
		c.stores[f.name] = s
		c.used += f.used
	}
	return nil
}

// allocated returns the bytes a file occupies on disk and its mtime.
func allocated(path string) (int64, time.Time) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, time.Time{}
	}
	return st.Blocks * 512, time.Unix(st.Mtim.Sec, st.Mtim.Nsec)
}

// SetAuditor installs the auditor of the cache's file:read, file:write
// and eviction events (nil: none).
func (c *Cache) SetAuditor(a core.Auditor) { c.audit.Set(a) }

// Auditor returns the installed auditor (nil: none).
func (c *Cache) Auditor() core.Auditor { return c.audit.Get() }

var _ core.AuditedCache = (*Cache)(nil)

// Stats returns the cache's counters.
func (c *Cache) Stats() core.CacheStats {
	c.mu.Lock()
	used := c.used
	c.mu.Unlock()
	return core.CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Evictions: c.evictions.Load(),
		Invalidations: c.invalidations.Load(), FetchedBytes: c.fetched.Load(), ServedBytes: c.served.Load(),
		UsedBytes: used, CapacityBytes: c.capacity, StoreFailures: c.storeFailures.Load()}
}

// Close stops the background eviction. Files must be closed first.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	open := 0
	for _, s := range c.stores {
		open += s.refs
	}
	c.mu.Unlock()
	close(c.stop)
	c.wg.Wait()
	if open > 0 {
		// The engine stays open for the files still in use.
		return fmt.Errorf("file cache: closed with %d files open", open)
	}
	if c.ownEng {
		return c.eng.Close()
	}
	return nil
}

// Engine returns the engine that performs the IO of the cache files.
func (c *Cache) Engine() core.Engine { return c.eng }

func (c *Cache) evictLoop() {
	defer c.wg.Done()
	t := time.NewTicker(EvictionInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.evictForDisk(nil, 0)
		}
	}
}

// freeDisk returns the free bytes of the cache's filesystem.
func (c *Cache) freeDisk() int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(c.dir, &st); err != nil {
		return -1
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// evictForDisk evicts LRU stores other than keep while the filesystem has
// less than MinFreeBytes+need free. Each store is visited at most once, so
// a disk filled from outside cannot make it loop.
func (c *Cache) evictForDisk(keep *store, need int64) {
	if c.minFree < 0 && need == 0 {
		return
	}
	min := max(c.minFree, 0) + need
	var byDisk, freed int64
	defer func() {
		if freed > 0 {
			c.auditEviction(freed, 0, byDisk)
		}
	}()
	for range 1 << 20 {
		f := c.freeDisk()
		if f < 0 || f >= min {
			return
		}
		if byDisk == 0 {
			byDisk = min - f
		}
		c.mu.Lock()
		v := c.victimLocked(keep)
		c.mu.Unlock()
		if v == nil {
			return
		}
		freed += c.evictStore(v)
	}
}

// auditEviction records an eviction run that freed space.
func (c *Cache) auditEviction(freed, byCache, byDisk int64) {
	if c.audit.Get() == nil {
		return
	}
	c.mu.Lock()
	used := c.used
	c.mu.Unlock()
	c.audit.Eviction(freed, byCache, byDisk, used)
}

// victimLocked returns the least recently used store with data, other than
// keep, and marks it as being evicted.
func (c *Cache) victimLocked(keep *store) *store {
	for e := c.lru.Back(); e != nil; e = e.Prev() {
		s := e.Value.(*store)
		if s == keep || s.evicting || s.used.Load() <= PageSize {
			continue
		}
		s.evicting = true
		return s
	}
	return nil
}

// reserve books n bytes for a write into s, evicting other stores from the
// LRU tail to make room. It reports false when the bound cannot be kept
// (the caller then does not cache).
func (c *Cache) reserve(s *store, n int64) bool {
	var byCache, freed int64
	defer func() {
		if freed > 0 {
			c.auditEviction(freed, byCache, 0)
		}
	}()
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return false
		}
		if c.capacity <= 0 || c.used+c.pending+n <= c.capacity {
			c.pending += n
			c.mu.Unlock()
			return true
		}
		if byCache == 0 {
			byCache = c.used + c.pending + n - c.capacity
		}
		v := c.victimLocked(s)
		c.mu.Unlock()
		if v == nil {
			return false
		}
		freed += c.evictStore(v)
	}
}

// settle replaces a reservation of n bytes by the store's real growth.
func (c *Cache) settle(n, delta int64) {
	c.mu.Lock()
	c.pending -= n
	c.used += delta
	c.mu.Unlock()
}

// evictStore drops every cached byte of s and returns the bytes freed. An
// open store stays registered (empty); a closed one is deleted and
// forgotten.
func (c *Cache) evictStore(s *store) int64 {
	s.mu.Lock()
	var freed int64
	wasOpen := s.data != nil
	if wasOpen {
		s.clearLocked()
		freed = -s.measure()
	} else {
		os.Remove(filepath.Join(c.dir, s.name))
		os.Remove(filepath.Join(c.dir, s.name+crcSuffix))
		freed = s.used.Swap(0)
	}
	s.mu.Unlock()
	c.evictions.Add(1)
	c.mu.Lock()
	c.used -= freed
	s.evicting = false
	if s.refs == 0 && !wasOpen && c.stores[s.name] == s {
		delete(c.stores, s.name)
		c.lru.Remove(s.elem)
	} else {
		c.lru.MoveToFront(s.elem)
	}
	c.mu.Unlock()
	c.log.Debug("file cache: evicted", "blob", s.name, "bytes", freed)
	return freed
}

func (c *Cache) touch(s *store) {
	c.mu.Lock()
	if c.stores[s.name] == s {
		c.lru.MoveToFront(s.elem)
	}
	c.mu.Unlock()
}

// cacheName turns a source key into a file name: the basename of the key
// (upstream names cache files by the last path element, the digest).
func cacheName(key string) (string, error) {
	name := key[strings.LastIndexByte(key, '/')+1:]
	if name == "" || name == "." || name == ".." || strings.HasSuffix(name, crcSuffix) || strings.HasSuffix(name, ".tmp") {
		return "", fmt.Errorf("file cache: unusable key %q", key)
	}
	return name, nil
}

// Open returns a read-only file with the content of src, served from the
// cache and filled from src on misses.
func (c *Cache) Open(ctx context.Context, src core.Source) (core.File, error) {
	name, err := cacheName(src.Key())
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, fmt.Errorf("file cache: %w", core.ErrClosed)
	}
	s, ok := c.stores[name]
	if !ok {
		s = &store{c: c, name: name}
		s.elem = c.lru.PushFront(s)
		c.stores[name] = s
	} else {
		c.lru.MoveToFront(s.elem)
	}
	s.refs++
	c.mu.Unlock()
	delta, err := s.open(src.Size())
	c.settle(0, delta)
	if err != nil {
		c.release(s)
		return nil, err
	}
	return &File{s: s, src: src}, nil
}

func (c *Cache) release(s *store) {
	c.mu.Lock()
	s.refs--
	last := s.refs == 0
	c.mu.Unlock()
	if last {
		s.mu.Lock()
		// Re-check under the store lock: an Open may have come in.
		c.mu.Lock()
		if s.refs == 0 {
			s.closeLocked()
		}
		c.mu.Unlock()
		s.mu.Unlock()
	}
}

// File is a cached view of one Source. It implements core.File (read-only),
// core.Invalidator and a context-aware ReadAtContext.
type File struct {
	s      *store
	src    core.Source
	closed atomic.Bool
}

// Size returns the source's size.
func (f *File) Size() int64 { return f.src.Size() }

// ReadAt reads through the cache.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	return f.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext reads through the cache; misses fetch refillSize-aligned
// spans from the source.
func (f *File) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if f.closed.Load() {
		return 0, fmt.Errorf("file cache %s: %w", f.s.name, core.ErrClosed)
	}
	return f.s.readAt(ctx, f.src, p, off)
}

// WriteAt fails: cached layers are read-only.
func (f *File) WriteAt([]byte, int64) (int, error) {
	return 0, fmt.Errorf("file cache %s: %w", f.s.name, core.ErrReadOnly)
}

// Sync does nothing: the cache holds nothing that is not in the source.
func (f *File) Sync() error { return nil }

// Invalidate drops the cached pages of [off, off+length), so that the next
// read fetches them from the source again.
func (f *File) Invalidate(off, length int64) error {
	if inv, ok := f.src.(core.Invalidator); ok {
		inv.Invalidate(off, length)
	}
	return f.s.invalidate(off, length)
}

// Close releases the file.
func (f *File) Close() error {
	if f.closed.Swap(true) {
		return nil
	}
	f.s.c.release(f.s)
	return nil
}

var _ core.File = (*File)(nil)
var _ core.Invalidator = (*File)(nil)

// isNoSpace reports a full disk or quota.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
