// Command overlaybd-nbd serves overlaybd images as block devices over the
// Network Block Device protocol, without any kernel module: qemu, libnbd's
// tools (nbdinfo, nbdcopy, nbdfuse), nbd-client and fio attach to it.
//
//	overlaybd-nbd [--service_config_path F] (--unix PATH | --tcp HOST[:PORT])
//	              [--read-only] [--verbose] EXPORT...
//
// An EXPORT is CONFIG.json or NAME=CONFIG.json, where CONFIG.json is an
// image configuration (config.v1.json). A single export without a NAME= is
// the default export (name ""); otherwise each export is named by its NAME=
// or, failing that, by its file name without ".json". Two exports with one
// name, or two writable exports sharing an upper layer, are an error at
// start. An image with an upper layer is served writable unless --read-only
// is given; one without is read-only. Lowers without a local copy (a
// digest, and no file in file/dir) are read lazily from the image's
// repoBlobUrl through the registry client and cache overlaybd.json
// configures (credentialConfig, cacheConfig, p2pConfig, download).
//
// --tcp takes HOST, HOST:PORT, [IPv6] or [IPv6]:PORT; the port defaults to
// 10809.
//
// On SIGINT or SIGTERM the server stops accepting connections, finishes the
// requests in flight, finishes trace recordings (recordTracePath), flushes
// and closes the upper layers and exits 0. The requests in flight get 30 s;
// a second signal cuts that wait short (and the stop still exits 0 when the
// rest succeeds). Then their connections are closed, and the requests still
// running get 5 s more. If one is still running after that (a read stuck
// on a registry), the traces are finished and the uppers flushed beside it,
// and the server exits 1 without closing the images. A third signal ends
// the process at once, by the signal's default action: an unfinished trace
// is lost (the trace file stays empty and the next start records again).
//
// Exit status 2 is a usage error, 1 a failure to start, to serve, or to
// stop cleanly.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	_ "github.com/overlaybd-go/overlaybd/caches/all"
	_ "github.com/overlaybd-go/overlaybd/codecs/all"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/audit"
	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/core/image"
	"github.com/overlaybd-go/overlaybd/core/logging"
	"github.com/overlaybd-go/overlaybd/core/metrics"
	"github.com/overlaybd-go/overlaybd/core/remote"
	_ "github.com/overlaybd-go/overlaybd/engines/all"
	"github.com/overlaybd-go/overlaybd/frontends/nbd"
	"github.com/overlaybd-go/overlaybd/internal/cli"
	"github.com/overlaybd-go/overlaybd/plugins"
)

const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	// shutdownGrace bounds how long requests in flight may take after a
	// signal before their connections are closed.
	shutdownGrace = 30 * time.Second
	// closedGrace bounds how long requests in flight may still run once
	// their connections are closed (after shutdownGrace or a second
	// signal) before the traces are finished and the uppers flushed beside
	// them.
	closedGrace = 5 * time.Second
)

func main() {
	sig := cli.NotifyShutdown()
	code := serve(sig.Context(), sig.Quick(), os.Args[1:], os.Stderr, nil)
	sig.Stop()
	os.Exit(code)
}

const usage = `usage: overlaybd-nbd [--service_config_path F] (--unix PATH | --tcp HOST[:PORT]) [--read-only] EXPORT...

Serves overlaybd images over NBD. EXPORT is CONFIG.json or NAME=CONFIG.json
(an image configuration, config.v1.json). One export without NAME= is the
default export ""; otherwise exports are named by NAME= or by their file name
without ".json". Attach with, e.g.:
  nbdinfo nbd+unix:///NAME?socket=PATH      qemu-img info nbd:unix:PATH:exportname=NAME
  nbdfuse DIR nbd://HOST:PORT/NAME          nbd-client -N NAME -u PATH /dev/nbd0

SIGINT or SIGTERM stops it gracefully: requests in flight finish (up to
30 s), trace recordings are finished, uppers flushed and closed, exit 0. A
second signal stops waiting for requests in flight (5 s more at most) but
still finishes the traces and flushes the uppers; a third ends it at once.

Flags:
`

