// Package download is overlaybd's "download" cache: each remote layer is
// cached in one file in its own layer directory, "<dir>/.download", the same
// file the background downloader fills and, once the whole blob checks
// against its digest, renames to "<dir>/overlaybd.commit". A byte range is
// cached when the file has data there (SEEK_DATA/SEEK_HOLE); misses fetch
// refillSize-aligned spans from the source, write them, and read them back.
// There is no eviction: the layer directory belongs to the layer.
//
// Sources that do not say which layer directory they belong to (see
// core.LayerDirSource), or say "", are read straight through.
//
// Lazily fetched ranges are only as good as the network delivered them: a
// layer without block checksums can only be verified by the background
// download's digest check, which discards the file and fetches it again on
// a mismatch.
//
// The cache registers itself in core.Caches as "download".
package download

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/overlaybd-go/overlaybd/caches/internal/auditing"
	"github.com/overlaybd-go/overlaybd/caches/internal/cachefile"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/audit"
)

func init() {
	core.Caches.Register("download", core.NoNumber, func(cfg core.CacheConfig) (core.Cache, error) {
		return New(Options{RefillSize: cfg.RefillSize, Logger: cfg.Logger, Audit: cfg.Audit,
			Engine: cfg.Engine, CloseEngine: cfg.CloseEngine})
	})
}

// FileName is the name of the download file inside a layer directory.
const FileName = ".download"

// align is the unit in which presence is checked.
const align = 4096

// Options configures a Cache.
type Options struct {
	// RefillSize is the fetch granularity, a multiple of 4096 (default
	// 256 KiB).
	RefillSize int64
	// Logger receives log lines (nil: slog.Default()).
	Logger *slog.Logger
	// Audit receives file:read and file:write events of the download
	// files (nil: none; see also SetAuditor).
	Audit core.Auditor
	// Engine performs the IO of the download files (nil: a psync engine
	// of the cache's own). It is closed by Close only with CloseEngine.
	Engine core.Engine
	// CloseEngine makes Close close Engine.
	CloseEngine bool
}

// Cache is the download cache. It is safe for concurrent use.
type Cache struct {
	refill    int64
	log       *slog.Logger
	eng       core.Engine
	ownEngine bool
	closed    atomic.Bool

	hits, misses, fetched, served, storeFailures atomic.Uint64
	fullWarned                                   atomic.Bool

	audit auditing.Hook
}

// New returns a download cache.
func New(o Options) (*Cache, error) {
	if o.RefillSize == 0 {
		o.RefillSize = 256 << 10
	}
	if o.RefillSize < align || o.RefillSize%align != 0 {
		return nil, fmt.Errorf("download cache: refillSize %d must be a multiple of 4096", o.RefillSize)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	eng, own := cachefile.Engine(o.Engine, o.Logger)
	c := &Cache{refill: o.RefillSize, log: o.Logger, eng: eng, ownEngine: own || o.CloseEngine}
	c.audit.Set(o.Audit)
	return c, nil
}

// SetAuditor installs the auditor of the cache's file:read and file:write
// events (nil: none).
func (c *Cache) SetAuditor(a core.Auditor) { c.audit.Set(a) }

// Auditor returns the installed auditor (nil: none).
func (c *Cache) Auditor() core.Auditor { return c.audit.Get() }

var _ core.AuditedCache = (*Cache)(nil)

// Stats returns the counters. UsedBytes and CapacityBytes are 0: the files
// live in the layer directories and are not bounded.
func (c *Cache) Stats() core.CacheStats {
	return core.CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(),
		FetchedBytes: c.fetched.Load(), ServedBytes: c.served.Load(), StoreFailures: c.storeFailures.Load()}
}

// Engine returns the engine that performs the IO of the download files.
func (c *Cache) Engine() core.Engine { return c.eng }

// Close marks the cache closed and closes its engine when it owns it
// (the files it opened must be closed first).
func (c *Cache) Close() error {
	if c.closed.Swap(true) || !c.ownEngine {
		return nil
	}
	return c.eng.Close()
}

// Open returns a read-only file with the content of src, cached in the
// layer directory's download file.
func (c *Cache) Open(ctx context.Context, src core.Source) (core.File, error) {
	if c.closed.Load() {
		return nil, fmt.Errorf("download cache: %w", core.ErrClosed)
	}
	f := &File{c: c, src: src}
	ds, ok := src.(core.LayerDirSource)
	if !ok || ds.LayerDir() == "" {
		return f, nil
	}
	path := filepath.Join(ds.LayerDir(), FileName)
	fh, err := cachefile.Open(c.eng, path)
	if err != nil {
		return nil, fmt.Errorf("download cache: %w", err)
	}
	t, err := TrackFile(fh.Fd())
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("download cache %s: %w", path, err)
	}
	release := t.Claim(0, WholeFile)
	size, _, err := fh.Stat()
	if err == nil && size != src.Size() {
		// A file of another size is not this blob's: start afresh.
		err = fh.Reset(src.Size())
	}
	release()
	if err != nil {
		t.Close()
		fh.Close()
		return nil, fmt.Errorf("download cache %s: %w", path, err)
	}
	f.fh, f.path, f.t = fh, path, t
	return f, nil
}

