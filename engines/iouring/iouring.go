// Package iouring is an IO engine on Linux io_uring, written on
// golang.org/x/sys/unix without cgo. It has no upstream number; this
// project gives it ioEngine 3 (the C++ daemon rejects 3 and every name).
//
// One ring serves every file of an engine, and one issuer goroutine, owned
// by the engine and stopped by Close, drives it the way fio's single thread
// does: goroutines write their SQEs under a short lock and wait; the issuer
// submits everything queued and waits for a completion in one
// io_uring_enter, and completes one request per turn, letting the woken
// goroutine queue its next request before it enters again, so the queue
// stays full and submitting goroutines make no system call. At low depth,
// while the issuer is parked, a submitter instead submits and waits inside
// io_uring_enter itself, as a single-threaded program would. In-flight
// requests are bounded by the queue size, so the completion queue cannot
// overflow.
//
// Buffers handed to the kernel are pinned (runtime.Pinner) until their
// request completes. Files are registered in a sparse file table (fixed
// files) while there is room; Options.FixedBuffers registers a set of
// buffers that serve as the aligned bounce buffers of O_DIRECT files, so
// their reads and writes are IORING_OP_READ_FIXED/WRITE_FIXED. Engine
// creation probes the opcodes it needs. SQPOLL is not used: on small
// machines a kernel thread spinning on the queue costs more than it saves.
//
// When the kernel refuses io_uring (ENOSYS, EPERM under seccomp or
// kernel.io_uring_disabled, ENOMEM under a small RLIMIT_MEMLOCK, or missing
// opcodes), the registered factory
// returns the psync engine instead, with one log line and a counted
// fallback.
package iouring

import (
	"errors"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/engines/internal/fileengine"
	"golang.org/x/sys/unix"
)

// Name is the registry name of this engine.
const Name = "io_uring"

// Number is the ioEngine number this project gives the engine.
const Number = 3

func init() {
	core.Engines.Register(Name, Number, Factory)
}

// Options tune an io_uring engine.
type Options struct {
	// Entries is the size of the submission queue, which bounds the
	// requests in flight (rounded up to a power of two by the kernel).
	Entries int
	// FixedFiles is the size of the registered file table (0: none).
	FixedFiles int
	// FixedBuffers registers that many buffers of FixedBufferSize bytes
	// (default 256 KiB) as bounce buffers of O_DIRECT files (0: none).
	FixedBuffers, FixedBufferSize int
	// Direct opens every file O_DIRECT unless the caller asks for
	// core.OpenOptions.Buffered.
	Direct bool
}

// DefaultOptions are the options of engines made by the registry.
func DefaultOptions(cfg core.EngineConfig) Options {
	entries := cfg.QueueDepth
	if entries <= 0 {
		entries = 128
	}
	return Options{Entries: entries, FixedFiles: 256}
}

// Factory is the registered factory: an io_uring engine with the default
// options, or the psync engine when the kernel refuses io_uring.
func Factory(cfg core.EngineConfig) (core.Engine, error) {
	e, err := New(cfg, DefaultOptions(cfg))
	if err != nil {
		if Refused(err) {
			return fileengine.NewFallback(Name, err, cfg), nil
		}
		return nil, err
	}
	return e, nil
}

// Refused reports whether err means that this process cannot use io_uring:
// the kernel lacks it (ENOSYS, missing opcodes), forbids it (EPERM, EACCES:
// seccomp, kernel.io_uring_disabled) or will not lock the ring's memory
// (ENOMEM under a small RLIMIT_MEMLOCK on kernels before 5.12).
func Refused(err error) bool {
	return errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) ||
		errors.Is(err, unix.ENOMEM) || errors.Is(err, core.ErrUnsupported)
}

// Engine is an io_uring engine.
type Engine struct {
	*fileengine.Engine
	r *ring
}

// New returns an io_uring engine, or an error (wrapping the errno) when
// the kernel refuses to set one up.
func New(cfg core.EngineConfig, o Options) (*Engine, error) {
	if o.Entries <= 0 {
		o.Entries = 128
	}
	c := new(fileengine.Counters)
	r, err := newRing(o, c)
	if err != nil {
		return nil, err
	}
	return &Engine{
		Engine: fileengine.New(Name, cfg.Logger, r, c, fileengine.Options{DirectByDefault: o.Direct}),
		r:      r,
	}, nil
}

// Features returns what the kernel's io_uring offers and what the engine
// uses.
func (e *Engine) Features() Features { return e.r.features }