// exportArg is one EXPORT argument.
type exportArg struct {
	name   string
	config string
}

// parseExports names the EXPORT arguments by the rules in the package
// documentation.
func parseExports(args []string) ([]exportArg, error) {
	if len(args) == 0 {
		return nil, errors.New("no EXPORT given")
	}
	var out []exportArg
	seen := map[string]string{}
	for _, a := range args {
		var e exportArg
		if name, path, ok := strings.Cut(a, "="); ok && !strings.Contains(name, "/") {
			e = exportArg{name: name, config: path}
		} else {
			e = exportArg{config: a}
			if len(args) > 1 {
				e.name = strings.TrimSuffix(filepath.Base(a), ".json")
			}
		}
		if e.config == "" {
			return nil, fmt.Errorf("export %q names no configuration file", a)
		}
		if len(e.name) > 4096 {
			return nil, fmt.Errorf("export name of %d bytes (at most 4096)", len(e.name))
		}
		if prev, dup := seen[e.name]; dup {
			return nil, fmt.Errorf("export name %q is given twice (%s and %s)", e.name, prev, e.config)
		}
		seen[e.name] = e.config
		out = append(out, e)
	}
	return out, nil
}

// tcpAddress turns HOST, HOST:PORT, [IPv6] or [IPv6]:PORT into a listen
// address, with port 10809 when none is given.
func tcpAddress(s string) (string, error) {
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 {
			return "", fmt.Errorf("--tcp %q: missing ']'", s)
		}
		host = s[1:end]
		rest := s[end+1:]
		if rest != "" {
			if !strings.HasPrefix(rest, ":") {
				return "", fmt.Errorf("--tcp %q: unexpected %q after ']'", s, rest)
			}
			port = rest[1:]
		}
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil {
			return "", fmt.Errorf("--tcp %q: %q is not an IPv6 address", s, host)
		}
	} else {
		switch strings.Count(s, ":") {
		case 0:
		case 1:
			host, port, _ = strings.Cut(s, ":")
		default:
			return "", fmt.Errorf("--tcp %q: IPv6 addresses go in brackets, e.g. [::1]:10809", s)
		}
	}
	if port == "" {
		port = strconv.Itoa(nbd.DefaultPort)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return "", fmt.Errorf("--tcp %q: bad port %q", s, port)
	}
	return net.JoinHostPort(host, port), nil
}

// listenUnix listens on a unix socket, replacing a stale socket file that
// nobody listens on.
func listenUnix(path string) (net.Listener, error) {
	l, err := net.Listen("unix", path)
	if err == nil {
		return l, nil
	}
	st, serr := os.Lstat(path)
	if serr != nil || st.Mode()&os.ModeSocket == 0 {
		return nil, err
	}
	if c, derr := net.DialTimeout("unix", path, time.Second); derr == nil {
		c.Close()
		return nil, fmt.Errorf("%s is in use by another server", path)
	}
	if rerr := os.Remove(path); rerr != nil {
		return nil, fmt.Errorf("remove stale socket: %w", rerr)
	}
	return net.Listen("unix", path)
}

// anyRemote reports whether a layer of img is read from a registry.
func anyRemote(img *image.Image) bool {
	for _, l := range img.Layers {
		if l.Remote {
			return true
		}
	}
	return false
}

// sameFile reports whether two paths name one file (or, when neither
// exists yet, one cleaned absolute path).
func sameFile(a, b string) bool {
	sa, ea := os.Stat(a)
	sb, eb := os.Stat(b)
	if ea == nil && eb == nil {
		return os.SameFile(sa, sb)
	}
	aa, _ := filepath.Abs(a)
	ab, _ := filepath.Abs(b)
	return aa == ab
}

