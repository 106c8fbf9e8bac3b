// Package posixaio is upstream's ioEngine 2 (POSIX AIO, which glibc serves
// with a pool of threads): requests are handed to a bounded pool of worker
// goroutines that perform them with pread/pwrite, so the requests of one
// batch, and of many goroutines, run concurrently up to the pool's size.
//
// The workers belong to the engine: New starts them and Close stops them
// after the submissions in flight have completed.
package posixaio

import (
	"fmt"
	"sync"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/engines/internal/fileengine"
	"golang.org/x/sys/unix"
)

// Name is the registry name of this engine.
const Name = "posixaio"

// Number is upstream's ioEngine number of this engine.
const Number = 2

// DefaultWorkers is the size of the worker pool when the configuration's
// QueueDepth does not say.
const DefaultWorkers = 16

func init() {
	core.Engines.Register(Name, Number, func(cfg core.EngineConfig) (core.Engine, error) { return New(cfg), nil })
}

// Engine serves IO from a pool of worker goroutines.
type Engine struct {
	*fileengine.Engine
	be *backend
}

// New returns an engine with cfg.QueueDepth workers (DefaultWorkers when
// 0).
func New(cfg core.EngineConfig) *Engine {
	n := cfg.QueueDepth
	if n <= 0 {
		n = DefaultWorkers
	}
	c := new(fileengine.Counters)
	be := &backend{c: c, work: make(chan task, n), workers: n}
	be.wg.Add(n)
	for range n {
		go be.worker()
	}
	return &Engine{Engine: fileengine.New(Name, cfg.Logger, be, c, fileengine.Options{}), be: be}
}

// Workers returns the size of the pool.
func (e *Engine) Workers() int { return e.be.workers }

type task struct {
	fd   int
	req  *core.IORequest
	done *fileengine.Waiter
}

type backend struct {
	c       *fileengine.Counters
	work    chan task
	workers int
	wg      sync.WaitGroup

	mu     sync.RWMutex // shared by submissions, exclusive in Close
	closed bool
}

func (b *backend) worker() {
	defer b.wg.Done()
	for t := range b.work {
		b.c.Begin(1)
		fileengine.PerformSync(t.fd, t.req)
		b.c.End(1)
		t.done.Done()
	}
}

// Attach implements fileengine.Backend.
func (b *backend) Attach(fd int, name string) (fileengine.Target, error) {
	return &target{b: b, fd: fd}, nil
}

// Close waits for the submissions in flight and stops the workers.
func (b *backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	close(b.work)
	b.wg.Wait()
	return nil
}

type target struct {
	b  *backend
	fd int
}

// Submit implements fileengine.Target.
func (t *target) Submit(reqs []core.IORequest) error {
	if len(reqs) == 0 {
		return nil
	}
	b := t.b
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return fmt.Errorf("posixaio: %w", core.ErrClosed)
	}
	b.c.Submitted(len(reqs))
	done := fileengine.NewWaiter(len(reqs))
	for i := range reqs {
		b.work <- task{fd: t.fd, req: &reqs[i], done: done}
	}
	done.Wait()
	return nil
}

// Sync implements fileengine.Target.
func (t *target) Sync() error {
	t.b.mu.RLock()
	defer t.b.mu.RUnlock()
	if t.b.closed {
		return fmt.Errorf("posixaio: %w", core.ErrClosed)
	}
	return unix.Fdatasync(t.fd)
}

// Detach implements fileengine.Target.
func (t *target) Detach() error { return nil }
