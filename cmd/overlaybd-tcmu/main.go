// Command overlaybd-tcmu serves overlaybd images to the Linux kernel as SCSI
// disks through TCMU (target_core_user), as upstream's daemon of the same
// name does, so that containerd's accelerated-container-image snapshotter
// and overlaybd-attacher drive it unchanged through configfs:
//
//	overlaybd-tcmu [CONFIG_PATH] [--service_config_path F] [--verbose]
//
// The global configuration (overlaybd.json) is CONFIG_PATH, as upstream's
// systemd unit passes it, or --service_config_path, or
// /etc/overlaybd/overlaybd.json. A device is created in configfs with
// dev_config=overlaybd/<config.v1.json path>[;<dev id>]; its image is opened
// from that file when the kernel announces the device, and the outcome is
// written to the file's resultFile ("success" or "failed:<reason>"). A
// device whose image does not open fails its configfs enable with ENOENT;
// the daemon and its other devices carry on.
//
// Logging (with rotation and redaction), the audit log, the Prometheus
// exporter, the registry client and cache for remote lowers, and codec
// plugins follow overlaybd.json as in upstream; see docs/tcmu.md.
//
// On SIGINT or SIGTERM every device is blocked, drained and closed (trace
// recordings finished, writable layers flushed); the devices stay configured
// in the kernel and the next start re-attaches them. A second signal stops
// waiting for the drain: the devices get 5 s more, and then the trace
// recordings are finished and the writable layers flushed beside the
// commands still running, and the daemon exits 1 without closing those
// images. A third signal ends it at once, by the signal's default action
// (an unfinished trace is lost: its file stays empty and the next start
// records again).
//
// Exit status 255 is a failed start (bad global configuration), 2 a usage
// error, 1 a failure to register with the kernel or a stop cut short by a
// second signal.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	_ "github.com/overlaybd-go/overlaybd/caches/all"
	_ "github.com/overlaybd-go/overlaybd/codecs/all"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/audit"
	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/core/image"
	"github.com/overlaybd-go/overlaybd/core/logging"
	"github.com/overlaybd-go/overlaybd/core/metrics"
	"github.com/overlaybd-go/overlaybd/core/remote"
	_ "github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/frontends/tcmu"
	"github.com/overlaybd-go/overlaybd/internal/cli"
	"github.com/overlaybd-go/overlaybd/plugins"
)

const (
	exitFailure = 1
	exitUsage   = 2
	// exitStart is upstream's exit(-1) when the image service cannot start.
	exitStart = 255
	// handlerName is the TCMU handler (subtype) of overlaybd devices.
	handlerName = "overlaybd"
	// readRetry is how long upstream retries a failing read (7 days).
	readRetry = 7 * 24 * time.Hour
	// nofileLimit is the hard RLIMIT_NOFILE upstream raises to.
	nofileLimit = 1 << 20
	// quickGrace is how long the devices may still take to drain and close
	// after a second signal.
	quickGrace = 5 * time.Second
)

func main() {
	sig := cli.NotifyShutdown()
	code := serve(sig.Context(), sig.Quick(), os.Args[1:], os.Stderr)
	sig.Stop()
	os.Exit(code)
}

const usage = `usage: overlaybd-tcmu [CONFIG_PATH] [--service_config_path F] [--verbose]

Serves overlaybd images as SCSI disks through the kernel's TCMU backend
(modprobe target_core_user). Devices are created through configfs with
dev_config=overlaybd/<config.v1.json>[;<dev id>]; see docs/tcmu.md.

SIGINT or SIGTERM drains and closes every device (traces finished, writable
layers flushed). A second signal stops waiting for the drain (5 s more at
most) but still finishes the traces and flushes the writable layers; a third
ends the daemon at once.

Flags:
`

// run is the whole daemon, stopped when ctx ends.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	return serve(ctx, nil, args, stderr)
}

