// Package metrics is overlaybd's Prometheus exporter (exporterConfig).
//
// The endpoint serves, first, upstream overlaybd's text (OverlayBD_Alive,
// OverlayBD_Read_Throughtput, OverlayBD_QPS, OverlayBD_MaxLatency,
// OverlayBD_Count for the "pread" and "download" sets, with upstream's
// spelling, labels and formatting) so that existing dashboards keep working,
// then this project's client_golang metrics (all named overlaybd_*):
// per-device IO bytes, operations, errors and latency histograms, cache,
// engine and registry-client counters read from the components, download
// progress, CRC failures and plugin restarts.
//
// Components are instrumented through a Metrics value: WrapFile counts a
// device's IO, PreadMeter and DownloadMeter are upstream's two sets, the
// Add* methods register collectors that read components' own counters, and
// the Inc*/Set* methods count events. A nil *Metrics is valid and counts
// nothing, so components need not check whether the exporter is enabled.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/overlaybd-go/overlaybd/core"
)

// Metrics holds every metric a daemon exports.
type Metrics struct {
	reg *prometheus.Registry

	pread, download Meter

	devBytes   *prometheus.CounterVec
	devOps     *prometheus.CounterVec
	devErrors  *prometheus.CounterVec
	devLatency *prometheus.HistogramVec

	crcFailures    *prometheus.CounterVec
	pluginRestarts *prometheus.CounterVec
	progress       *prometheus.GaugeVec
	progressTotal  *prometheus.GaugeVec
}

// New returns a Metrics with its own Prometheus registry, holding the Go
// runtime and process collectors.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.devBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "overlaybd_device_bytes_total",
		Help: "Bytes read or written through a device.",
	}, []string{"device", "op"})
	m.devOps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "overlaybd_device_requests_total",
		Help: "Requests served by a device, by operation (read, write, sync, discard, write_zeroes).",
	}, []string{"device", "op"})
	m.devErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "overlaybd_device_errors_total",
		Help: "Requests of a device that failed, by operation.",
	}, []string{"device", "op"})
	m.devLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "overlaybd_device_request_duration_seconds",
		Help:    "Duration of a device's requests, by operation.",
		Buckets: prometheus.ExponentialBuckets(10e-6, 4, 10), // 10 µs .. 2.6 s
	}, []string{"device", "op"})
	m.crcFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "overlaybd_crc_failures_total",
		Help: "Blocks whose checksum did not match, by component.",
	}, []string{"component"})
	m.pluginRestarts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "overlaybd_plugin_restarts_total",
		Help: "Codec plugin processes restarted after a failure, by plugin.",
	}, []string{"plugin"})
	m.progress = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "overlaybd_download_progress_bytes",
		Help: "Bytes of a layer downloaded by background download.",
	}, []string{"layer"})
	m.progressTotal = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "overlaybd_download_size_bytes",
		Help: "Size of a layer being downloaded by background download.",
	}, []string{"layer"})
	m.reg.MustRegister(m.devBytes, m.devOps, m.devErrors, m.devLatency,
		m.crcFailures, m.pluginRestarts, m.progress, m.progressTotal,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&upstreamCollector{m: m})
	return m
}

// Registry returns the Prometheus registry, to register more collectors.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// PreadMeter returns upstream's "pread" set: every read through the
// remote-layer cache. Nil when m is nil (a nil *Meter is not usable; use
// MeterStart/MeterDone or check).
func (m *Metrics) PreadMeter() *Meter {
	if m == nil {
		return nil
	}
	return &m.pread
}

// DownloadMeter returns upstream's "download" set: every read issued to the
// registry client.
func (m *Metrics) DownloadMeter() *Meter {
	if m == nil {
		return nil
	}
	return &m.download
}

// MeterFile wraps f (a remote layer's file) so that every ReadAt counts in
// meter. It returns f itself when meter is nil.
func MeterFile(f core.File, meter *Meter) core.File {
	if meter == nil {
		return f
	}
	return wrap(&File{File: f, meter: meter})
}

// IncCRCFailure counts a block whose checksum did not match in component
// (e.g. "zfile", "cache").
func (m *Metrics) IncCRCFailure(component string) {
	if m != nil {
		m.crcFailures.WithLabelValues(component).Inc()
	}
}

// IncPluginRestart counts a restart of plugin.
func (m *Metrics) IncPluginRestart(plugin string) {
	if m != nil {
		m.pluginRestarts.WithLabelValues(plugin).Inc()
	}
}

// SetDownloadProgress records that done of total bytes of layer have been
// downloaded in the background.
func (m *Metrics) SetDownloadProgress(layer string, done, total int64) {
	if m != nil {
		m.progress.WithLabelValues(layer).Set(float64(done))
		m.progressTotal.WithLabelValues(layer).Set(float64(total))
	}
}

// DeleteDownloadProgress drops layer's progress series (download finished
// or device closed).
func (m *Metrics) DeleteDownloadProgress(layer string) {
	if m != nil {
		m.progress.DeleteLabelValues(layer)
		m.progressTotal.DeleteLabelValues(layer)
	}
}

// DeleteDevice drops a closed device's series.
func (m *Metrics) DeleteDevice(device string) {
	if m == nil {
		return
	}
	l := prometheus.Labels{"device": device}
	m.devBytes.DeletePartialMatch(l)
	m.devOps.DeletePartialMatch(l)
	m.devErrors.DeletePartialMatch(l)
	m.devLatency.DeletePartialMatch(l)
}

// upstreamCollector exports upstream's two meter sets also as proper
// Prometheus metrics.
type upstreamCollector struct{ m *Metrics }

var (
	descUpBytes = prometheus.NewDesc("overlaybd_remote_read_bytes_total",
		"Bytes returned by reads of upstream's sets: pread (through the remote-layer cache) and download (from the registry client).", []string{"set"}, nil)
	descUpMaxLat = prometheus.NewDesc("overlaybd_remote_read_max_latency_seconds",
		"Largest read duration of the current or previous 5 s interval.", []string{"set"}, nil)
)

func (c *upstreamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descUpBytes
	ch <- descUpMaxLat
}

func (c *upstreamCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range []struct {
		name string
		m    *Meter
	}{{"pread", &c.m.pread}, {"download", &c.m.download}} {
		v := s.m.Values()
		ch <- prometheus.MustNewConstMetric(descUpBytes, prometheus.CounterValue, float64(v.Count), s.name)
		ch <- prometheus.MustNewConstMetric(descUpMaxLat, prometheus.GaugeValue, float64(v.MaxLatencyUS)*float64(time.Microsecond)/float64(time.Second), s.name)
	}
}