// run is the whole command, stopped gracefully when ctx ends; ready, when
// not nil, receives the listen address once the server accepts connections
// (for tests).
func run(ctx context.Context, args []string, stderr io.Writer, ready chan<- net.Addr) int {
	return serve(ctx, nil, args, stderr, ready)
}

// serve is run with the quick stop of a second signal: when quick closes
// during the graceful stop, the server stops waiting for requests in
// flight (see the package documentation).
func serve(ctx context.Context, quick <-chan struct{}, args []string, stderr io.Writer, ready chan<- net.Addr) int {
	fs := cli.NewFlagSet("overlaybd-nbd", stderr, usage)
	svcPath := fs.String("service-config-path", "", "global configuration (overlaybd.json); default "+config.DefaultGlobalPath+" if it exists, else built-in defaults; its codecPlugins serve lz4/zstd")
	unixPath := fs.String("unix", "", "listen on this unix socket")
	tcp := fs.String("tcp", "", "listen on HOST[:PORT] (port 10809 by default; IPv6 as [ADDR] or [ADDR]:PORT)")
	readOnly := fs.Bool("read-only", false, "serve every export read-only, ignoring upper layers")
	verbose := fs.BoolP("verbose", "v", false, "debug logging")
	maxInFlight := fs.Int("max-in-flight", nbd.DefaultMaxInFlight, "requests served at once per connection")
	if err := cli.Parse(fs, args); err != nil {
		return cli.PrefixedParseError(stderr, "overlaybd-nbd", err, exitUsage)
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "overlaybd-nbd: "+format+"\n", a...)
		fmt.Fprintln(stderr, "run overlaybd-nbd --help for usage")
		return exitUsage
	}
	if (*unixPath == "") == (*tcp == "") {
		return usageErr("exactly one of --unix and --tcp is required")
	}
	exports, err := parseExports(fs.Args())
	if err != nil {
		return usageErr("%v", err)
	}
	log := cli.Logger(stderr, *verbose)
	fail := func(format string, a ...any) int {
		log.Error(fmt.Sprintf(format, a...))
		return exitFailure
	}

	global, err := config.LoadGlobal(*svcPath)
	if err != nil {
		return fail("load service config: %v", err)
	}
	if err := global.Validate(); err != nil {
		return fail("service config: %v", err)
	}
	// Logs, audit and metrics follow overlaybd.json, with one difference
	// from the daemon: overlaybd-nbd runs in the foreground, so it writes a
	// log file and the audit log only when logConfig.logPath names a file
	// (the legacy top-level keys, whose defaults name files under /var/log,
	// leave the log on stderr and the audit log off).
	logSettings := global.EffectiveLog()
	daemonLogs := !logSettings.Legacy && logSettings.Path != ""
	if !daemonLogs {
		logSettings.Path = ""
	}
	log, logFile, err := logging.New(logSettings, logging.Options{Stderr: stderr, Debug: *verbose})
	if err != nil {
		return fail("log: %v", err)
	}
	defer logFile.Close()
	var auditLog *audit.Log
	if daemonLogs {
		if auditLog, err = audit.Open(global); err != nil {
			log.Warn("audit log disabled", "err", err)
		}
		defer auditLog.Close()
	}
	exporter, err := metrics.Start(ctx, global, log)
	if err != nil {
		return fail("%v", err)
	}
	defer exporter.Close()
	m := exporter.Metrics()
	// The codec plugins outlive every image: the deferred Close runs after
	// closeAll on every return path, the graceful shutdown included.
	host, err := plugins.LoadGlobal(ctx, global, plugins.WithLogger(log))
	if err != nil {
		return fail("start codec plugins: %v", err)
	}
	defer host.CloseLogging(log)

	// Load every configuration before opening anything, to refuse shared
	// uppers before touching them.
	cfgs := make([]*config.Image, len(exports))
	for i, e := range exports {
		cfgs[i], err = config.LoadImage(e.config, global)
		if err != nil {
			return fail("export %q: %v", e.name, err)
		}
	}
	if !*readOnly {
		for i := range cfgs {
			for j := range i {
				if !cfgs[i].Writable() || !cfgs[j].Writable() {
					continue
				}
				ui, uj := cfgs[i].Upper, cfgs[j].Upper
				if sameFile(ui.Data, uj.Data) || sameFile(ui.Index, uj.Index) || sameFile(ui.Data, uj.Index) || sameFile(ui.Index, uj.Data) {
					return fail("exports %q and %q share an upper layer (%s): serve one of them, or use --read-only", exports[j].name, exports[i].name, ui.Data)
				}
			}
		}
	}

	// Remote lowers (no local copy, a digest) are read from the registry
	// through the configured cache; the client and the cache are made only
	// when an export needs them.
	var (
		client  *remote.Client
		cache   core.Cache
		openers []*remote.LayerOpener
		images  []*image.Image
	)
	closeAll := func() int {
		code := exitOK
		for i, img := range images {
			if err := img.Close(); err != nil {
				log.Error("close image", "export", exports[i].name, "err", err)
				code = exitFailure
			}
		}
		for _, lo := range openers {
			if err := lo.Close(); err != nil {
				log.Error("stop background downloads", "err", err)
				code = exitFailure
			}
		}
		if cache != nil {
			if err := cache.Close(); err != nil {
				log.Error("close cache", "err", err)
				code = exitFailure
			}
		}
		if client != nil {
			client.Close()
		}
		return code
	}
	for _, cfg := range cfgs {
		if !cfg.NeedsRemote() || client != nil {
			continue
		}
		if client, err = remote.NewClientFromConfig(ctx, global, log); err != nil {
			return fail("registry client: %v", err)
		}
		if cache, err = remote.CacheFromConfig(global, 0, log); err != nil {
			closeAll()
			return fail("registry cache: %v", err)
		}
		if cache != nil {
			if err := m.AddCache(global.EffectiveCache().Type, cache); err != nil {
				log.Warn("cache metrics", "err", err)
			}
			var obs []metrics.SourceReadObserver
			if auditLog != nil {
				obs = append(obs, auditLog)
			}
			cache = metrics.InstrumentCache(cache, m, obs...)
		}
		rc := client
		if err := m.AddRegistry(global.RegistryFsVersion, func() metrics.RegistryCounts {
			s := rc.Stats()
			return metrics.RegistryCounts{Requests: s.Requests, Retries: s.Retries, Errors: s.Errors, Bytes: s.Bytes, ErrorsByClass: s.ErrorCounts()}
		}); err != nil {
			log.Warn("registry metrics", "err", err)
		}
	}
	var nexports []nbd.Export
	for i, e := range exports {
		opts := image.Options{Global: global, ReadOnly: *readOnly, Logger: log}
		if client != nil && cfgs[i].NeedsRemote() {
			lo := remote.NewLayerOpenerForImage(client, cache, global, cfgs[i], log)
			openers = append(openers, lo)
			opts.Remote = lo
		}
		img, err := image.Open(ctx, cfgs[i], opts)
		if err != nil {
			closeAll()
			return fail("export %q (%s): %v", e.name, e.config, err)
		}
		images = append(images, img)
		nexports = append(nexports, nbd.Export{
			Name:        e.name,
			Description: "overlaybd image " + filepath.Base(e.config),
			File:        m.WrapFile(e.name, img),
			ReadOnly:    !img.Writable(),
			Alignment:   core.SectorSize,
			FastReads:   !anyRemote(img),
		})
		log.Info("export", "name", e.name, "config", e.config, "size", img.Size(), "writable", img.Writable(), "lowers", len(img.Layers))
	}

	srv, err := nbd.NewServer(nexports, nbd.Options{Logger: log, MaxInFlight: *maxInFlight})
	if err != nil {
		closeAll()
		return fail("%v", err)
	}
	var l net.Listener
	if *unixPath != "" {
		l, err = listenUnix(*unixPath)
	} else {
		var addr string
		if addr, err = tcpAddress(*tcp); err != nil {
			closeAll()
			return usageErr("%v", err)
		}
		l, err = net.Listen("tcp", addr)
	}
	if err != nil {
		closeAll()
		return fail("listen: %v", err)
	}
	if *unixPath != "" {
		defer os.Remove(*unixPath)
	}
	log.Info("serving", "address", l.Addr().String(), "exports", len(nexports))
	if ready != nil {
		ready <- l.Addr()
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(l) }()
	code := exitOK
	select {
	case <-ctx.Done():
		log.Info("signal received: finishing requests in flight (a second signal stops waiting for them)")
	case err := <-serveErr:
		log.Error("serve", "err", err)
		code = exitFailure
	}
	c, drained := stopServer(srv, quick, log)
	if !drained {
		// Requests are still running on the images: finish what keeps
		// data whole beside them, and leave the images open.
		finishBeside(images, exports, log)
		return exitFailure
	}
	if c != exitOK {
		code = c
	}
	if c := closeAll(); c != exitOK {
		code = c
	}
	if code == exitOK {
		st := srv.Stats()
		log.Info("stopped", "connections", st.Connections, "requests", st.Requests,
			"read_bytes", st.ReadBytes, "written_bytes", st.WriteBytes, "errors", st.Errors)
	}
	return code
}

