// Package plugins hosts out-of-process codec plugins: separate binaries that
// serve ZFile's lz4 or zstd codec, so that a codec in a C library, a hardware
// accelerator or a vendor's compressor never enters the daemon's process and
// a crashing codec never takes it down.
//
// The host launches, handshakes with, health-checks, restarts and stops
// plugin binaries with hashicorp/go-plugin, and forwards their logs to
// log/slog. The control plane (which codecs the plugin serves, its limits,
// its version, its counters) is a gRPC service over go-plugin's connection.
// Block data never crosses gRPC: at launch the host hands the plugin a
// memfd of shared memory divided into lanes, and one SOCK_SEQPACKET socket
// (the doorbell) per lane; a doorbell message carries a batch of up to 256
// block descriptors, the reply their lengths and CRC32C checksums, which the
// host verifies before it uses a byte.
//
// [Load] starts the plugins named by overlaybd.json's codecPlugins and
// registers their codecs in core.Codecs under their ZFile names, in place of
// the built-in ones, for encoding and decoding. Plugin authors use the sdk
// package; docs/plugins.md covers configuration, trust and the protocol.
package plugins

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/plugins/internal/wire"
)

// zfileAlgorithms are the ZFile algorithm numbers of the codecs a plugin may
// serve (FORMAT-ZFILE §3); a plugin never adds one.
var zfileAlgorithms = map[string]int{"lz4": 1, "zstd": 2}

// Config is one entry of overlaybd.json's codecPlugins.
type Config = config.CodecPlugin

// Stats are a plugin process's counters since it started: blocks and bytes
// per codec and direction, batches and per-call requests served.
type Stats = wire.Stats

// CodecStats are the counters of one codec within Stats.
type CodecStats = wire.CodecStats

// Option tunes the host.
type Option func(*options)

type options struct {
	logger         *slog.Logger
	callTimeout    time.Duration
	startTimeout   time.Duration
	healthInterval time.Duration
	lanes          int
	laneSize       int
}

func defaultOptions() options {
	return options{
		logger:         slog.Default(),
		callTimeout:    10 * time.Second,
		startTimeout:   30 * time.Second,
		healthInterval: 5 * time.Second,
		lanes:          4,
		laneSize:       9 << 20, // 64 blocks of 64 KiB in and out, with bounds
	}
}

// WithLogger sets the logger of the host and of the plugins' forwarded logs
// (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithCallTimeout bounds the time a plugin may take to answer one request
// (default 10 s). A plugin that does not answer in time is killed and
// restarted, and the request fails with ErrTimeout.
func WithCallTimeout(d time.Duration) Option { return func(o *options) { o.callTimeout = d } }

// WithStartTimeout bounds a plugin's start-up and handshake (default 30 s).
func WithStartTimeout(d time.Duration) Option { return func(o *options) { o.startTimeout = d } }

// WithHealthInterval sets how often the host pings each plugin and restarts
// one that died while idle (default 5 s).
func WithHealthInterval(d time.Duration) Option { return func(o *options) { o.healthInterval = d } }

// WithLanes sets the number of data plane lanes per plugin, i.e. how many
// batches may be in flight at once (default 4, at most 64), and the bytes of
// shared memory per lane (default 9 MiB; 0 keeps the default).
func WithLanes(n, laneSize int) Option {
	return func(o *options) {
		if n > 0 {
			o.lanes = min(n, wire.MaxLanes)
		}
		if laneSize > 0 {
			o.laneSize = min(laneSize, wire.MaxLaneSize)
		}
	}
}

// Host owns the plugins of one configuration and their registration in
// core.Codecs.
type Host struct {
	plugins []*Plugin
	restore []func()
}

// Load starts every plugin of cfgs and registers each plugin's algorithms in
// core.Codecs, in place of what was registered before. configDir is the base
// of relative plugin paths (config.LoadGlobal already makes them absolute).
// A plugin that cannot be started (missing binary, untrusted binary, sha256
// mismatch, handshake or version mismatch, an algorithm it does not serve)
// is an error naming it; nothing stays running or registered then. With no
// entries Load returns an empty Host. Close stops the plugins and restores
// the previous registrations.
func Load(ctx context.Context, cfgs []Config, configDir string, opts ...Option) (*Host, error) {
	h := &Host{}
	seen := map[string]string{}
	for i, cfg := range cfgs {
		if cfg.Path != "" && !filepath.IsAbs(cfg.Path) {
			cfg.Path = filepath.Join(configDir, cfg.Path)
		}
		for _, alg := range cfg.Algorithms {
			if prev, dup := seen[alg]; dup {
				h.Close()
				return nil, fmt.Errorf("codecPlugins[%d] (%s): algorithm %q is already served by %s", i, cfg.Path, alg, prev)
			}
			seen[alg] = cfg.Path
		}
		p, err := Start(ctx, cfg, opts...)
		if err != nil {
			h.Close()
			return nil, fmt.Errorf("codecPlugins[%d]: %w", i, err)
		}
		h.plugins = append(h.plugins, p)
	}
	for _, p := range h.plugins {
		for _, alg := range p.cfg.Algorithms {
			c, err := p.Codec(alg)
			if err != nil {
				h.Close()
				return nil, err
			}
			num := zfileAlgorithms[alg]
			prev, perr := core.Codecs.Lookup(alg)
			core.Codecs.Register(alg, num, func() (core.Codec, error) { return c, nil })
			h.restore = append(h.restore, func() {
				if perr == nil {
					core.Codecs.Register(alg, num, prev)
					return
				}
				core.Codecs.Register(alg, num, func() (core.Codec, error) {
					return nil, fmt.Errorf("codec %q: its plugin is stopped: %w", alg, core.ErrClosed)
				})
			})
		}
	}
	return h, nil
}

