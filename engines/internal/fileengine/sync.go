package fileengine

import (
	"fmt"
	"sync"

	"github.com/overlaybd-go/overlaybd/core"
	"golang.org/x/sys/unix"
)

// SyncBackend performs every request with pread/pwrite on the calling
// goroutine, one after the other (the psync engine, and the fallback of the
// asynchronous engines).
type SyncBackend struct {
	c *Counters

	mu     sync.RWMutex // held shared by submissions, exclusively by Close
	closed bool
}

// NewSyncBackend returns a SyncBackend that counts in c.
func NewSyncBackend(c *Counters) *SyncBackend { return &SyncBackend{c: c} }

// Attach implements Backend.
func (b *SyncBackend) Attach(fd int, name string) (Target, error) {
	return &syncTarget{b: b, fd: fd}, nil
}

// Close implements Backend.
func (b *SyncBackend) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

type syncTarget struct {
	b  *SyncBackend
	fd int
}

// PerformSync does one request with pread/pwrite, setting N and Err.
func PerformSync(fd int, r *core.IORequest) {
	var n int
	var err error
	if r.Op == core.OpWrite {
		n, err = unix.Pwrite(fd, r.Buf, r.Off)
	} else {
		n, err = unix.Pread(fd, r.Buf, r.Off)
	}
	if err != nil {
		n = 0
	}
	r.N, r.Err = n, err
}

// Submit implements Target.
func (t *syncTarget) Submit(reqs []core.IORequest) error {
	t.b.mu.RLock()
	defer t.b.mu.RUnlock()
	if t.b.closed {
		return fmt.Errorf("engine: %w", core.ErrClosed)
	}
	c := t.b.c
	for i := range reqs {
		c.Submitted(1)
		c.Begin(1)
		PerformSync(t.fd, &reqs[i])
		c.End(1)
	}
	return nil
}

// Sync implements Target.
func (t *syncTarget) Sync() error {
	t.b.mu.RLock()
	defer t.b.mu.RUnlock()
	if t.b.closed {
		return fmt.Errorf("engine: %w", core.ErrClosed)
	}
	return unix.Fdatasync(t.fd)
}

// Detach implements Target.
func (t *syncTarget) Detach() error { return nil }

// NewFallback returns a psync engine that stands in for the engine called
// from, which could not start because of reason: it logs one line saying so
// and counts the fallback.
func NewFallback(from string, reason error, cfg core.EngineConfig) *Engine {
	c := new(Counters)
	c.Fallback()
	e := New("psync", cfg.Logger, NewSyncBackend(c), c, Options{})
	e.log.Warn(from+" is not available, falling back to psync", "engine", from, "err", reason)
	return e
}