// serve is run with the quick stop of a second signal (see the package
// documentation).
func serve(ctx context.Context, quick <-chan struct{}, args []string, stderr io.Writer) int {
	fs := cli.NewFlagSet("overlaybd-tcmu", stderr, usage)
	svcPath := fs.String("service-config-path", "", "global configuration (overlaybd.json); default "+config.DefaultGlobalPath)
	verbose := fs.BoolP("verbose", "v", false, "debug logging, whatever logConfig says")
	if err := cli.Parse(fs, args); err != nil {
		return cli.PrefixedParseError(stderr, "overlaybd-tcmu", err, exitUsage)
	}
	if fs.NArg() > 1 || (fs.NArg() == 1 && *svcPath != "") {
		fmt.Fprintln(stderr, "overlaybd-tcmu: give the global configuration once, as CONFIG_PATH or --service_config_path")
		fs.Usage()
		return exitUsage
	}
	path := *svcPath
	if fs.NArg() == 1 {
		path = fs.Arg(0)
	}
	if path == "" {
		path = config.DefaultGlobalPath
	}
	boot := slog.New(slog.NewTextHandler(stderr, nil))
	global, err := config.LoadGlobal(path)
	if err == nil {
		err = global.Validate()
	}
	var startup *config.Startup
	if err == nil {
		startup, err = global.Prepare(config.PrepareOptions{})
	}
	if err != nil {
		boot.Error("failed to create image service", "config", path, "err", err)
		return exitStart
	}
	log, logFile, err := logging.New(global.EffectiveLog(), logging.Options{Stderr: stderr, Debug: *verbose})
	if err != nil {
		boot.Error("failed to open the log", "config", path, "err", err)
		return exitStart
	}
	defer logFile.Close()
	for _, w := range startup.Warnings {
		log.Warn(w)
	}
	// The codec plugins outlive every device: the deferred Close runs after
	// the server has closed them all.
	host, err := plugins.LoadGlobal(ctx, global, plugins.WithLogger(log))
	if err != nil {
		log.Error("failed to start codec plugins", "config", path, "err", err)
		return exitStart
	}
	defer host.CloseLogging(log)
	auditLog, err := audit.Open(global)
	if err != nil {
		log.Warn("audit log disabled", "err", err)
	}
	defer auditLog.Close()
	exporter, err := metrics.Start(ctx, global, log)
	if err != nil {
		log.Error("Failed to start http server for metrics exporter", "err", err)
		return exitStart
	}
	defer exporter.Close()
	if err := raiseNoFile(); err != nil {
		log.Error("failed to raise RLIMIT_NOFILE", "err", err)
		return exitStart
	}

	d := &daemon{globalPath: path, global: global, log: log, audit: auditLog, metrics: exporter.Metrics(), devIDs: map[string]bool{}, files: map[*deviceFile]string{}}
	drained := true
	defer func() {
		if drained {
			d.closeRemote() // else images still read through them
		}
	}()
	srv, err := tcmu.NewServer(tcmu.Config{Handler: handlerName, Open: d.open, Logger: log, ReadRetry: readRetry})
	if err != nil {
		log.Error("tcmulib init failed", "err", err)
		return exitFailure
	}
	log.Info("overlaybd-tcmu starting", "config", path, "pid", os.Getpid())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	if drained, err = waitRun(done, quick, log); !drained {
		d.finishBeside()
		return exitFailure
	}
	if err != nil {
		log.Error("tcmulib init failed", "err", err)
		return exitFailure
	}
	log.Info("overlaybd-tcmu stopped")
	return 0
}

// waitRun waits for the server's Run to return its error on done. When
// quick closes first (a second signal), Run gets quickGrace more; if it
// has not returned by then, waitRun returns drained false.
func waitRun(done <-chan error, quick <-chan struct{}, log *slog.Logger) (drained bool, err error) {
	var cutOff <-chan time.Time
	for {
		select {
		case err := <-done:
			return true, err
		case <-quick:
			quick = nil
			log.Warn("second signal: waiting at most 5 s more for the devices to drain; trace recordings and writable layers are finished all the same (a third signal ends the daemon at once)")
			cutOff = time.After(quickGrace)
		case <-cutOff:
			log.Error("devices still draining; finishing trace recordings and flushing writable layers beside them", "waited", quickGrace)
			return false, nil
		}
	}
}

// raiseNoFile raises the hard RLIMIT_NOFILE to 1048576 when it is lower, as
// upstream does (the soft limit is left alone).
func raiseNoFile() error {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return err
	}
	if rl.Max >= nofileLimit {
		return nil
	}
	rl.Max = nofileLimit
	return unix.Setrlimit(unix.RLIMIT_NOFILE, &rl)
}

// daemon opens device images.
type daemon struct {
	globalPath string
	global     *config.Global
	log        *slog.Logger
	audit      *audit.Log       // nil when auditing is off
	metrics    *metrics.Metrics // nil when the exporter is off

	mu     sync.Mutex
	devIDs map[string]bool        // dev ids of open devices
	files  map[*deviceFile]string // open devices, by name

	// The registry client and the cache are made at the first device with
	// a remote lower and shared by all devices until the daemon stops.
	remoteMu sync.Mutex
	client   *remote.Client
	cache    core.Cache
}

// remoteParts returns the registry client and the cache, making them on
// first use.
func (d *daemon) remoteParts(ctx context.Context, global *config.Global) (*remote.Client, core.Cache, error) {
	d.remoteMu.Lock()
	defer d.remoteMu.Unlock()
	if d.client != nil {
		return d.client, d.cache, nil
	}
	client, err := remote.NewClientFromConfig(ctx, global, d.log)
	if err != nil {
		return nil, nil, fmt.Errorf("registry client: %w", err)
	}
	cache, err := remote.CacheFromConfig(global, 0, d.log)
	if err != nil {
		client.Close()
		return nil, nil, fmt.Errorf("registry cache: %w", err)
	}
	if cache != nil {
		if err := d.metrics.AddCache(global.EffectiveCache().Type, cache); err != nil {
			d.log.Warn("cache metrics", "err", err)
		}
		var obs []metrics.SourceReadObserver
		if d.audit != nil {
			obs = append(obs, d.audit)
		}
		cache = metrics.InstrumentCache(cache, d.metrics, obs...)
	}
	if err := d.metrics.AddRegistry(global.RegistryFsVersion, func() metrics.RegistryCounts {
		s := client.Stats()
		return metrics.RegistryCounts{Requests: s.Requests, Retries: s.Retries, Errors: s.Errors, Bytes: s.Bytes, ErrorsByClass: s.ErrorCounts()}
	}); err != nil {
		d.log.Warn("registry metrics", "err", err)
	}
	d.client, d.cache = client, cache
	return client, cache, nil
}

