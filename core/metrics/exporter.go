package metrics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"golang.org/x/sys/unix"

	"github.com/overlaybd-go/overlaybd/core/config"
)

// ContentType is the response's content type, upstream's.
const ContentType = "text/plain; version=0.0.4"

// AppendUpstream appends upstream overlaybd's exposition text (spec
// REMOTE.md §11.1) for m's pread and download sets: node is the host name,
// ts the timestamp in milliseconds of the boot-time clock.
func (m *Metrics) AppendUpstream(b []byte, node string, ts int64) []byte {
	pr, dl := m.pread.Values(), m.download.Values()
	block := func(name, help string, sample func(b []byte) []byte) {
		b = fmt.Appendf(b, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name)
		b = sample(b)
		b = append(b, '\n')
	}
	line := func(b []byte, name, labels string, v float64) []byte {
		return fmt.Appendf(b, "%s{%s}  %f %d\n", name, labels, v, ts)
	}
	three := func(set string) string { return `node="` + set + `",type="",mode=""` }
	two := func(set string) string { return `node="` + set + `",type=""` }
	block("OverlayBD_Alive", "", func(b []byte) []byte {
		return line(b, "OverlayBD_Alive", `node="`+node+`"`, 1)
	})
	block("OverlayBD_Read_Throughtput", "Bytes / sec", func(b []byte) []byte {
		b = line(b, "OverlayBD_Read_Throughtput", three("pread"), pr.Throughput)
		return line(b, "OverlayBD_Read_Throughtput", three("download"), dl.Throughput)
	})
	block("OverlayBD_QPS", "", func(b []byte) []byte {
		b = line(b, "OverlayBD_QPS", three("pread"), pr.QPS)
		return line(b, "OverlayBD_QPS", three("download"), dl.QPS)
	})
	block("OverlayBD_MaxLatency", "us", func(b []byte) []byte {
		b = line(b, "OverlayBD_MaxLatency", three("pread"), float64(pr.MaxLatencyUS))
		return line(b, "OverlayBD_MaxLatency", three("download"), float64(dl.MaxLatencyUS))
	})
	block("OverlayBD_Count", "Bytes", func(b []byte) []byte {
		b = line(b, "OverlayBD_Count", two("pread"), float64(pr.Count))
		return line(b, "OverlayBD_Count", two("download"), float64(dl.Count))
	})
	return b
}

// BootTimeMillis returns the boot-time clock (CLOCK_BOOTTIME) in
// milliseconds, upstream's sample timestamp.
func BootTimeMillis() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return ts.Nano() / int64(time.Millisecond)
}

// Hostname returns the host name, or "unknown", as upstream labels
// OverlayBD_Alive.
func Hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "unknown"
	}
	return h
}

// Handler serves upstream's text followed by the client_golang metrics in the
// Prometheus text format, for any method.
func (m *Metrics) Handler() http.Handler {
	node := Hostname()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		buf.Write(m.AppendUpstream(nil, node, BootTimeMillis()))
		if err := m.writeProm(&buf); err != nil {
			http.Error(w, "gather metrics: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", ContentType)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(buf.Bytes())
	})
}

func (m *Metrics) writeProm(w io.Writer) error {
	mfs, err := m.reg.Gather()
	if err != nil {
		return err
	}
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return err
		}
	}
	return nil
}

// Exporter is a running metrics endpoint.
type Exporter struct {
	m *Metrics

	ln   net.Listener
	srv  *http.Server
	done chan struct{}
	err  error

	closeOnce sync.Once
}

// ErrDisabled is returned by Start when exporterConfig.enable is false.
var ErrDisabled = errors.New("metrics exporter disabled")

// Start starts the exporter global asks for: it listens on
// exporterConfig.port on every interface with SO_REUSEPORT, as upstream (or
// on exporterConfig.address when set) and serves every path starting with
// exporterConfig.uriPrefix. It returns (nil, nil) when the exporter is not
// enabled; a nil *Exporter's Metrics are nil, and count nothing. A bind or
// listen failure is an error, as it aborts upstream's start-up. The exporter
// stops when ctx ends or Close is called.
func Start(ctx context.Context, global *config.Global, log *slog.Logger) (*Exporter, error) {
	ec := global.ExporterConfig
	if !ec.Enable {
		return nil, nil
	}
	return Listen(ctx, ec.ListenAddr(), ec.URIPrefix, New(), log)
}

// Listen serves m on addr (host:port) under prefix.
func Listen(ctx context.Context, addr, prefix string, m *Metrics, log *slog.Logger) (*Exporter, error) {
	if log == nil {
		log = slog.Default()
	}
	if prefix == "" {
		prefix = "/"
	}
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("failed to start http server for metrics exporter on %s: %w", addr, err)
	}
	h := m.Handler()
	e := &Exporter{m: m, ln: ln, done: make(chan struct{})}
	e.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasPrefix(r.URL.Path, prefix) {
				http.NotFound(w, r)
				return
			}
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() {
		defer close(e.done)
		if err := e.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.err = err
			log.Error("metrics exporter stopped", "err", err)
		}
	}()
	go func() {
		select {
		case <-ctx.Done():
			e.Close()
		case <-e.done:
		}
	}()
	log.Info("metrics exporter listening", "addr", ln.Addr().String(), "uriPrefix", prefix)
	return e, nil
}

// Metrics returns the metrics served, to instrument components with; nil
// (which counts nothing) when e is nil.
func (e *Exporter) Metrics() *Metrics {
	if e == nil {
		return nil
	}
	return e.m
}

// Addr returns the address the exporter listens on.
func (e *Exporter) Addr() net.Addr { return e.ln.Addr() }

// Close stops the exporter and waits for its server goroutine. It is safe to
// call on a nil *Exporter and more than once.
func (e *Exporter) Close() error {
	if e == nil {
		return nil
	}
	e.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			e.srv.Close()
		}
	})
	<-e.done
	return e.err
}
