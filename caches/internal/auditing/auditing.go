// Package auditing holds the auditor of a cache: installed at any time,
// read on every IO without a lock, and a no-op when none is installed.
package auditing

import (
	"sync/atomic"
	"time"

	"github.com/overlaybd-go/overlaybd/core"
)

// Hook is a cache's auditor slot. The zero value has no auditor.
type Hook struct {
	p atomic.Pointer[box]
}

type box struct{ a core.Auditor }

// Set installs a (nil removes the auditor).
func (h *Hook) Set(a core.Auditor) {
	if a == nil {
		h.p.Store(nil)
		return
	}
	h.p.Store(&box{a})
}

// Get returns the installed auditor or nil.
func (h *Hook) Get() core.Auditor {
	if b := h.p.Load(); b != nil {
		return b.a
	}
	return nil
}

// Start returns the time an IO starts when an auditor is installed, and the
// zero time (no clock read) otherwise.
func (h *Hook) Start() time.Time {
	if h.p.Load() == nil {
		return time.Time{}
	}
	return time.Now()
}

// IO records an IO event that started at start (from Start); it does
// nothing when start is zero or no auditor is installed.
func (h *Hook) IO(event, pathname string, off, size int64, start time.Time) {
	if start.IsZero() {
		return
	}
	if a := h.Get(); a != nil {
		a.IO(event, pathname, off, size, time.Since(start))
	}
}

// Eviction records an eviction run when an auditor is installed.
func (h *Hook) Eviction(actual, byCache, byDisk, used int64) {
	if a := h.Get(); a != nil {
		a.Eviction(actual, byCache, byDisk, used)
	}
}
