package metrics

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"github.com/overlaybd-go/overlaybd/core"
)

// SourceReadObserver is told about every read a cache makes from its source
// (a registry blob): cache misses, refills and bypasses. audit.Log
// implements it to write upstream's "download" events.
type SourceReadObserver interface {
	ObserveSourceRead(src core.Source, off int64, n int, latency time.Duration, err error)
}

// InstrumentCache returns c with its traffic counted, for daemons that give
// the result to whatever opens remote layers: every File the cache opens
// counts its reads in upstream's "pread" set, every read the cache makes from
// its source counts in the "download" set and is reported to the observers.
// An observer that is also a core.Auditor (audit.Log) becomes the auditor
// of c when c is a core.AuditedCache, so that the cache's own events
// (file:read, file:write, eviction) reach the same audit log; the result is
// then a core.AuditedCache too, for the background downloads' events. It
// returns c itself when m is nil and there are no observers.
func InstrumentCache(c core.Cache, m *Metrics, observers ...SourceReadObserver) core.Cache {
	if m == nil && len(observers) == 0 {
		return c
	}
	ic := &instrumentedCache{Cache: c, m: m, obs: observers}
	for _, o := range observers {
		if a, ok := o.(core.Auditor); ok {
			ic.SetAuditor(a)
			break
		}
	}
	return ic
}

type instrumentedCache struct {
	core.Cache
	m     *Metrics
	obs   []SourceReadObserver
	audit atomic.Pointer[auditorBox]
}

type auditorBox struct{ a core.Auditor }

// SetAuditor installs a on the wrapped cache (when it records audit
// events) and remembers it for Auditor.
func (c *instrumentedCache) SetAuditor(a core.Auditor) {
	if ac, ok := c.Cache.(core.AuditedCache); ok {
		ac.SetAuditor(a)
	}
	if a == nil {
		c.audit.Store(nil)
		return
	}
	c.audit.Store(&auditorBox{a})
}

// Auditor returns the auditor installed (nil: none).
func (c *instrumentedCache) Auditor() core.Auditor {
	if b := c.audit.Load(); b != nil {
		return b.a
	}
	return nil
}

// Open opens src through the wrapped cache with both sides counted.
func (c *instrumentedCache) Open(ctx context.Context, src core.Source) (core.File, error) {
	var os core.Source = &observedSource{Source: src, meter: c.m.DownloadMeter(), obs: c.obs}
	if ld, ok := src.(core.LayerDirSource); ok {
		// The download cache keeps its file in the layer's directory.
		os = layerDirSource{os, ld.LayerDir()}
	}
	f, err := c.Cache.Open(ctx, os)
	if err != nil {
		return nil, err
	}
	return MeterFile(f, c.m.PreadMeter()), nil
}

// observedSource counts and reports the reads of a source.
type observedSource struct {
	core.Source
	meter *Meter
	obs   []SourceReadObserver
}

func (s *observedSource) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	var ms time.Time
	if s.meter != nil {
		ms = s.meter.Start()
	}
	start := time.Now()
	n, err := s.Source.ReadAtContext(ctx, p, off)
	lat := time.Since(start)
	if s.meter != nil {
		merr := err
		if errors.Is(err, io.EOF) {
			merr = nil
		}
		s.meter.Done(ms, n, merr)
	}
	for _, o := range s.obs {
		o.ObserveSourceRead(s.Source, off, n, lat, err)
	}
	return n, err
}

// layerDirSource keeps a wrapped source's layer directory visible.
type layerDirSource struct {
	core.Source
	dir string
}

func (s layerDirSource) LayerDir() string { return s.dir }

// Unwrap returns the wrapped source.
func (s *observedSource) Unwrap() core.Source { return s.Source }

// Invalidate passes an invalidation to the wrapped source when it takes
// one (a registry blob drops its read-ahead data of the range).
func (s *observedSource) Invalidate(off, length int64) error {
	if inv, ok := s.Source.(core.Invalidator); ok {
		return inv.Invalidate(off, length)
	}
	return nil
}