// Plugins returns the host's plugins, in configuration order.
func (h *Host) Plugins() []*Plugin { return h.plugins }

// Close restores the codecs registered before Load and stops every plugin,
// waiting for their processes and goroutines.
func (h *Host) Close() error {
	if h == nil {
		return nil
	}
	for i := len(h.restore) - 1; i >= 0; i-- {
		h.restore[i]()
	}
	h.restore = nil
	var errs []error
	for _, p := range h.plugins {
		errs = append(errs, p.Close())
	}
	return errors.Join(errs...)
}

// Plugin is one supervised plugin binary: at most one running process at a
// time, restarted when it crashes, hangs or breaks the protocol.
type Plugin struct {
	cfg  Config
	path string
	opts options
	log  *slog.Logger
	hlog hclog.Logger

	mu        sync.Mutex
	cur       *instance
	closed    bool
	restarts  int
	retired   Stats // what the host counted of the retired processes
	backoff   time.Duration
	nextStart time.Time

	stop chan struct{}
	wg   sync.WaitGroup // supervisor and teardowns
}

// Start checks and starts one plugin binary and supervises it until Close.
// cfg.Path must be absolute.
func Start(ctx context.Context, cfg Config, opts ...Option) (*Plugin, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if !filepath.IsAbs(cfg.Path) {
		return nil, fmt.Errorf("codec plugin %q: path is not absolute", cfg.Path)
	}
	if len(cfg.Algorithms) == 0 {
		return nil, fmt.Errorf("codec plugin %s: no algorithms configured", cfg.Path)
	}
	for _, alg := range cfg.Algorithms {
		if _, ok := zfileAlgorithms[alg]; !ok {
			return nil, fmt.Errorf("codec plugin %s: algorithm %q is not a ZFile codec (lz4, zstd)", cfg.Path, alg)
		}
	}
	real, err := checkTrusted(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("codec plugin %s: %w", cfg.Path, err)
	}
	log := o.logger.With("plugin", cfg.Path)
	p := &Plugin{cfg: cfg, path: real, opts: o, log: log, hlog: newHCLogger(log), stop: make(chan struct{})}
	in, err := launch(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("codec plugin %s: %w", cfg.Path, err)
	}
	p.cur = in
	log.Info("codec plugin started", "pid", in.pid, "version", in.info.Version, "algorithms", cfg.Algorithms)
	p.wg.Add(1)
	go p.supervise()
	return p, nil
}

// Version is the version string the running plugin reports.
func (p *Plugin) Version() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil {
		return ""
	}
	return p.cur.info.Version
}

// Pid is the process id of the running plugin, 0 when none runs.
func (p *Plugin) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil {
		return 0
	}
	return p.cur.pid
}

// Restarts counts the plugin processes retired since Start (crashes, hangs,
// protocol violations, failed health checks).
func (p *Plugin) Restarts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.restarts
}

// Stats are the plugin's counters since Start: the running process's own
// (it is started if none runs), plus, for each process retired since (a
// crash, a hang, a failed health check), the blocks and batches the host
// counted from its replies. Calls are the running process's only.
func (p *Plugin) Stats(ctx context.Context) (*Stats, error) {
	in, err := p.instance(ctx)
	if err != nil {
		return nil, err
	}
	st, err := in.ctrl.Stats(ctx)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	st.Batches += p.retired.Batches
	for name, r := range p.retired.Codecs {
		if st.Codecs == nil {
			st.Codecs = map[string]CodecStats{}
		}
		c := st.Codecs[name]
		c.Decompressed += r.Decompressed
		c.DecompressedBytes += r.DecompressedBytes
		c.Compressed += r.Compressed
		c.CompressedBytes += r.CompressedBytes
		c.Errors += r.Errors
		st.Codecs[name] = c
	}
	return st, nil
}