// File is a layer read through its download file. It implements core.File
// (read-only) and core.Invalidator.
type File struct {
	c    *Cache
	src  core.Source
	fh   *cachefile.File
	path string

	// t holds the spans being written, by this file's fills and by every
	// other writer of the download file (the background download).
	t *Tracker

	mu     sync.RWMutex // exclusive for Close and Invalidate
	closed bool
}

// Size returns the blob's size.
func (f *File) Size() int64 { return f.src.Size() }

// Path returns the download file's path ("" when reads go straight to the
// source).
func (f *File) Path() string { return f.path }

// WriteAt fails: layers are read-only.
func (f *File) WriteAt([]byte, int64) (int, error) {
	return 0, fmt.Errorf("download cache: %w", core.ErrReadOnly)
}

// Sync does nothing.
func (f *File) Sync() error { return nil }

// Close closes the download file (which stays in the layer directory).
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	if f.fh != nil {
		f.t.Close()
		return f.fh.Close()
	}
	return nil
}

// ReadAt reads through the cache.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	return f.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext reads through the cache.
func (f *File) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return 0, fmt.Errorf("download cache: %w", core.ErrClosed)
	}
	size := f.src.Size()
	if off < 0 {
		return 0, fmt.Errorf("download cache: read at %d: %w", off, core.ErrOutOfRange)
	}
	if off >= size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := min(int64(len(p)), size-off)
	var eof error
	if n < int64(len(p)) {
		eof = io.EOF
	}
	q := p[:n]
	if f.fh == nil {
		k, err := f.src.ReadAtContext(ctx, q, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		f.c.fetched.Add(uint64(k))
		f.c.served.Add(uint64(k))
		return k, eof
	}
	// Pages a fill (or the background download) is writing may read as
	// data half written (a page copied in part) or as zeros: the first
	// read is trusted only when no writer wrote during it.
	begun, quiet := f.t.begun.Load(), f.t.active.Load() == 0
	if f.readPresent(q, off) && quiet && f.t.begun.Load() == begun {
		f.c.hits.Add(1)
		f.c.served.Add(uint64(n))
		return int(n), eof
	}
	a0, a1 := off/align*align, min((off+n+align-1)/align*align, size)
	missed := false
	for attempt := 0; ; attempt++ {
		// A fill (or download write) in flight has allocated its span
		// before writing it all: SEEK_DATA would take its unwritten pages
		// (zeros) for data. Only spans no writer is writing are trusted.
		f.t.settle(a0, a1)
		if hooks.probing != nil {
			hooks.probing(f)
		}
		first, last, err := f.missing(a0, a1)
		if err != nil {
			return 0, err
		}
		if first < 0 {
			if f.t.settle(a0, a1) {
				continue // a fill ran meanwhile: look again
			}
			break
		}
		if !missed {
			missed = true
			f.c.misses.Add(1)
		}
		if attempt >= 3 {
			// The range keeps disappearing (discarded by a failed
			// download): read it straight from the source.
			k, err := f.src.ReadAtContext(ctx, q, off)
			if err != nil && !errors.Is(err, io.EOF) {
				return 0, err
			}
			f.c.fetched.Add(uint64(k))
			f.c.served.Add(uint64(k))
			return k, eof
		}
		unstored, s0, err := f.fill(ctx, first, last, size)
		if err != nil {
			return 0, err
		}
		if unstored != nil {
			// The span could not be written (full disk): serve it from
			// memory, the rest of the read from the file.
			if err := f.serveUnstored(q, off, unstored, s0); err != nil {
				return 0, err
			}
			f.c.served.Add(uint64(n))
			return int(n), eof
		}
	}
	if !missed {
		f.c.hits.Add(1)
	}
	if err := f.readFile(q, off); err != nil {
		return 0, err
	}
	f.c.served.Add(uint64(n))
	return int(n), eof
}

// zeroPage is compared against to tell data from holes.
var zeroPage [align]byte

// readPresent reads q at off from the download file and reports whether
// every 4 KiB page it touches returned a non-zero byte. Holes read as
// zeros, so such a read is all data and needs no SEEK_HOLE probe: a warm
// read costs one pread. A page that reads as zeros may be a hole (or data
// that is zeros); the caller then asks the file system.
func (f *File) readPresent(q []byte, off int64) bool {
	if err := f.readFile(q, off); err != nil {
		return false
	}
	for pos := off; pos < off+int64(len(q)); {
		end := min((pos/align+1)*align, off+int64(len(q)))
		piece := q[pos-off : end-off]
		if bytes.Equal(piece, zeroPage[:len(piece)]) {
			return false
		}
		pos = end
	}
	return true
}

// readFile reads q at off from the download file.
func (f *File) readFile(q []byte, off int64) error {
	start := f.c.audit.Start()
	if _, err := f.fh.ReadAt(q, off); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("download cache %s: %w", f.path, err)
	}
	f.c.audit.IO(audit.EventFileRead, f.path, off, int64(len(q)), start)
	return nil
}

