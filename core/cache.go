package core

import (
	"context"
	"log/slog"
	"time"
)

// Source is a slow, read-only byte range that a cache makes fast: typically a
// registry blob. It never changes while it is open.
type Source interface {
	// ReadAtContext reads len(p) bytes at off, as io.ReaderAt does, and
	// gives up when ctx is done.
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
	// Size is the size of the source in bytes.
	Size() int64
	// Key identifies the content for as long as it exists, e.g. its digest
	// ("sha256:..."). Caches name their entries by it.
	Key() string
}

// CacheStats are the counters every cache keeps.
type CacheStats struct {
	// Hits and Misses count reads served from the cache and reads that had
	// to fetch from the source.
	Hits, Misses uint64
	// Evictions counts entries or blocks dropped to honour the size bound,
	// Invalidations those dropped because they failed a check.
	Evictions, Invalidations uint64
	// FetchedBytes counts bytes read from sources; ServedBytes bytes
	// returned to readers.
	FetchedBytes, ServedBytes uint64
	// UsedBytes and CapacityBytes describe the space the cache occupies and
	// may occupy.
	UsedBytes, CapacityBytes int64
	// StoreFailures counts fetched ranges the cache could not keep
	// (full disk, failed writes); they were served from the source.
	StoreFailures uint64
}

// Cache turns Sources into local, read-only Files.
type Cache interface {
	// Open returns a read-only File with the content of src.
	Open(ctx context.Context, src Source) (File, error)
	// Stats returns a snapshot of the cache's counters.
	Stats() CacheStats
	// Close releases the cache. Files it opened must be closed first.
	Close() error
}

// CacheConfig configures a cache at creation.
type CacheConfig struct {
	// Dir is the directory the cache keeps its files in.
	Dir string
	// CapacityBytes bounds the space the cache uses (0: no bound).
	CapacityBytes int64
	// RefillSize is the granularity of fetches from a source.
	RefillSize int64
	// BlockSize is the cache-line size of block caches.
	BlockSize int64
	// Logger receives the cache's log lines (nil means slog.Default()).
	Logger *slog.Logger
	// Audit receives the cache's audit events (nil: none).
	Audit Auditor
	// Engine performs the IO of the cache's own files (nil: a psync
	// engine of the cache's own). The cache closes it only when
	// CloseEngine is set, after its files.
	Engine Engine
	// CloseEngine hands Engine to the cache, which closes it in Close
	// (for an engine made for the cache alone).
	CloseEngine bool
}

// Auditor records data-path events in the audit log (REMOTE.md §11.2);
// core/audit.Log implements it. IO applies upstream's latency thresholds,
// so callers report every event.
type Auditor interface {
	// IO records an IO event (download, file:read, file:write,
	// file:pread, bk_download) of size bytes at offset of pathname.
	IO(event, pathname string, offset, size int64, latency time.Duration)
	// Eviction records an eviction run: the bytes evicted, the bytes the
	// size bound and the free-disk floor asked for, and the bytes in use
	// after it.
	Eviction(actualEvict, evictByCache, evictByDisk, totalUsed int64)
}

// AuditedCache is a cache that records audit events. SetAuditor installs
// the auditor (nil removes it) and may be called while the cache is in use;
// Auditor returns the one installed.
type AuditedCache interface {
	SetAuditor(a Auditor)
	Auditor() Auditor
}

// CacheFactory creates a cache.
type CacheFactory func(cfg CacheConfig) (Cache, error)

// Caches is the registry of caches for remote layers: file, download, ocf.
var Caches = NewRegistry[CacheFactory]("cache")