// keepTally adds what the host counted of in, which is being retired, to
// p.retired. p.mu is held.
func (p *Plugin) keepTally(in *instance) {
	p.retired.Batches += in.served.Load()
	for name, num := range zfileAlgorithms {
		if num >= len(in.tally) {
			continue
		}
		if p.retired.Codecs == nil {
			p.retired.Codecs = map[string]CodecStats{}
		}
		c := p.retired.Codecs[name]
		in.tally[num].addTo(&c)
		p.retired.Codecs[name] = c
	}
}

// instance returns the running instance, starting one if none runs.
func (p *Plugin) instance(ctx context.Context) (*instance, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("codec plugin %s: %w", p.cfg.Path, core.ErrClosed)
	}
	if p.cur != nil && !p.cur.dead.Load() {
		return p.cur, nil
	}
	if wait := time.Until(p.nextStart); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	in, err := launch(ctx, p)
	if err != nil {
		p.noteStart(time.Now(), false)
		p.log.Error("codec plugin restart failed", "err", err)
		return nil, fmt.Errorf("%w: %w: restart %s: %w", ErrPluginFailed, core.ErrCorrupt, p.cfg.Path, err)
	}
	p.noteStart(in.start, true)
	p.cur = in
	p.log.Info("codec plugin restarted", "pid", in.pid, "restarts", p.restarts)
	return in, nil
}

// noteStart sets the back-off before the next start: none after a start
// that worked, doubling from 100 ms up to 10 s while starts keep failing or
// processes keep failing before they served anything.
func (p *Plugin) noteStart(at time.Time, ok bool) {
	if ok {
		p.nextStart = time.Time{}
		return
	}
	p.backoff = min(max(2*p.backoff, 100*time.Millisecond), 10*time.Second)
	p.nextStart = at.Add(p.backoff)
}

// retire takes in out of service after err and stops it in the background.
// A process that served requests before it failed is replaced at once (the
// failure may belong to one request); one that failed before serving
// anything is replaced after the back-off, so that a plugin failing at
// every request does not spin.
func (p *Plugin) retire(in *instance, err error) {
	p.mu.Lock()
	if p.cur == in {
		p.cur = nil
		p.restarts++
		p.keepTally(in)
		if in.served.Load() > 0 {
			p.backoff = 0
		} else {
			p.noteStart(time.Now(), false)
		}
		p.log.Warn("codec plugin retired", "pid", in.pid, "err", err)
	}
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		in.teardown()
	}()
}

// supervise checks the running plugin's health (a control call with a
// deadline: go-plugin's Ping has none) and restarts one that died while
// idle.
func (p *Plugin) supervise() {
	defer p.wg.Done()
	t := time.NewTicker(p.opts.healthInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		p.mu.Lock()
		in := p.cur
		p.mu.Unlock()
		if in == nil {
			ctx, cancel := context.WithTimeout(context.Background(), p.opts.startTimeout)
			_, _ = p.instance(ctx) // errors are logged; requests retry
			cancel()
			continue
		}
		if in.client.Exited() {
			p.retire(in, errors.New("process exited"))
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), p.opts.callTimeout)
		_, err := in.ctrl.Info(ctx)
		cancel()
		if err != nil {
			p.retire(in, fmt.Errorf("health check: %w", err))
		}
	}
}

// Close stops the plugin and waits for its process and goroutines.
func (p *Plugin) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	in := p.cur
	p.cur = nil
	close(p.stop)
	p.mu.Unlock()
	if in != nil {
		in.teardown()
	}
	p.wg.Wait()
	return nil
}

// do serves blocks through the data plane. A request whose process dies
// under it is retried once on a fresh process; a hang, a protocol violation
// or a bad checksum fails the request and retires the process.
func (p *Plugin) do(op, id uint8, blocks []core.CodecBlock) error {
	ctx := context.Background()
	retried := false
	for gone := 0; ; {
		in, err := p.instance(ctx)
		if err != nil {
			return err
		}
		err = in.run(op, id, blocks)
		if err == nil {
			return nil
		}
		if errors.Is(err, errGone) && gone < 3 {
			gone++
			continue
		}
		var f *failure
		if !errors.As(err, &f) {
			return fmt.Errorf("codec plugin %s: %w", p.cfg.Path, err)
		}
		p.retire(in, err)
		if f.retryable && !retried {
			retried = true
			p.log.Warn("retrying request on a restarted plugin", "err", err)
			continue
		}
		for i := range blocks {
			blocks[i].N, blocks[i].Err = 0, err
		}
		return fmt.Errorf("codec plugin %s: %w", p.cfg.Path, err)
	}
}

// LoadGlobal is Load for the codecPlugins of a parsed overlaybd.json: the
// daemons and tools call it once after config.LoadGlobal and Close the Host
// on exit.
func LoadGlobal(ctx context.Context, g *config.Global, opts ...Option) (*Host, error) {
	return Load(ctx, g.CodecPlugins, filepath.Dir(g.File), opts...)
}
