// Package image opens a whole overlaybd image from its per-device
// configuration (config.v1.json) and the global one (overlaybd.json), the way
// upstream's image service does (CONFIG.md §5): every lower layer is found
// locally (file, then dir/overlaybd.commit, dir/.commit, dir/overlaybd.sealed)
// or, failing that, opened remotely through a pluggable [RemoteOpener]; each
// may be a plain LSMT layer, a ZFile or tar-wrapped (core/envelope); the
// lowers are stacked under the optional writable upper (append-only, or
// sparse); local lower files are read through the IO engine the global
// configuration names. The outcome is written to the config's resultFile
// exactly as upstream writes it ("success", or "failed:" and upstream's
// reason). An image with a trace (recordTracePath, or the acceleration
// layer's) records the reads of its lowers or replays them in the
// background to warm the caches (trace.go, docs/prefetch.md).
package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/core/envelope"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/core/prefetch"
	"github.com/overlaybd-go/overlaybd/core/remote"
	"github.com/overlaybd-go/overlaybd/engines/psync"
)

// RemoteOpener opens the blob of a lower layer that has no local copy, from
// the image's repository. url is upstream's blob URL (repoBlobUrl, a "/"
// unless it already ends with one, and the digest). The returned file holds
// the blob as stored (tar envelope, ZFile or LSMT: the image unwraps it).
// Errors that carry upstream's result-file reason implement
// config.ResultReasoner; others are reported as
// "failed to open remote file <url>: <error>".
type RemoteOpener interface {
	OpenRemote(ctx context.Context, url string, layer config.Layer) (core.File, error)
}

// RemoteOpenerFunc adapts a function to RemoteOpener.
type RemoteOpenerFunc func(ctx context.Context, url string, layer config.Layer) (core.File, error)

// OpenRemote implements RemoteOpener.
func (f RemoteOpenerFunc) OpenRemote(ctx context.Context, url string, layer config.Layer) (core.File, error) {
	return f(ctx, url, layer)
}

// Options tune Open.
type Options struct {
	// Global is the global configuration (nil: built-in defaults). Its
	// ioEngine selects the engine of local lower files.
	Global *config.Global
	// Engine, when set, is used for local lower files instead of creating
	// one from Global; the caller keeps owning it.
	Engine core.Engine
	// Remote opens lowers without a local copy. Nil: such layers fail with
	// a clear reason.
	Remote RemoteOpener
	// ReadOnly ignores the configured upper layer: the image is the stacked
	// lowers, read-only.
	ReadOnly bool
	// Logger receives log lines (nil: slog.Default()).
	Logger *slog.Logger
	// NoTrace skips trace record and replay (recordTracePath, the
	// acceleration layer's trace), for tools that read an image once
	// rather than serve it as a device. An acceleration layer is still
	// left out of the stack.
	NoTrace bool
}

// ErrNoRemote is wrapped by the error of a layer that must be fetched
// remotely when Options.Remote is nil.
var ErrNoRemote = errors.New("remote layers are not configured")

// parallelLoad bounds the lowers opened at once (upstream's
// PARALLEL_LOAD_INDEX).
const parallelLoad = 32

// Image is an opened image: the merged block device of its layers. It is a
// core.File, core.Discarder, core.ZeroWriter and core.BlockStatuser; writes
// fail with core.ErrReadOnly unless the image has an upper layer. Offsets and
// lengths must be multiples of core.SectorSize.
type Image struct {
	*lsmt.Stack
	// Config is the configuration the image was opened from.
	Config *config.Image
	// Layers describes the lowers, bottom first.
	Layers []LayerInfo

	writable bool
	engine   core.Engine // owned, or nil
	recorder *prefetch.Recorder
	replayer *prefetch.Replayer
	once     sync.Once
	closeErr error
}

// LayerInfo says where a lower came from.
type LayerInfo struct {
	// Path is the local file, or the remote URL.
	Path string
	// Remote reports that the layer was opened through the RemoteOpener.
	Remote bool
	// Envelope describes the wrappers (tar, zfile) found around the layer.
	Envelope *envelope.Description

	file core.File // the unwrapped layer file, read by trace replay
}

// Writable reports whether the image has an upper layer.
func (img *Image) Writable() bool { return img.writable }