// closeRemote closes the cache and the registry client once every device
// is closed.
func (d *daemon) closeRemote() {
	d.remoteMu.Lock()
	defer d.remoteMu.Unlock()
	if d.cache != nil {
		if err := d.cache.Close(); err != nil {
			d.log.Error("close cache", "err", err)
		}
	}
	if d.client != nil {
		d.client.Close()
	}
	d.client, d.cache = nil, nil
}

// reason is an open failure with upstream's result-file text.
type reason string

func (r reason) Error() string        { return string(r) }
func (r reason) ResultReason() string { return string(r) }

// open is the TCMU open callback: cfgstring overlaybd/<path>[;<dev id>].
func (d *daemon) open(ctx context.Context, dev tcmu.DeviceInfo) (tcmu.Image, error) {
	path, devID, _ := strings.Cut(dev.Path, ";")
	if path == "" {
		return tcmu.Image{}, fmt.Errorf("device %s/%s: empty config path in %q", dev.HBA, dev.Name, dev.Config)
	}
	// Upstream re-reads the global download settings at every open.
	global := d.global
	if g, err := config.LoadGlobal(d.globalPath); err == nil {
		global = g
	}
	cfg, err := config.LoadImage(path, global)
	if err != nil {
		return tcmu.Image{}, fmt.Errorf("device %s/%s: %w", dev.HBA, dev.Name, err)
	}
	if devID != "" {
		d.mu.Lock()
		dup := d.devIDs[devID]
		if !dup {
			d.devIDs[devID] = true
		}
		d.mu.Unlock()
		if dup {
			err := reason("duplicated dev id: " + devID)
			if werr := config.WriteResult(cfg.ResultFile, err); werr != nil {
				d.log.Warn("writing the result file failed", "file", cfg.ResultFile, "err", werr)
			}
			return tcmu.Image{}, err
		}
	}
	opts := image.Options{Global: global, Logger: d.log}
	var opener *remote.LayerOpener
	if cfg.NeedsRemote() {
		client, cache, err := d.remoteParts(ctx, global)
		if err != nil {
			d.release(devID)
			return tcmu.Image{}, fmt.Errorf("device %s/%s: %w", dev.HBA, dev.Name, err)
		}
		opener = remote.NewLayerOpenerForImage(client, cache, global, cfg, d.log)
		opts.Remote = opener
	}
	img, err := image.Open(ctx, cfg, opts)
	if err != nil {
		if opener != nil {
			opener.Close()
		}
		d.release(devID)
		return tcmu.Image{}, fmt.Errorf("device %s/%s: %w", dev.HBA, dev.Name, err)
	}
	name := devID
	if name == "" {
		name = path
	}
	f := &deviceFile{Image: img, d: d, release: func() {
		if opener != nil {
			if err := opener.Close(); err != nil {
				d.log.Error("stop background downloads", "device", name, "err", err)
			}
		}
		d.metrics.DeleteDevice(name)
		d.release(devID)
	}}
	d.mu.Lock()
	d.files[f] = name
	d.mu.Unlock()
	return tcmu.Image{File: d.metrics.WrapFile(name, f), ReadOnly: !img.Writable()}, nil
}

// finishBeside does, while commands may still run on the open devices'
// images, what closing them would do to keep data whole: it finishes each
// trace recording and flushes each writable image. The images stay open.
func (d *daemon) finishBeside() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for f, name := range d.files {
		if rec := f.TraceRecorder(); rec != nil {
			if err := rec.Close(); err != nil {
				d.log.Error("finish trace", "device", name, "err", err)
			}
		}
		if f.Writable() {
			if err := f.Sync(); err != nil {
				d.log.Error("flush writable layer", "device", name, "err", err)
			}
		}
	}
}

func (d *daemon) release(devID string) {
	if devID == "" {
		return
	}
	d.mu.Lock()
	delete(d.devIDs, devID)
	d.mu.Unlock()
}

// deviceFile stops the device's background downloads, drops its metrics and
// frees its dev id when the device closes.
type deviceFile struct {
	*image.Image
	d       *daemon
	release func()
}

// Close closes the image and frees its dev id.
func (f *deviceFile) Close() error {
	f.d.mu.Lock()
	delete(f.d.files, f)
	f.d.mu.Unlock()
	defer f.release()
	return f.Image.Close()
}
