package metrics

import (
	"context"
	"errors"
	"io"
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
// It returns c itself when m is nil and there are no observers.
func InstrumentCache(c core.Cache, m *Metrics, observers ...SourceReadObserver) core.Cache {
	if m == nil && len(observers) == 0 {
		return c
	}
	return &instrumentedCache{Cache: c, m: m, obs: observers}
}

type instrumentedCache struct {
	core.Cache
	m   *Metrics
	obs []SourceReadObserver
}

// Open opens src through the wrapped cache with both sides counted.
func (c *instrumentedCache) Open(ctx context.Context, src core.Source) (core.File, error) {
	f, err := c.Cache.Open(ctx, &observedSource{Source: src, meter: c.m.DownloadMeter(), obs: c.obs})
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

// Unwrap returns the wrapped source.
func (s *observedSource) Unwrap() core.Source { return s.Source }
