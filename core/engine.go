package core

import (
	"log/slog"
	"os"
)

// Op is the kind of one IO request.
type Op uint8

const (
	// OpRead reads len(Buf) bytes at Off into Buf.
	OpRead Op = iota
	// OpWrite writes Buf at Off.
	OpWrite
)

// IORequest is one read or write of a batch. After the batch completes, N
// holds the bytes transferred and Err the request's own error (io.EOF for a
// read that ended at the end of the file).
type IORequest struct {
	Op  Op
	Buf []byte
	Off int64
	N   int
	Err error
}

// BatchFile is implemented by files that can submit many requests at once, so
// that real queue depth reaches the kernel. Batch returns when every request
// has completed; per-request results are in the requests. The returned error
// reports a failure of the batch as a whole (e.g. a closed file).
type BatchFile interface {
	Batch(reqs []IORequest) error
}

// EngineStats are the counters every IO engine keeps, so that tests and
// operators can see that an engine really served the IO.
type EngineStats struct {
	// Reads and Writes count completed requests; ReadBytes and WriteBytes
	// the bytes they moved.
	Reads, Writes         uint64
	ReadBytes, WriteBytes uint64
	// Syncs counts completed fsync/fdatasync calls.
	Syncs uint64
	// Submits counts submissions to the kernel (system calls or ring
	// enters); SubmittedRequests the requests they carried.
	Submits, SubmittedRequests uint64
	// MaxInFlight is the highest number of requests in flight at once.
	MaxInFlight uint64
	// Fallbacks counts files or engines that fell back to a simpler path
	// (e.g. O_DIRECT refused, io_uring unavailable).
	Fallbacks uint64
}

// OpenOptions tunes how an engine opens one file.
type OpenOptions struct {
	// Flag and Perm are as for os.OpenFile.
	Flag int
	Perm os.FileMode
	// Direct asks for O_DIRECT. Engines that require it (libaio) set it
	// themselves; engines fall back to buffered IO when the filesystem
	// refuses it, with one log line.
	Direct bool
	// Buffered forbids O_DIRECT, also for engines that use it by default
	// (libaio). It wins over Direct.
	Buffered bool
}

// Engine opens local files whose IO it then performs. Files opened by an
// engine must be closed before the engine.
type Engine interface {
	// Name is the registry name of the engine (e.g. "psync").
	Name() string
	// Open opens a local file.
	Open(path string, opts OpenOptions) (File, error)
	// Stats returns a snapshot of the engine's counters.
	Stats() EngineStats
	// Close releases the engine's resources. It waits for IO in flight.
	Close() error
}

// EngineConfig configures an engine at creation.
type EngineConfig struct {
	// QueueDepth bounds the requests in flight (0 means the engine's
	// default).
	QueueDepth int
	// Logger receives the engine's log lines (nil means slog.Default()).
	Logger *slog.Logger
}

// EngineFactory creates an engine.
type EngineFactory func(cfg EngineConfig) (Engine, error)

// Engines is the registry of IO engines. Upstream's ioEngine numbers are 0
// psync, 1 libaio, 2 posixaio; this project adds 3 io_uring.
var Engines = NewRegistry[EngineFactory]("io engine")