// stopServer stops srv: gracefully for up to shutdownGrace, or until quick
// closes (a second signal); then the remaining connections are closed and
// their requests get closedGrace to return. It returns exitOK or
// exitFailure (a sync of the exports failed, or requests in flight had to
// be cut off without a second signal asking for it), and whether every
// request has returned.
func stopServer(srv *nbd.Server, quick <-chan struct{}, log *slog.Logger) (code int, drained bool) {
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(sctx) }()
	var (
		hurried bool
		graceUp = sctx.Done()
		cutOff  <-chan time.Time
	)
	for {
		select {
		case err := <-done:
			switch {
			case err == nil:
				return exitOK, true
			case hurried && onlyCanceled(err):
				log.Info("connections closed at the second signal")
				return exitOK, true
			}
			log.Error("shutdown", "err", err)
			return exitFailure, true
		case <-quick:
			quick = nil
			hurried = true
			log.Warn("second signal: closing the connections without waiting for their requests; trace recordings and uppers are still finished (a third signal ends the process at once)")
			cancel()
		case <-graceUp:
			graceUp = nil
			cutOff = time.After(closedGrace)
		case <-cutOff:
			log.Error("requests still running after their connections were closed; finishing traces and flushing uppers beside them", "waited", closedGrace)
			return exitFailure, false
		}
	}
}

// onlyCanceled reports whether err, from nbd.Server.Shutdown, says only
// that its context was cancelled (no sync of an export failed).
func onlyCanceled(err error) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs := j.Unwrap()
		return len(errs) == 1 && onlyCanceled(errs[0])
	}
	return errors.Is(err, context.Canceled)
}

// finishBeside does, while requests may still run on the images, what
// Close would do to keep data whole: it finishes each trace recording and
// flushes each writable image. The images stay open.
func finishBeside(images []*image.Image, exports []exportArg, log *slog.Logger) {
	for i, img := range images {
		if rec := img.TraceRecorder(); rec != nil {
			if err := rec.Close(); err != nil {
				log.Error("finish trace", "export", exports[i].name, "err", err)
			}
		}
		if img.Writable() {
			if err := img.Sync(); err != nil {
				log.Error("flush upper", "export", exports[i].name, "err", err)
			}
		}
	}
}
