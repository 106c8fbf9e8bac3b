// Package fileengine is what every IO engine shares: opening files (with
// the fallback to buffered IO when O_DIRECT is refused), the aligned-buffer
// adaptor that lets O_DIRECT files serve requests of any alignment, EOF and
// short-transfer handling, close with IO in flight, and the counters. An
// engine supplies a Backend that moves requests between buffers and a file
// descriptor; everything above that is here, so the engines behave alike.
package fileengine

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/overlaybd-go/overlaybd/core"
	"golang.org/x/sys/unix"
)

// Backend performs the IO of an engine's files.
type Backend interface {
	// Attach prepares the open descriptor fd of the file called name for
	// IO and returns the handle its requests go through.
	Attach(fd int, name string) (Target, error)
	// Close releases the backend after waiting for the requests in flight.
	// Targets used afterwards fail with core.ErrClosed.
	Close() error
}

// Target submits the requests of one file.
type Target interface {
	// Submit performs every request and returns when all have completed,
	// each with N and Err set as the system call left them (a short
	// transfer is not an error; Err is the bare errno). Requests of one
	// submission may run in any order. An error return means none was
	// performed.
	Submit(reqs []core.IORequest) error
	// Sync makes completed writes durable (fdatasync).
	Sync() error
	// Detach releases what Attach prepared; the descriptor stays open.
	Detach() error
}

// BufferSource is implemented by Targets that lend their own aligned
// buffers (e.g. buffers registered with the kernel) for the bounce copies
// of O_DIRECT files. Buffer returns false when it has none of that size
// free; the File then uses an ordinary aligned buffer.
type BufferSource interface {
	Buffer(n int) ([]byte, bool)
	// Release takes back a buffer that Buffer returned.
	Release(b []byte)
	// Owns reports whether b was returned by Buffer.
	Owns(b []byte) bool
}

// Options tune an Engine.
type Options struct {
	// DirectByDefault opens every file O_DIRECT unless the caller asks for
	// core.OpenOptions.Buffered (upstream's libaio engine does this).
	DirectByDefault bool
}

// Engine is a core.Engine built from a Backend.
type Engine struct {
	name string
	log  *slog.Logger
	be   Backend
	opts Options
	c    *Counters

	mu     sync.Mutex
	closed bool
}

// New returns an engine called name that performs IO through be and
// counts it in c (a new set of counters when c is nil).
func New(name string, log *slog.Logger, be Backend, c *Counters, opts Options) *Engine {
	if log == nil {
		log = slog.Default()
	}
	if c == nil {
		c = new(Counters)
	}
	return &Engine{name: name, log: log, be: be, opts: opts, c: c}
}

// Name implements core.Engine.
func (e *Engine) Name() string { return e.name }

// Counters returns the engine's counters.
func (e *Engine) Counters() *Counters { return e.c }

// Stats implements core.Engine.
func (e *Engine) Stats() core.EngineStats { return e.c.Snapshot() }

// Logger returns the engine's logger.
func (e *Engine) Logger() *slog.Logger { return e.log }

// Open implements core.Engine.
func (e *Engine) Open(path string, opts core.OpenOptions) (core.File, error) {
	f, err := e.OpenFile(path, opts)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// OpenFile opens path as Open does and returns the concrete file. When
// O_DIRECT is wanted and the filesystem refuses it (EINVAL), the file is
// opened buffered, and the fallback is logged once and counted.
func (e *Engine) OpenFile(path string, opts core.OpenOptions) (*File, error) {
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("%s: open %s: %w", e.name, path, core.ErrClosed)
	}
	direct := (opts.Direct || e.opts.DirectByDefault) && !opts.Buffered
	flag := opts.Flag | unix.O_CLOEXEC
	if direct {
		flag |= unix.O_DIRECT
	}
	f, err := os.OpenFile(path, flag, opts.Perm)
	if err != nil && direct && errors.Is(err, unix.EINVAL) {
		e.log.Warn("O_DIRECT refused by the filesystem, falling back to buffered IO", "engine", e.name, "path", path, "err", err)
		e.c.Fallback()
		direct = false
		// With O_CREAT the refused open has already created the file (the
		// O_DIRECT check comes last), so O_EXCL would now fail: the file
		// did not exist before, or EEXIST would have come first.
		f, err = os.OpenFile(path, flag&^(unix.O_DIRECT|unix.O_EXCL), opts.Perm)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: open %s: %w", e.name, path, err)
	}
	file, err := e.Wrap(f, direct)
	if err != nil {
		f.Close()
		return nil, err
	}
	return file, nil
}

// Wrap makes an engine file of an open *os.File, which the File then owns.
// direct tells whether f was opened O_DIRECT.
func (e *Engine) Wrap(f *os.File, direct bool) (*File, error) {
	fd := int(f.Fd())
	t, err := e.be.Attach(fd, f.Name())
	if err != nil {
		return nil, fmt.Errorf("%s: attach %s: %w", e.name, f.Name(), err)
	}
	file := &File{e: e, f: f, fd: fd, t: t, direct: direct, name: f.Name()}
	file.bufs, _ = t.(BufferSource)
	if direct {
		st, err := f.Stat()
		if err != nil {
			t.Detach()
			return nil, fmt.Errorf("%s: stat %s: %w", e.name, f.Name(), err)
		}
		file.size.Store(st.Size())
	}
	return file, nil
}

// Close implements core.Engine: it waits for IO in flight and releases the
// backend. Files still open fail with core.ErrClosed afterwards.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	return e.be.Close()
}
