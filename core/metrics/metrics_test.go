package metrics

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/engines/psync"
)

// fakeClock is a settable clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// TestUpstreamTextKnownWorkload runs a known workload on both sets with a
// controlled clock and compares the whole exposition with spec §11.1.
func TestUpstreamTextKnownWorkload(t *testing.T) {
	m := New()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	m.pread.now, m.download.now = clk.now, clk.now

	// Second 1000: 3 pread calls of 4096 bytes (one takes 1500 µs), one
	// failing call; 1 download call of 1 MiB taking 20 ms.
	for i := range 3 {
		s := m.pread.Start()
		clk.t = clk.t.Add(time.Duration(100+700*i) * time.Microsecond) // 100, 800, 1500
		m.pread.Done(s, 4096, nil)
	}
	s := m.pread.Start()
	m.pread.Done(s, 0, errors.New("boom"))
	s = m.download.Start()
	clk.t = clk.t.Add(20 * time.Millisecond)
	m.download.Done(s, 1<<20, nil)
	// Second 1001, a quarter in: the previous second weighs 3/4.
	clk.t = time.Unix(1001, int64(250*time.Millisecond))
	s = m.pread.Start()
	m.pread.Done(s, 512, nil)

	got := string(m.AppendUpstream(nil, "host1", 123456))
	want := "# HELP OverlayBD_Alive \n" +
		"# TYPE OverlayBD_Alive gauge\n" +
		"OverlayBD_Alive{node=\"host1\"}  1.000000 123456\n" +
		"\n" +
		"# HELP OverlayBD_Read_Throughtput Bytes / sec\n" +
		"# TYPE OverlayBD_Read_Throughtput gauge\n" +
		"OverlayBD_Read_Throughtput{node=\"pread\",type=\"\",mode=\"\"}  9728.000000 123456\n" + // 12288*0.75 + 512
		"OverlayBD_Read_Throughtput{node=\"download\",type=\"\",mode=\"\"}  786432.000000 123456\n" +
		"\n" +
		"# HELP OverlayBD_QPS \n" +
		"# TYPE OverlayBD_QPS gauge\n" +
		"OverlayBD_QPS{node=\"pread\",type=\"\",mode=\"\"}  4.000000 123456\n" + // 4*0.75 + 1
		"OverlayBD_QPS{node=\"download\",type=\"\",mode=\"\"}  0.750000 123456\n" +
		"\n" +
		"# HELP OverlayBD_MaxLatency us\n" +
		"# TYPE OverlayBD_MaxLatency gauge\n" +
		"OverlayBD_MaxLatency{node=\"pread\",type=\"\",mode=\"\"}  1500.000000 123456\n" +
		"OverlayBD_MaxLatency{node=\"download\",type=\"\",mode=\"\"}  20000.000000 123456\n" +
		"\n" +
		"# HELP OverlayBD_Count Bytes\n" +
		"# TYPE OverlayBD_Count gauge\n" +
		"OverlayBD_Count{node=\"pread\",type=\"\"}  12800.000000 123456\n" +
		"OverlayBD_Count{node=\"download\",type=\"\"}  1048576.000000 123456\n" +
		"\n"
	if got != want {
		t.Errorf("upstream text:\n%s\nwant:\n%s", got, want)
	}

	// Ten seconds later nothing happened: rates and latency are back to 0,
	// the count stays.
	clk.t = clk.t.Add(10 * time.Second)
	v := m.pread.Values()
	if v.QPS != 0 || v.Throughput != 0 || v.MaxLatencyUS != 0 || v.Count != 12800 {
		t.Errorf("idle values %+v", v)
	}
}

func TestMaxLatencyKeepsPreviousInterval(t *testing.T) {
	var m Meter
	clk := &fakeClock{t: time.Unix(100, 0)} // interval [100,105)
	m.now = clk.now
	s := m.Start()
	clk.t = clk.t.Add(7 * time.Millisecond)
	m.Done(s, 1, nil)
	clk.t = time.Unix(106, 0) // next interval: previous still counts
	if v := m.Values().MaxLatencyUS; v != 7000 {
		t.Errorf("next interval: %d", v)
	}
	clk.t = time.Unix(111, 0) // two intervals on: forgotten
	if v := m.Values().MaxLatencyUS; v != 0 {
		t.Errorf("two intervals on: %d", v)
	}
}

// scrape fetches the endpoint and parses it as Prometheus text.
func scrape(t *testing.T, url string) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ContentType {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse scrape: %v\n%s", err, body)
	}
	return mfs, string(body)
}

// value returns the value of the sample of family name whose labels include
// want.
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	mf := mfs[name]
	if mf == nil {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range mf.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			return m.Untyped.GetValue()
		}
	}
	t.Fatalf("no sample of %s with %v", name, want)
	return 0
}

