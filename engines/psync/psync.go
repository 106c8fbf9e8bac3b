// Package psync is the default IO engine: every request is a pread or pwrite
// system call on the caller's goroutine (upstream's ioEngine 0).
package psync

import (
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"

	"github.com/overlaybd-go/overlaybd/core"
	"golang.org/x/sys/unix"
)

// Name is the registry name of this engine.
const Name = "psync"

func init() {
	core.Engines.Register(Name, 0, func(cfg core.EngineConfig) (core.Engine, error) { return New(cfg), nil })
}

// Engine performs IO with pread/pwrite on the calling goroutine.
type Engine struct {
	log   *slog.Logger
	stats stats
}

type stats struct {
	reads, writes, readBytes, writeBytes, syncs, submits, fallbacks atomic.Uint64
	inFlight, maxInFlight                                           atomic.Int64
}

// New returns a psync engine.
func New(cfg core.EngineConfig) *Engine {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Engine{log: log.With("engine", Name)}
}

// Name implements core.Engine.
func (e *Engine) Name() string { return Name }

// Open implements core.Engine. With opts.Direct the file is opened O_DIRECT;
// when the filesystem refuses that (EINVAL), it is opened buffered and the
// fallback is logged and counted.
func (e *Engine) Open(path string, opts core.OpenOptions) (core.File, error) {
	flag := opts.Flag
	if opts.Direct {
		flag |= unix.O_DIRECT
	}
	f, err := os.OpenFile(path, flag, opts.Perm)
	if err != nil && opts.Direct && isEINVAL(err) {
		e.log.Warn("O_DIRECT refused by the filesystem, using buffered IO", "path", path, "err", err)
		e.stats.fallbacks.Add(1)
		f, err = os.OpenFile(path, opts.Flag, opts.Perm)
	}
	if err != nil {
		return nil, fmt.Errorf("psync: open %s: %w", path, err)
	}
	return NewFile(f, e), nil
}

// Stats implements core.Engine.
func (e *Engine) Stats() core.EngineStats {
	s := &e.stats
	return core.EngineStats{
		Reads: s.reads.Load(), Writes: s.writes.Load(),
		ReadBytes: s.readBytes.Load(), WriteBytes: s.writeBytes.Load(),
		Syncs: s.syncs.Load(), Submits: s.submits.Load(), SubmittedRequests: s.submits.Load(),
		MaxInFlight: uint64(s.maxInFlight.Load()), Fallbacks: s.fallbacks.Load(),
	}
}

// Close implements core.Engine. Files it opened stay usable until closed.
func (e *Engine) Close() error { return nil }

func isEINVAL(err error) bool {
	pe, ok := err.(*os.PathError)
	return ok && pe.Err == unix.EINVAL
}

// File is a local file served by a psync Engine.
type File struct {
	f      *os.File
	e      *Engine
	closed atomic.Bool
}

// NewFile wraps an open *os.File; IO is counted in e's statistics when e is
// not nil. The File owns f and closes it.
func NewFile(f *os.File, e *Engine) *File {
	if e == nil {
		e = New(core.EngineConfig{})
	}
	return &File{f: f, e: e}
}

func (f *File) begin() {
	s := &f.e.stats
	n := s.inFlight.Add(1)
	for {
		m := s.maxInFlight.Load()
		if n <= m || s.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	s.submits.Add(1)
}

func (f *File) end() { f.e.stats.inFlight.Add(-1) }

// ReadAt implements io.ReaderAt with pread.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if f.closed.Load() {
		return 0, core.ErrClosed
	}
	f.begin()
	n, err := f.f.ReadAt(p, off)
	f.end()
	f.e.stats.reads.Add(1)
	f.e.stats.readBytes.Add(uint64(n))
	return n, err
}

// WriteAt implements io.WriterAt with pwrite.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	if f.closed.Load() {
		return 0, core.ErrClosed
	}
	f.begin()
	n, err := f.f.WriteAt(p, off)
	f.end()
	f.e.stats.writes.Add(1)
	f.e.stats.writeBytes.Add(uint64(n))
	return n, err
}

// Batch implements core.BatchFile by performing the requests in order.
func (f *File) Batch(reqs []core.IORequest) error {
	if f.closed.Load() {
		return core.ErrClosed
	}
	for i := range reqs {
		r := &reqs[i]
		switch r.Op {
		case core.OpRead:
			r.N, r.Err = f.ReadAt(r.Buf, r.Off)
		case core.OpWrite:
			r.N, r.Err = f.WriteAt(r.Buf, r.Off)
		default:
			r.Err = fmt.Errorf("psync: op %d: %w", r.Op, core.ErrUnsupported)
		}
	}
	return nil
}

// Size returns the current size of the file.
func (f *File) Size() int64 {
	st, err := f.f.Stat()
	if err != nil {
		return 0
	}
	return st.Size()
}

// Sync implements core.File with fdatasync.
func (f *File) Sync() error {
	if f.closed.Load() {
		return core.ErrClosed
	}
	err := unix.Fdatasync(int(f.f.Fd()))
	f.e.stats.syncs.Add(1)
	if err != nil {
		return fmt.Errorf("psync: fdatasync %s: %w", f.f.Name(), err)
	}
	return nil
}

// Truncate changes the size of the file.
func (f *File) Truncate(size int64) error { return f.f.Truncate(size) }

// Fd returns the file descriptor, for operations the engine does not cover
// (fallocate, SEEK_DATA/SEEK_HOLE).
func (f *File) Fd() uintptr { return f.f.Fd() }

// Name returns the path the file was opened with.
func (f *File) Name() string { return f.f.Name() }

// Close implements core.File.
func (f *File) Close() error {
	if f.closed.Swap(true) {
		return nil
	}
	return f.f.Close()
}
