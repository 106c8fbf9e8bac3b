package registrytest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// FaultKind is one misbehaviour of the fault proxy.
type FaultKind int

const (
	// Pass forwards the exchange untouched.
	Pass FaultKind = iota
	// Status answers with Fault.Status and no body, without asking the
	// registry.
	Status
	// Reset sends the headers and half the body, then resets the
	// connection (TCP RST).
	Reset
	// Truncate sends the headers (with the full Content-Length) and half
	// the body, then closes the connection cleanly.
	Truncate
	// WrongRange shifts the Content-Range header by 512 bytes and sends
	// the body unchanged.
	WrongRange
	// Flip flips one bit in the middle of the body.
	Flip
	// Slow waits Fault.Delay before forwarding.
	Slow
)

// Fault says what the proxy does with one request.
type Fault struct {
	Kind   FaultKind
	Status int
	Delay  time.Duration
}

// FaultProxy stands between a client and a registry and misbehaves on
// request. Decide is called for every request with its sequence number
// (from 0); nil means Pass. Latency, when set, delays every request.
type FaultProxy struct {
	// URL is the proxy's base URL.
	URL string

	decide  atomic.Pointer[func(n int64, r *http.Request) Fault]
	latency atomic.Int64
	seq     atomic.Int64
	// Injected counts requests that got a fault other than Pass.
	Injected atomic.Int64

	target string
	tr     *http.Transport
}

// NewFaultProxy starts a proxy in front of target (a base URL) that stops
// when the test ends.
func NewFaultProxy(t testing.TB, target string) *FaultProxy {
	p := &FaultProxy{target: strings.TrimRight(target, "/"), tr: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64}}
	srv := httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		p.tr.CloseIdleConnections()
	})
	p.URL = srv.URL
	return p
}

// SetDecide installs the fault schedule.
func (p *FaultProxy) SetDecide(f func(n int64, r *http.Request) Fault) {
	if f == nil {
		p.decide.Store(nil)
		return
	}
	p.decide.Store(&f)
}

// SetLatency delays every request by d (0: none).
func (p *FaultProxy) SetLatency(d time.Duration) { p.latency.Store(int64(d)) }

// Requests returns the number of requests seen.
func (p *FaultProxy) Requests() int64 { return p.seq.Load() }

func (p *FaultProxy) serve(w http.ResponseWriter, r *http.Request) {
	n := p.seq.Add(1) - 1
	if d := time.Duration(p.latency.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	f := Fault{}
	if d := p.decide.Load(); d != nil {
		f = (*d)(n, r)
	}
	if f.Kind != Pass {
		p.Injected.Add(1)
	}
	switch f.Kind {
	case Status:
		w.WriteHeader(f.Status)
		return
	case Slow:
		select {
		case <-time.After(f.Delay):
		case <-r.Context().Done():
			return
		}
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, p.target+r.URL.RequestURI(), nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	resp, err := p.tr.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	hdr := resp.Header.Clone()
	if loc := hdr.Get("Location"); strings.HasPrefix(loc, p.target) {
		hdr.Set("Location", p.URL+strings.TrimPrefix(loc, p.target))
	}
	switch f.Kind {
	case WrongRange:
		if cr := hdr.Get("Content-Range"); cr != "" {
			hdr.Set("Content-Range", shiftRange(cr, 512))
		}
	case Flip:
		if len(body) > 0 {
			body[len(body)/2] ^= 0x10
		}
	case Reset, Truncate:
		if len(body) < 2 {
			break
		}
		conn, bw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		writeHead(bw, resp.StatusCode, hdr, len(body))
		bw.Write(body[:len(body)/2])
		bw.Flush()
		if f.Kind == Reset {
			if tc, ok := conn.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
		}
		conn.Close()
		return
	}
	for k, v := range hdr {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(body)
}

func writeHead(bw *bufio.ReadWriter, code int, hdr http.Header, n int) {
	fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\n", code, http.StatusText(code))
	hdr.Set("Content-Length", strconv.Itoa(n))
	hdr.Write(bw)
	bw.WriteString("\r\n")
}

// shiftRange moves "bytes a-b/t" by d bytes.
func shiftRange(cr string, d int64) string {
	var a, b, t int64
	if _, err := fmt.Sscanf(cr, "bytes %d-%d/%d", &a, &b, &t); err != nil {
		return cr
	}
	return fmt.Sprintf("bytes %d-%d/%d", a+d, b+d, t)
}