type fakeCache struct{ s core.CacheStats }

func (c *fakeCache) Stats() core.CacheStats { return c.s }

// TestScrapeWhileIO runs IO through a metrics-wrapped psync file while the
// exporter is scraped over HTTP, and checks that the metrics move as the IO
// says.
func TestScrapeWhileIO(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g := config.DefaultGlobal()
	g.ExporterConfig = config.ExporterConfig{Enable: true, URIPrefix: "/metrics", Port: 0, Address: "127.0.0.1"}
	e, err := Start(ctx, g, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	m := e.Metrics()
	url := "http://" + e.Addr().String() + "/metrics"

	eng := psync.New(core.EngineConfig{})
	defer eng.Close()
	raw, err := eng.Open(filepath.Join(t.TempDir(), "dev.img"), core.OpenOptions{Flag: os.O_RDWR | os.O_CREATE, Perm: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.AddEngine("psync", eng); err != nil {
		t.Fatal(err)
	}
	cache := &fakeCache{s: core.CacheStats{Hits: 7, Misses: 2, Evictions: 1, UsedBytes: 4096}}
	if err := m.AddCache("file", cache); err != nil {
		t.Fatal(err)
	}
	var regReq uint64 = 5
	if err := m.AddRegistry("v2", func() RegistryCounts { return RegistryCounts{Requests: regReq, Retries: 1, Errors: 1} }); err != nil {
		t.Fatal(err)
	}
	dev := m.WrapFile("vda", raw)
	remote := MeterFile(raw, m.PreadMeter())
	if _, ok := dev.(core.Discarder); ok != isDiscarder(raw) {
		t.Errorf("wrapper's Discarder %v, file's %v", ok, isDiscarder(raw))
	}

	const (
		block  = 64 << 10
		writes = 40
		reads  = 30
	)
	buf := bytes.Repeat([]byte{0xa5}, block)
	// IO runs in a goroutine while scrapes happen.
	var wg sync.WaitGroup
	scraped := make(chan struct{})
	wg.Go(func() {
		for i := range writes {
			if _, err := dev.WriteAt(buf, int64(i)*block); err != nil {
				t.Error(err)
				return
			}
			if i == writes/2 {
				close(scraped)
			}
		}
		if err := dev.Sync(); err != nil {
			t.Error(err)
		}
	})
	<-scraped
	mid, _ := scrape(t, url) // while writing
	wg.Wait()
	mfs, _ := scrape(t, url)
	if w := value(t, mid, "overlaybd_device_bytes_total", map[string]string{"device": "vda", "op": "write"}); w < block || w > writes*block {
		t.Errorf("mid-run written bytes %v", w)
	}
	if w := value(t, mfs, "overlaybd_device_bytes_total", map[string]string{"device": "vda", "op": "write"}); w != writes*block {
		t.Errorf("written bytes %v, want %d", w, writes*block)
	}

	rb := make([]byte, block)
	for i := range reads {
		if _, err := dev.ReadAt(rb, int64(i)*block); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(rb, buf) {
			t.Fatal("read back differs")
		}
	}
	// A read at the end returns io.EOF: bytes count, no error.
	if n, err := dev.ReadAt(rb, writes*block-100); n != 100 || err != io.EOF {
		t.Fatalf("tail read %d %v", n, err)
	}
	for i := range 3 {
		if _, err := remote.ReadAt(rb[:4096], int64(i)*4096); err != nil {
			t.Fatal(err)
		}
	}
	m.IncCRCFailure("zfile")
	m.IncPluginRestart("lz4x")
	m.SetDownloadProgress("sha256:ab", 300, 1000)
	cache.s.Misses, regReq = 3, 6

	mfs, body := scrape(t, url)
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"overlaybd_device_bytes_total", map[string]string{"device": "vda", "op": "read"}, reads*block + 100},
		{"overlaybd_device_requests_total", map[string]string{"device": "vda", "op": "read"}, reads + 1},
		{"overlaybd_device_requests_total", map[string]string{"device": "vda", "op": "write"}, writes},
		{"overlaybd_device_requests_total", map[string]string{"device": "vda", "op": "sync"}, 1},
		{"overlaybd_device_request_duration_seconds", map[string]string{"device": "vda", "op": "read"}, reads + 1},
		{"overlaybd_engine_written_bytes_total", map[string]string{"engine": "psync"}, writes * block},
		{"overlaybd_engine_read_bytes_total", map[string]string{"engine": "psync"}, reads*block + 100 + 3*4096},
		{"overlaybd_cache_hits_total", map[string]string{"cache": "file"}, 7},
		{"overlaybd_cache_misses_total", map[string]string{"cache": "file"}, 3},
		{"overlaybd_cache_evictions_total", map[string]string{"cache": "file"}, 1},
		{"overlaybd_registry_requests_total", map[string]string{"client": "v2"}, 6},
		{"overlaybd_registry_retries_total", map[string]string{"client": "v2"}, 1},
		{"overlaybd_crc_failures_total", map[string]string{"component": "zfile"}, 1},
		{"overlaybd_plugin_restarts_total", map[string]string{"plugin": "lz4x"}, 1},
		{"overlaybd_download_progress_bytes", map[string]string{"layer": "sha256:ab"}, 300},
		{"overlaybd_remote_read_bytes_total", map[string]string{"set": "pread"}, 3 * 4096},
		{"OverlayBD_Count", map[string]string{"node": "pread"}, 3 * 4096},
		{"OverlayBD_Count", map[string]string{"node": "download"}, 0},
		{"OverlayBD_Alive", nil, 1},
	}
	for _, c := range checks {
		if got := value(t, mfs, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if q := value(t, mfs, "OverlayBD_QPS", map[string]string{"node": "pread"}); q <= 0 || q > 3 {
		t.Errorf("pread QPS %v, want in (0,3]", q)
	}
	if !strings.HasPrefix(body, "# HELP OverlayBD_Alive \n# TYPE OverlayBD_Alive gauge\nOverlayBD_Alive{node=\"") {
		t.Errorf("body does not start with upstream's text:\n%.300s", body)
	}
	if n := value(t, mfs, "overlaybd_device_errors_total", map[string]string{"device": "vda", "op": "read"}); n != 0 {
		t.Errorf("EOF counted as error: %v", n)
	}

	// Prefix match: any path under the prefix; others are 404.
	for path, code := range map[string]int{"/metrics/x": 200, "/metricsfoo": 200, "/other": 404} {
		resp, err := http.Post("http://"+e.Addr().String()+path, "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != code {
			t.Errorf("%s: %d, want %d", path, resp.StatusCode, code)
		}
	}

	m.DeleteDevice("vda")
	mfs, _ = scrape(t, url)
	if mf := mfs["overlaybd_device_bytes_total"]; mf != nil && len(mf.Metric) > 0 {
		t.Errorf("device series remain after DeleteDevice")
	}
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := e.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if _, err := http.Get(url); err == nil {
		t.Error("exporter still serving after cancel")
	}
}

func isDiscarder(f core.File) bool { _, ok := f.(core.Discarder); return ok }

func TestStartDisabledAndBindFailure(t *testing.T) {
	g := config.DefaultGlobal()
	e, err := Start(context.Background(), g, nil)
	if e != nil || err != nil {
		t.Fatalf("disabled: %v %v", e, err)
	}
	if e.Metrics() != nil || e.Close() != nil {
		t.Fatal("nil exporter not inert")
	}
	var nm *Metrics
	f := nm.WrapFile("x", nil)
	if f != nil {
		t.Fatal("nil Metrics wrapped a file")
	}
	nm.IncCRCFailure("x")

	ln, err := Listen(context.Background(), "127.0.0.1:0", "/metrics", New(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// Same port, another prefix, no SO_REUSEPORT conflict expected; a bad
	// address must fail.
	if _, err := Listen(context.Background(), "256.0.0.1:1", "/", New(), nil); err == nil || !strings.Contains(err.Error(), "metrics exporter") {
		t.Errorf("bad address: %v", err)
	}
}

// wrapped files keep exactly the optional interfaces of the file they wrap.
type onlyZero struct{ core.File }

func (onlyZero) WriteZeroes(off, length int64) error { return nil }

func TestWrapKeepsInterfaces(t *testing.T) {
	m := New()
	f := m.WrapFile("d", onlyZero{})
	if _, ok := f.(core.ZeroWriter); !ok {
		t.Error("ZeroWriter lost")
	}
	for name, ok := range map[string]bool{
		"Discarder":     func() bool { _, ok := f.(core.Discarder); return ok }(),
		"BlockStatuser": func() bool { _, ok := f.(core.BlockStatuser); return ok }(),
		"BatchFile":     func() bool { _, ok := f.(core.BatchFile); return ok }(),
	} {
		if ok {
			t.Errorf("%s gained", name)
		}
	}
	if err := f.(core.ZeroWriter).WriteZeroes(0, 8192); err != nil {
		t.Fatal(err)
	}
	mf, _ := m.reg.Gather()
	found := false
	for _, fam := range mf {
		if fam.GetName() == "overlaybd_device_bytes_total" {
			for _, s := range fam.Metric {
				for _, l := range s.Label {
					if l.GetValue() == OpWriteZeroes && s.Counter.GetValue() == 8192 {
						found = true
					}
				}
			}
		}
	}
	if !found {
		t.Error("write_zeroes bytes not counted")
	}
}
