package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/overlaybd-go/overlaybd/core"
)

// CacheStatser is what a cache offers the exporter (core.Cache has it).
type CacheStatser interface {
	Stats() core.CacheStats
}

// EngineStatser is what an IO engine offers the exporter (core.Engine has
// it).
type EngineStatser interface {
	Stats() core.EngineStats
}

// RegistryCounts are a registry client's counters.
type RegistryCounts struct {
	// Requests counts HTTP requests sent, Retries retried attempts,
	// Errors requests that failed for good.
	Requests, Retries, Errors uint64
	// Bytes counts body bytes received.
	Bytes uint64
	// ErrorsByClass splits Errors by the kind of failure (class label,
	// e.g. http_4xx, http_5xx, transport, body, timeout, other); nil
	// exports no per-class series.
	ErrorsByClass map[string]uint64
}

// AddCache exports c's counters under cache=name.
func (m *Metrics) AddCache(name string, c CacheStatser) error {
	if m == nil {
		return nil
	}
	return m.reg.Register(&cacheCollector{name: name, c: c})
}

// AddEngine exports e's counters under engine=name.
func (m *Metrics) AddEngine(name string, e EngineStatser) error {
	if m == nil {
		return nil
	}
	return m.reg.Register(&engineCollector{name: name, e: e})
}

// AddRegistry exports a registry client's counters, read by stats at each
// scrape, under client=name.
func (m *Metrics) AddRegistry(name string, stats func() RegistryCounts) error {
	if m == nil {
		return nil
	}
	return m.reg.Register(&registryCollector{name: name, stats: stats})
}

func desc(name, help string, label string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, []string{label}, nil)
}

var (
	cacheHits      = desc("overlaybd_cache_hits_total", "Reads served from the cache.", "cache")
	cacheMisses    = desc("overlaybd_cache_misses_total", "Reads that fetched from the source.", "cache")
	cacheEvictions = desc("overlaybd_cache_evictions_total", "Entries or blocks evicted to honour the size bound.", "cache")
	cacheInval     = desc("overlaybd_cache_invalidations_total", "Entries or blocks dropped because they failed a check.", "cache")
	cacheFetched   = desc("overlaybd_cache_fetched_bytes_total", "Bytes read from sources.", "cache")
	cacheServed    = desc("overlaybd_cache_served_bytes_total", "Bytes returned to readers.", "cache")
	cacheStoreFail = desc("overlaybd_cache_store_failures_total", "Fetched ranges the cache could not keep (full disk, failed writes); served from the source.", "cache")
	cacheUsed      = desc("overlaybd_cache_used_bytes", "Space the cache occupies.", "cache")
	cacheCapacity  = desc("overlaybd_cache_capacity_bytes", "Space the cache may occupy.", "cache")

	engReads     = desc("overlaybd_engine_reads_total", "Read requests completed by the IO engine.", "engine")
	engWrites    = desc("overlaybd_engine_writes_total", "Write requests completed by the IO engine.", "engine")
	engReadB     = desc("overlaybd_engine_read_bytes_total", "Bytes read by the IO engine.", "engine")
	engWriteB    = desc("overlaybd_engine_written_bytes_total", "Bytes written by the IO engine.", "engine")
	engSyncs     = desc("overlaybd_engine_syncs_total", "fsync/fdatasync calls completed.", "engine")
	engSubmits   = desc("overlaybd_engine_submits_total", "Submissions to the kernel.", "engine")
	engFallbacks = desc("overlaybd_engine_fallbacks_total", "Files or engines that fell back to a simpler path.", "engine")

	regRequests = desc("overlaybd_registry_requests_total", "HTTP requests sent to registries.", "client")
	regRetries  = desc("overlaybd_registry_retries_total", "Retried registry requests.", "client")
	regErrors   = desc("overlaybd_registry_errors_total", "Registry requests that failed for good.", "client")
	regBytes    = desc("overlaybd_registry_received_bytes_total", "Body bytes received from registries.", "client")
	regErrClass = prometheus.NewDesc("overlaybd_registry_errors_by_class_total",
		"Registry requests that failed for good, by the kind of failure that ended them.", []string{"client", "class"}, nil)
)

type cacheCollector struct {
	name string
	c    CacheStatser
}

func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{cacheHits, cacheMisses, cacheEvictions, cacheInval, cacheFetched, cacheServed, cacheStoreFail, cacheUsed, cacheCapacity} {
		ch <- d
	}
}

func (c *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.c.Stats()
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), c.name)
	}
	counter(cacheHits, s.Hits)
	counter(cacheMisses, s.Misses)
	counter(cacheEvictions, s.Evictions)
	counter(cacheInval, s.Invalidations)
	counter(cacheFetched, s.FetchedBytes)
	counter(cacheServed, s.ServedBytes)
	counter(cacheStoreFail, s.StoreFailures)
	ch <- prometheus.MustNewConstMetric(cacheUsed, prometheus.GaugeValue, float64(s.UsedBytes), c.name)
	ch <- prometheus.MustNewConstMetric(cacheCapacity, prometheus.GaugeValue, float64(s.CapacityBytes), c.name)
}

type engineCollector struct {
	name string
	e    EngineStatser
}

func (c *engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{engReads, engWrites, engReadB, engWriteB, engSyncs, engSubmits, engFallbacks} {
		ch <- d
	}
}

func (c *engineCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.e.Stats()
	for _, x := range []struct {
		d *prometheus.Desc
		v uint64
	}{{engReads, s.Reads}, {engWrites, s.Writes}, {engReadB, s.ReadBytes}, {engWriteB, s.WriteBytes}, {engSyncs, s.Syncs}, {engSubmits, s.Submits}, {engFallbacks, s.Fallbacks}} {
		ch <- prometheus.MustNewConstMetric(x.d, prometheus.CounterValue, float64(x.v), c.name)
	}
}

type registryCollector struct {
	name  string
	stats func() RegistryCounts
}

func (c *registryCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{regRequests, regRetries, regErrors, regBytes, regErrClass} {
		ch <- d
	}
}

func (c *registryCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	for _, x := range []struct {
		d *prometheus.Desc
		v uint64
	}{{regRequests, s.Requests}, {regRetries, s.Retries}, {regErrors, s.Errors}, {regBytes, s.Bytes}} {
		ch <- prometheus.MustNewConstMetric(x.d, prometheus.CounterValue, float64(x.v), c.name)
	}
	for class, v := range s.ErrorsByClass {
		ch <- prometheus.MustNewConstMetric(regErrClass, prometheus.CounterValue, float64(v), c.name, class)
	}
}
