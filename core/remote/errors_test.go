package remote_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/overlaybd-go/overlaybd/core/metrics"
	"github.com/overlaybd-go/overlaybd/core/remote"
	"github.com/overlaybd-go/overlaybd/internal/registrytest"
)

// TestErrorCounters runs reads through the fault proxy and checks that the
// client's error counters move by class exactly as the faults say, that
// transient faults cured by a retry count as retries and not as errors, and
// that a scrape of the exporter shows the counters.
func TestErrorCounters(t *testing.T) {
	reg := registrytest.New(t, registrytest.Options{})
	data := layer(1<<20, 33)
	dgst := reg.PushBlob(t, "e/app", data)
	px := registrytest.NewFaultProxy(t, reg.URL)
	u := remote.BlobURL(px.URL+"/v2/e/app/blobs", dgst)
	// The attempt timeout leaves room for a loaded machine (-race, other
	// packages' tests): only the "slow" fault may end in a timeout.
	c, _ := newClient(t, remote.Options{ReadAhead: -1, AttemptTimeout: time.Second, Retries: 2})
	b, err := c.Open(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	m := metrics.New()
	if err := m.AddRegistry("v2", func() metrics.RegistryCounts {
		s := c.Stats()
		return metrics.RegistryCounts{Requests: s.Requests, Retries: s.Retries, Errors: s.Errors, Bytes: s.Bytes,
			ErrorsByClass: s.ErrorCounts()}
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exp, err := metrics.Listen(ctx, "127.0.0.1:0", "/metrics", m, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Close()

	// Transient faults (every other data request) are cured by retries.
	px.SetDecide(onData(registrytest.Fault{Kind: registrytest.Status, Status: 503}, everyOther()))
	before := c.Stats()
	if got := readAt(t, b, 1000, 5000); !bytes.Equal(got, data[1000:6000]) {
		t.Fatal("wrong data")
	}
	s := c.Stats()
	if s.Errors != before.Errors || s.Retries == before.Retries {
		t.Fatalf("transient fault: errors %d→%d, retries %d→%d", before.Errors, s.Errors, before.Retries, s.Retries)
	}

	cases := []struct {
		name  string
		fault registrytest.Fault
		class remote.ErrorClass
		is    error
	}{
		{"503", registrytest.Fault{Kind: registrytest.Status, Status: 503}, remote.ErrorHTTP5xx, remote.ErrBadResponse},
		{"404", registrytest.Fault{Kind: registrytest.Status, Status: 404}, remote.ErrorHTTP4xx, remote.ErrNotFound},
		{"429", registrytest.Fault{Kind: registrytest.Status, Status: 429}, remote.ErrorHTTP4xx, remote.ErrTooManyRequests},
		{"truncate", registrytest.Fault{Kind: registrytest.Truncate}, remote.ErrorBody, remote.ErrBadResponse},
		{"reset", registrytest.Fault{Kind: registrytest.Reset}, remote.ErrorBody, remote.ErrBadResponse},
		{"wrong-range", registrytest.Fault{Kind: registrytest.WrongRange}, remote.ErrorBody, remote.ErrBadResponse},
		{"slow", registrytest.Fault{Kind: registrytest.Slow, Delay: 4 * time.Second}, remote.ErrorTimeout, remote.ErrTimeout},
	}
	for i, tc := range cases {
		px.SetDecide(onData(tc.fault, nil))
		before := c.Stats()
		p := make([]byte, 3000)
		_, err := b.ReadAtContext(context.Background(), p, int64(i)*100000)
		if err == nil || !errors.Is(err, tc.is) {
			t.Fatalf("%s: error %v, want %v", tc.name, err, tc.is)
		}
		s := c.Stats()
		if d := s.Errors - before.Errors; d != 1 {
			t.Errorf("%s: errors moved by %d, want 1", tc.name, d)
		}
		for _, cl := range remote.ErrorClasses() {
			want := before.ErrorsByClass[cl]
			if cl == tc.class {
				want++
			}
			if s.ErrorsByClass[cl] != want {
				t.Errorf("%s: class %s = %d, want %d", tc.name, cl, s.ErrorsByClass[cl], want)
			}
		}
	}
	px.SetDecide(nil)

	// A caller's cancellation is not a registry error.
	before = c.Stats()
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if _, err := b.ReadAtContext(cctx, make([]byte, 100), 0); err == nil {
		t.Fatal("read with a cancelled context succeeded")
	}
	if s := c.Stats(); s.Errors != before.Errors {
		t.Errorf("cancelled read counted as an error")
	}

	// A registry nobody listens on: transport errors.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	before = c.Stats()
	if _, err := c.Open(context.Background(), remote.BlobURL(dead+"/v2/e/app/blobs", dgst)); err == nil {
		t.Fatal("open through a closed port succeeded")
	}
	s = c.Stats()
	if s.ErrorsByClass[remote.ErrorTransport] != before.ErrorsByClass[remote.ErrorTransport]+1 || s.Errors != before.Errors+1 {
		t.Errorf("closed port: transport %d→%d, errors %d→%d", before.ErrorsByClass[remote.ErrorTransport],
			s.ErrorsByClass[remote.ErrorTransport], before.Errors, s.Errors)
	}

	// The exporter shows the same numbers.
	resp, err := http.Get("http://" + exp.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse scrape: %v\n%s", err, body)
	}
	s = c.Stats()
	got := map[string]float64{}
	if mf := mfs["overlaybd_registry_errors_by_class_total"]; mf != nil {
		for _, m := range mf.Metric {
			lab := map[string]string{}
			for _, l := range m.Label {
				lab[l.GetName()] = l.GetValue()
			}
			if lab["client"] == "v2" {
				got[lab["class"]] = m.Counter.GetValue()
			}
		}
	}
	for _, cl := range remote.ErrorClasses() {
		if got[cl.String()] != float64(s.ErrorsByClass[cl]) {
			t.Errorf("scrape: class %s = %v, client says %d\n%s", cl, got[cl.String()], s.ErrorsByClass[cl], body)
		}
	}
	if mf := mfs["overlaybd_registry_errors_total"]; mf == nil || mf.Metric[0].Counter.GetValue() != float64(s.Errors) || s.Errors != uint64(len(cases)+1) {
		t.Errorf("scrape: overlaybd_registry_errors_total does not show %d errors (want %d)\n%s", s.Errors, len(cases)+1, body)
	}
}