// Close stops the trace replay (waiting for its workers), syncs the upper
// layer (if any), writes the recorded trace (if any), then closes every
// layer and the engine the image created.
func (img *Image) Close() error {
	img.once.Do(func() {
		var errs []error
		img.stopReplay()
		if img.writable {
			if err := img.Stack.Sync(); err != nil {
				errs = append(errs, fmt.Errorf("image: sync upper: %w", err))
			}
		}
		if err := img.finishTrace(); err != nil {
			errs = append(errs, err)
		}
		if err := img.Stack.Close(); err != nil {
			errs = append(errs, fmt.Errorf("image: close layers: %w", err))
		}
		if img.engine != nil {
			if err := img.engine.Close(); err != nil {
				errs = append(errs, fmt.Errorf("image: close io engine: %w", err))
			}
		}
		img.closeErr = errors.Join(errs...)
	})
	return img.closeErr
}

// OpenError is the error of an image that failed to open. Reason is
// upstream's result-file reason (possibly empty, as upstream writes for a
// failed upper); Err is the underlying error.
type OpenError struct {
	Reason string
	Err    error
}

// Error implements error.
func (e *OpenError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("image: %v", e.Err)
	}
	if e.Err == nil || e.Err.Error() == e.Reason {
		return "image: " + e.Reason
	}
	return fmt.Sprintf("image: %s: %v", e.Reason, e.Err)
}

// Unwrap returns the underlying error.
func (e *OpenError) Unwrap() error { return e.Err }

// ResultReason implements config.ResultReasoner.
func (e *OpenError) ResultReason() string { return e.Reason }

func fail(reason string, err error) error { return &OpenError{Reason: reason, Err: err} }

// OpenFile loads config.v1.json from path and opens the image (see Open). A
// configuration that does not parse is an error and, as upstream, no result
// file is written.
func OpenFile(ctx context.Context, path string, opts Options) (*Image, error) {
	cfg, err := config.LoadImage(path, opts.Global)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	return Open(ctx, cfg, opts)
}

// Open opens the image cfg describes and writes the outcome to its
// resultFile. A failure to write the result file is logged, not returned,
// as upstream ignores it.
func Open(ctx context.Context, cfg *config.Image, opts Options) (*Image, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("image", cfg.File)
	img, err := open(ctx, cfg, opts, log)
	if werr := config.WriteResult(cfg.ResultFile, err); werr != nil {
		log.Warn("cannot write the result file", "path", cfg.ResultFile, "err", werr)
	}
	if err != nil {
		return nil, err
	}
	return img, nil
}

func open(ctx context.Context, cfg *config.Image, opts Options, log *slog.Logger) (*Image, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fail(validationReason(cfg, err), err)
	}
	for i, l := range cfg.Lowers {
		if l.TargetFile != "" || l.TargetDigest != "" || l.GzipIndex != "" {
			return nil, fail(fmt.Sprintf("turboOCI layers (targetFile/targetDigest/gzipIndex of layer %d) are not supported yet", i),
				fmt.Errorf("lower %d: %w", i, core.ErrUnsupported))
		}
	}
	if cfg.Upper.Target != "" || cfg.Upper.GzipIndex != "" {
		return nil, fail("turboOCI upper layers (upper.target/upper.gzipIndex) are not supported yet",
			fmt.Errorf("upper: %w", core.ErrUnsupported))
	}

	lowers := cfg.Lowers
	var accel *config.Layer
	if cfg.AccelerationLayer && len(lowers) > 0 {
		// The last lower is the acceleration layer: its trace drives
		// prefetching and it is not part of the device.
		accel = &lowers[len(lowers)-1]
		lowers = lowers[:len(lowers)-1]
	}
	trace := &tracing{}
	if !opts.NoTrace {
		trace = setupTrace(cfg, accel, log)
	}
	img, err := openStack(ctx, cfg, lowers, opts, trace, log)
	if err != nil {
		trace.abort()
		return nil, err
	}
	img.recorder = trace.rec
	img.replayer = trace.start(img.Layers, opts.Global, log)
	return img, nil
}