// serveUnstored fills q (at off) from buf, a fetched span at s0 that covers
// every hole of the read, and the parts of q outside it from the file
// (they have data).
func (f *File) serveUnstored(q []byte, off int64, buf []byte, s0 int64) error {
	end := off + int64(len(q))
	lo, hi := max(off, s0), min(end, s0+int64(len(buf)))
	if lo < hi {
		copy(q[lo-off:hi-off], buf[lo-s0:])
	}
	for _, part := range [][2]int64{{off, min(lo, end)}, {max(hi, off), end}} {
		if part[0] < part[1] {
			if err := f.readFile(q[part[0]-off:part[1]-off], part[0]); err != nil {
				return err
			}
		}
	}
	return nil
}

// missing returns the first and last byte offsets of holes in [a0, a1)
// (first < 0: none), trimming data only from both ends as upstream does.
func (f *File) missing(a0, a1 int64) (first, last int64, err error) {
	first, last = -1, -1
	pos := a0
	for pos < a1 {
		hole, err := f.fh.SeekHole(pos)
		if err != nil {
			return 0, 0, fmt.Errorf("download cache %s: seek: %w", f.path, err)
		}
		if hole >= a1 {
			break
		}
		data, err := f.fh.SeekData(hole)
		if err != nil {
			if errors.Is(err, unix.ENXIO) {
				data = a1
			} else {
				return 0, 0, fmt.Errorf("download cache %s: seek: %w", f.path, err)
			}
		}
		if first < 0 {
			first = hole
		}
		last = min(data, a1) - 1
		pos = data
	}
	return first, last, nil
}

// fill fetches the refill-aligned span around [first, last] and writes it.
// When the write fails (a full disk) the span is punched out again and
// returned as unstored, with its offset, for the caller to serve from.
func (f *File) fill(ctx context.Context, first, last, size int64) (unstored []byte, s0 int64, err error) {
	r := f.c.refill
	s0, s1 := first/r*r, min((last/r+1)*r, size)
	unlock, waited := f.t.claim(s0, s1, true)
	defer unlock()
	if waited {
		return nil, 0, nil // someone else filled it; the caller looks again
	}
	buf := make([]byte, s1-s0)
	if _, err := f.src.ReadAtContext(ctx, buf, s0); err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, fmt.Errorf("download cache: fill [%d, %d): %w", s0, s1, err)
	}
	f.c.fetched.Add(uint64(len(buf)))
	if hooks.filling != nil {
		hooks.filling(f, s0, s1)
	}
	start := f.c.audit.Start()
	_, werr := f.fh.WriteAt(buf, s0)
	f.c.audit.IO(audit.EventFileWrite, f.path, s0, int64(len(buf)), start)
	if werr == nil {
		if f.c.fullWarned.Load() && f.c.fullWarned.Swap(false) {
			f.c.log.Info("download cache: writes succeed again; caching resumed", "file", f.path)
		}
		return nil, 0, nil
	}
	// A short write leaves a partly written block that SEEK_DATA reports
	// as data: punch the whole span (to the block after its end) out.
	f.c.storeFailures.Add(1)
	pend := (s1 + align - 1) / align * align
	if perr := f.fh.Punch(s0, pend-s0); perr != nil {
		return nil, 0, fmt.Errorf("download cache %s: write: %w; undo: %w", f.path, werr, perr)
	}
	if !isNoSpace(werr) {
		f.c.log.Warn("download cache: write failed; serving without caching", "file", f.path, "err", werr)
	} else if !f.c.fullWarned.Swap(true) {
		f.c.log.Warn("download cache: disk full; serving without caching", "file", f.path)
	}
	return buf, s0, nil
}

// isNoSpace reports a full disk or quota.
func isNoSpace(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)
}

// hooks are seams for the package's tests, which set them to stop a read or
// a fill at a chosen point; they are nil otherwise.
var hooks struct {
	// probing is called by a read after its first settle, before it asks
	// the file system which pages of its span are holes.
	probing func(f *File)
	// filling is called by a fill that holds its refill blocks and has
	// fetched the span [s0, s1), before it writes it to the file.
	filling func(f *File, s0, s1 int64)
	// waiting is called before a read or a writer waits for a claim in
	// flight (a fill's or the background download's).
	waiting func(t *Tracker)
}

// Invalidate punches [off, off+length) (widened to 4 KiB) out of the
// download file, so that the next read fetches it again.
func (f *File) Invalidate(off, length int64) error {
	if inv, ok := f.src.(core.Invalidator); ok {
		inv.Invalidate(off, length)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fh == nil || f.closed || length <= 0 {
		return nil
	}
	a0 := max(off, 0) / align * align
	a1 := (off + length + align - 1) / align * align
	// Readers of other files on the download file must not trust a
	// probe made before the punch.
	release := f.t.Claim(a0, a1)
	defer release()
	if err := f.fh.Punch(a0, a1-a0); err != nil {
		return fmt.Errorf("download cache %s: invalidate: %w", f.path, err)
	}
	return nil
}

var _ core.File = (*File)(nil)
var _ core.Invalidator = (*File)(nil)