// openStack opens the lowers (each unwrapped file passed through
// trace.wrap) and the upper, and stacks them.
func openStack(ctx context.Context, cfg *config.Image, lowers []config.Layer, opts Options, trace *tracing,
	log *slog.Logger) (*Image, error) {
	engine := opts.Engine
	var ownEngine core.Engine
	if engine == nil && len(lowers) > 0 {
		g := opts.Global
		if g == nil {
			g = config.DefaultGlobal()
		}
		name, factory, err := g.IOEngine.Factory()
		if err != nil {
			return nil, fail("unknown io_engine", err)
		}
		engine, err = factory(core.EngineConfig{Logger: log})
		if err != nil {
			return nil, fail(fmt.Sprintf("failed to create io engine %s", name), err)
		}
		ownEngine = engine
	}
	closeEngine := func() {
		if ownEngine != nil {
			ownEngine.Close()
		}
	}

	layers, infos, err := openLowers(ctx, cfg, lowers, engine, opts.Remote, trace, log)
	if err != nil {
		closeEngine()
		return nil, err
	}
	closeLowers := func() {
		for _, l := range layers {
			l.Close()
		}
	}

	var upper *lsmt.Writable
	writable := cfg.Writable() && !opts.ReadOnly
	if writable {
		upper, err = openUpper(cfg.Upper)
		if err != nil {
			closeLowers()
			closeEngine()
			return nil, fail("", err) // upstream records no message
		}
	}
	stack, err := lsmt.NewStack(layers, upper)
	if err != nil {
		if upper != nil {
			upper.Close()
		}
		closeLowers()
		closeEngine()
		return nil, fail("failed to create overlaybd device", err)
	}
	log.Debug("image opened", "lowers", len(layers), "writable", writable, "size", stack.Size())
	return &Image{Stack: stack, Config: cfg, Layers: infos, writable: writable, engine: ownEngine}, nil
}

// validationReason maps a configuration that cannot be opened to upstream's
// result text where upstream has one.
func validationReason(cfg *config.Image, err error) string {
	if cfg.AccelerationLayer && cfg.RecordTracePath != "" {
		return "" // upstream: "failed:" with an empty message
	}
	return config.ResultReason(err)
}

// openLowers opens the lowers concurrently (at most parallelLoad at once);
// the first failure stops workers from taking new layers, and the failure
// of the lowest-numbered layer is reported.
func openLowers(ctx context.Context, cfg *config.Image, lowers []config.Layer, engine core.Engine,
	remote RemoteOpener, trace *tracing, log *slog.Logger) ([]*lsmt.ReadOnly, []LayerInfo, error) {
	n := len(lowers)
	layers := make([]*lsmt.ReadOnly, n)
	infos := make([]LayerInfo, n)
	errs := make([]error, n)
	var (
		mu     sync.Mutex
		next   int
		failed bool
		wg     sync.WaitGroup
	)
	take := func() int {
		mu.Lock()
		defer mu.Unlock()
		if failed || next >= n {
			return -1
		}
		next++
		return next - 1
	}
	for range min(n, parallelLoad) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := take(); i >= 0; i = take() {
				layers[i], infos[i], errs[i] = openLower(ctx, cfg, i, lowers[i], engine, remote, trace, log)
				if errs[i] != nil {
					mu.Lock()
					failed = true
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			for _, l := range layers {
				if l != nil {
					l.Close()
				}
			}
			var oe *OpenError
			if !errors.As(err, &oe) {
				err = fail(fmt.Sprintf("failed to open layer %d", i), err)
			}
			return nil, nil, err
		}
	}
	return layers, infos, nil
}

// openLower opens lower i: the first local candidate that exists, else the
// remote blob; then unwraps it and opens it as an LSMT layer. The
// unwrapped file is what a trace records and replays (upstream's prefetch
// wrapper sits between the ZFile switch and the LSMT reader).
func openLower(ctx context.Context, cfg *config.Image, i int, l config.Layer, engine core.Engine,
	opener RemoteOpener, trace *tracing, log *slog.Logger) (*lsmt.ReadOnly, LayerInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, LayerInfo{}, err
	}
	var (
		f    core.File
		info LayerInfo
	)
	for _, p := range l.LocalCandidates() {
		if _, err := os.Stat(p); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, info, fail("failed to open local file "+p, fmt.Errorf("lower %d: %w", i, err))
		}
		var err error
		f, err = engine.Open(p, core.OpenOptions{Flag: os.O_RDONLY})
		if err != nil {
			return nil, info, fail("failed to open local file "+p, fmt.Errorf("lower %d: %w", i, err))
		}
		info.Path = p
		break
	}
	if f == nil {
		if l.Digest == "" {
			return nil, info, fail(fmt.Sprintf("failed to open layer %d", i),
				fmt.Errorf("lower %d: no local file among %q and no digest: %w", i, l.LocalCandidates(), fs.ErrNotExist))
		}
		if cfg.RepoBlobURL == "" {
			return nil, info, fail("empty repoBlobUrl", fmt.Errorf("lower %d (%s) has no local copy", i, l.Digest))
		}
		url := remote.Redact(BlobURL(cfg.RepoBlobURL, l.Digest))
		if opener == nil {
			return nil, info, fail(fmt.Sprintf("failed to open remote file %s: %v", url, ErrNoRemote),
				fmt.Errorf("lower %d: %w", i, ErrNoRemote))
		}
		if l.Dir == "" {
			log.Warn("layer has no dir: background download disabled", "layer", i)
		}
		var err error
		f, err = opener.OpenRemote(ctx, BlobURL(cfg.RepoBlobURL, l.Digest), l)
		if err != nil {
			var rr config.ResultReasoner
			if errors.As(err, &rr) {
				return nil, info, fmt.Errorf("lower %d: %w", i, err)
			}
			return nil, info, fail(fmt.Sprintf("failed to open remote file %s: %s", url, remote.Reason(err)), fmt.Errorf("lower %d: %w", i, err))
		}
		info.Path, info.Remote = url, true
	}
	what := "file"
	if info.Remote {
		what = "remote file"
	}
	// Upstream's first read of a layer is the tar adaptor's header probe:
	// a layer that cannot be read at all fails there (for a remote layer
	// this is where registry errors surface).
	var probe [512]byte
	if n, err := f.ReadAt(probe[:min(int64(len(probe)), f.Size())], 0); err != nil && !(errors.Is(err, io.EOF) && n > 0) {
		f.Close()
		reason := fmt.Sprintf("failed to open %s as tar file %s", what, info.Path)
		if info.Remote {
			reason += ": " + remote.Reason(err)
		}
		return nil, info, fail(reason, fmt.Errorf("lower %d: read: %w", i, err))
	}
	inner, desc, err := envelope.Open(f)
	if err != nil {
		f.Close()
		if isTarError(err) {
			reason := fmt.Sprintf("failed to open %s as tar file %s", what, info.Path)
			if info.Remote {
				reason += ": " + remote.Reason(err)
			}
			return nil, info, fail(reason, fmt.Errorf("lower %d: %w", i, err))
		}
		return nil, info, fail("failed to open switch file "+info.Path, fmt.Errorf("lower %d: %w", i, err))
	}
	info.Envelope = desc
	info.file = inner
	ro, err := lsmt.OpenReadOnly(trace.wrap(i, inner))
	if err != nil {
		inner.Close()
		return nil, info, fail("failed to create overlaybd device", fmt.Errorf("lower %d (%s, %s): %w", i, info.Path, desc, err))
	}
	return ro, info, nil
}

func isTarError(err error) bool {
	s := err.Error()
	return strings.Contains(s, "envelope: tar") || strings.Contains(s, "read tar")
}

// BlobURL is upstream's URL of a layer blob: repoBlobURL, a "/" unless it
// already ends with one, and the digest (remote.BlobURL).
func BlobURL(repoBlobURL, digest string) string { return remote.BlobURL(repoBlobURL, digest) }

// openUpper opens the writable layer: data and index O_RDWR (they must
// exist, created by overlaybd-create). A sparse layer whose index file does
// not exist opens with its data file alone.
func openUpper(u config.Upper) (*lsmt.Writable, error) {
	eng := psync.New(core.EngineConfig{})
	data, err := eng.Open(u.Data, core.OpenOptions{Flag: os.O_RDWR})
	if err != nil {
		return nil, fmt.Errorf("open upper data: %w", err)
	}
	var index core.File
	index, err = eng.Open(u.Index, core.OpenOptions{Flag: os.O_RDWR})
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			data.Close()
			return nil, fmt.Errorf("open upper index: %w", err)
		}
		index = nil
	}
	w, err := lsmt.OpenWritable(data, index)
	if err != nil {
		data.Close()
		if index != nil {
			index.Close()
		}
		return nil, fmt.Errorf("open upper (%s, %s): %w", u.Data, u.Index, err)
	}
	return w, nil
}
