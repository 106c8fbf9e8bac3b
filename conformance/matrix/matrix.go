// Package matrix runs the conformance scenarios over the combinations of
// IO engine, codec, envelope, source and cache, layer kind and frontend,
// checks from the implementations' own counters that the named engine and
// codec served the IO, and reports every cell as passed, failed, declared
// impossible or not run (each with its reason).
package matrix

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/overlaybd-go/overlaybd/codecs/crc32c"
	"github.com/overlaybd-go/overlaybd/conformance"
	"github.com/overlaybd-go/overlaybd/conformance/kinds"
	"github.com/overlaybd-go/overlaybd/conformance/nbdclient"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/envelope"
	"github.com/overlaybd-go/overlaybd/core/zfile"
	"github.com/overlaybd-go/overlaybd/plugins"

	_ "github.com/overlaybd-go/overlaybd/codecs/all"  // the codecs
	_ "github.com/overlaybd-go/overlaybd/engines/all" // the IO engines
)

// Status is the outcome of one cell.
type Status string

// The outcomes of a cell.
const (
	Pass Status = "pass"
	Fail Status = "fail"
	// Impossible marks a combination that cannot work together.
	Impossible Status = "declared-impossible"
	// NotRun marks a combination this runner does not drive yet.
	NotRun Status = "not-run"
)

// Cell is one combination of the matrix.
type Cell struct {
	Engine   string `json:"engine"`
	Codec    string `json:"codec"` // "none" or a codec flavour, e.g. "lz4-go"
	CRC      bool   `json:"crc"`
	Envelope string `json:"envelope"` // "plain" or "tar"
	Cache    string `json:"cache"`    // "local", "remote-file", "remote-download", "remote-ocf"
	Layer    string `json:"layer"`    // "committed" or "sealed"
	Upper    string `json:"upper"`    // "none", "append-only" or "sparse"
	Frontend string `json:"frontend"` // "inprocess", "nbd", "tcmu"
}

// String names the cell in tables and failures.
func (c Cell) String() string {
	crc := "crc"
	if !c.CRC {
		crc = "nocrc"
	}
	return strings.Join([]string{c.Engine, c.Codec, crc, c.Envelope, c.Cache, c.Layer, "upper-" + c.Upper, c.Frontend}, "/")
}

// Result is the outcome of one cell.
type Result struct {
	Cell     Cell          `json:"cell"`
	Name     string        `json:"name"`
	Status   Status        `json:"status"`
	Reason   string        `json:"reason,omitempty"`
	Seed     int64         `json:"seed,omitempty"`
	Duration time.Duration `json:"duration_ns"`
	// Engine and Codec are the counters that show the cell's own
	// implementations served the IO.
	Engine *core.EngineStats `json:"engine_stats,omitempty"`
	Codec  *CodecCounts      `json:"codec_stats,omitempty"`
	Cache  *core.CacheStats  `json:"cache_stats,omitempty"`
	// Remote are the registry's and the registry client's counters of
	// remote cells.
	Remote *RemoteCounts `json:"remote_stats,omitempty"`
	// Checksum are the calls of the block checksum (CRC cells).
	Checksum *ChecksumCounts `json:"checksum_stats,omitempty"`
	// NBD are the NBD client's counters of nbd cells (requests, most in
	// flight at once, replies out of order, block-status requests).
	NBD *nbdclient.Stats `json:"nbd_stats,omitempty"`
	// TCMU are the counters of tcmu cells: the disks attached, the block
	// device client's requests and the calls the TCMU server made to the
	// image.
	TCMU *TCMUCounts `json:"tcmu_stats,omitempty"`
	// Note says what a cell that ran could not check.
	Note string `json:"note,omitempty"`
}

// Filter selects cells: an empty field selects every value.
type Filter struct {
	Engine, Codec, Cache, Envelope, Layer, Upper, Frontend string
}

func match(want, got string) bool {
	if want == "" {
		return true
	}
	return slices.Contains(strings.Split(want, ","), got)
}

// Selects reports whether f selects c.
func (f Filter) Selects(c Cell) bool {
	return match(f.Engine, c.Engine) && match(f.Codec, c.Codec) && match(f.Cache, c.Cache) &&
		match(f.Envelope, c.Envelope) && match(f.Layer, c.Layer) && match(f.Upper, c.Upper) && match(f.Frontend, c.Frontend)
}

// Codecs are the codec flavours of the matrix: "none", the pure-Go
// flavours, the cgo flavours (registered with -tags cgo_codecs), and the
// plugin flavours.
func Codecs() []string {
	return []string{"none", "lz4-go", "lz4-native", "lz4-plugin", "zstd-go", "zstd-native", "zstd-plugin"}
}

// Engines are the IO engines of the matrix.
func Engines() []string { return []string{"psync", "libaio", "posixaio", "io_uring"} }

// Cells enumerates the whole matrix.
func Cells() []Cell { return cellsOf(Engines()) }

func cellsOf(engines []string) []Cell {
	var cells []Cell
	for _, fe := range []string{"inprocess", "nbd", "tcmu"} {
		for _, cache := range []string{"local", "remote-file", "remote-download", "remote-ocf"} {
			for _, upper := range []string{"none", "append-only", "sparse"} {
				for _, layer := range []string{"committed", "sealed"} {
					for _, env := range []string{"plain", "tar"} {
						for _, codec := range Codecs() {
							for _, crc := range []bool{true, false} {
								for _, eng := range engines {
									cells = append(cells, Cell{Engine: eng, Codec: codec, CRC: crc, Envelope: env,
										Cache: cache, Layer: layer, Upper: upper, Frontend: fe})
								}
							}
						}
					}
				}
			}
		}
	}
	return cells
}

// Declared returns why c is not run, or "" when it runs: the status is
// Impossible for combinations that cannot work together, NotRun for ones
// this runner does not drive yet or that need what the run was not given.
func (o Options) Declared(c Cell) (Status, string) {
	if c.Codec == "none" && !c.CRC {
		return Impossible, "block CRCs are a ZFile feature; an uncompressed layer has none to turn off (the crc column is the only one of the pair)"
	}
	if st, why := tcmuDeclared(c); st != "" {
		return st, why
	}
	if st, why := remoteDeclared(c); st != "" {
		return st, why
	}
	if strings.HasSuffix(c.Codec, "-native") && !registered(c.Codec) {
		return Impossible, "the cgo codec flavour " + c.Codec + " exists only in builds with -tags cgo_codecs"
	}
	if algo, ok := strings.CutSuffix(c.Codec, "-plugin"); ok && o.PluginBins[algo] == "" {
		return NotRun, "no " + algo + " codec plugin binary was given (--plugin-" + algo + ", built from plugins/examples/" + algo + "-cgo)"
	}
	if !registered2(core.Engines, c.Engine) {
		return Impossible, "IO engine " + c.Engine + " is not registered in this build"
	}
	return "", ""
}

func registered(codec string) bool { return registered2(core.Codecs, codec) }

func registered2[F any](r *core.Registry[F], name string) bool {
	_, err := r.Lookup(name)
	return err == nil
}

// Options tune a run.
type Options struct {
	// Seed fixes the scenarios (0: conformance.Seed()).
	Seed int64
	// Quick runs fewer operations per cell.
	Quick bool
	// EngineOverride, when set, is used instead of the registered engine
	// of the cell's name (to run a deliberately broken engine).
	EngineOverride core.EngineFactory
	// PluginBins are the codec plugin binaries by algorithm ("lz4",
	// "zstd") that serve the "-plugin" codec flavours.
	PluginBins map[string]string
	// Ops, when set, is the number of operations of writable cells and
	// of random reads of read-only cells (default 3,000 and 1,000; with
	// Quick 600 and 200).
	Ops int
	// Engines, when set, replaces the engine dimension (names registered
	// in core.Engines).
	Engines []string
	// WrapFile, when set, wraps the view of every writable device (a test
	// hook that runs deliberately broken implementations).
	WrapFile func(core.File) core.File
	// Logf receives progress (may be nil).
	Logf func(format string, args ...any)
}

// Run runs the selected cells, one at a time (the codec flavour of a cell
// is installed as its algorithm's default while it runs).
func Run(f Filter, opts Options) ([]Result, error) {
	if opts.Seed == 0 {
		s, err := conformance.Seed()
		if err != nil {
			return nil, err
		}
		opts.Seed = s
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	engines := opts.Engines
	if len(engines) == 0 {
		engines = Engines()
	}
	env := newRunEnv()
	defer env.close()
	var out []Result
	for _, c := range cellsOf(engines) {
		if !f.Selects(c) {
			continue
		}
		r := Result{Cell: c, Name: c.String()}
		if st, why := opts.Declared(c); st != "" {
			r.Status, r.Reason = st, why
			out = append(out, r)
			continue
		}
		r.Seed = opts.Seed
		start := time.Now()
		err := runCell(c, opts, env, &r)
		r.Duration = time.Since(start)
		if err != nil {
			r.Status, r.Reason = Fail, err.Error()
		} else {
			r.Status = Pass
		}
		opts.Logf("%s %s (%v)", r.Status, r.Name, r.Duration.Round(time.Millisecond))
		out = append(out, r)
	}
	return out, nil
}

func runCell(c Cell, opts Options, env *runEnv, r *Result) error {
	factory := opts.EngineOverride
	if factory == nil {
		f, err := core.Engines.Lookup(c.Engine)
		if err != nil {
			return err
		}
		factory = f
	}
	eng, err := factory(core.EngineConfig{})
	if err != nil {
		return fmt.Errorf("engine %s: %w", c.Engine, err)
	}
	defer eng.Close()
	dir, err := os.MkdirTemp("", "overlaybd-conformance-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	var plugin *plugins.Plugin
	if algo, ok := strings.CutSuffix(c.Codec, "-plugin"); ok {
		h, err := plugins.Load(context.Background(), []plugins.Config{{Path: opts.PluginBins[algo], Algorithms: []string{algo}}},
			filepath.Dir(opts.PluginBins[algo]), plugins.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
		if err != nil {
			return fmt.Errorf("cell %s: start the %s codec plugin: %w", c, algo, err)
		}
		defer h.Close()
		plugin = h.Plugins()[0]
	}
	var sums *countingChecksum
	if c.Codec != "none" && c.CRC {
		cs, restore, err := installChecksum()
		if err != nil {
			return err
		}
		defer restore()
		sums = cs
	}
	var counts *counting
	if c.Codec != "none" {
		cw, restore, err := installCounting(c.Codec)
		if err != nil {
			return err
		}
		defer restore()
		counts = cw
	}
	logf := func(string, ...any) {}
	name := c.String()
	// The cell's lowers: two committed or sealed layers, compressed and
	// wrapped as the cell says, local files or blobs of a registry read
	// through the cell's cache.
	ro := kinds.LSMTReadOnly{Layers: 2, Seal: c.Layer == "sealed", Tar: c.Envelope == "tar", Engine: eng}
	if c.Codec != "none" {
		ro.ZFile = &zfile.Options{Algorithm: algorithmOf(c.Codec), NoCRC: !c.CRC, Workers: 1}
	}
	var lowers kinds.Lowers = ro
	var nc *nbdCounts
	if c.Frontend == "nbd" {
		nc = &nbdCounts{}
	}
	var tc *tcmuEnv
	if c.Frontend == "tcmu" {
		tc = newTCMUEnv()
		defer func() {
			if err := tc.close(); err != nil {
				opts.Logf("cell %s: stop the TCMU server: %v", name, err)
			}
		}()
		r.Note = tcmuNote
	}
	var rs *remoteStats
	if c.Cache != "local" {
		rs = &remoteStats{}
		lowers = registryLowers{ro: ro, cache: strings.TrimPrefix(c.Cache, "remote-"), env: env, stats: rs}
	}
	if c.Upper == "none" {
		reads := 1000
		if opts.Quick {
			reads = 200
		}
		if opts.Ops > 0 {
			reads = opts.Ops
		}
		var kind conformance.ReadOnlyKind = namedReadOnly{ro, name}
		if rs != nil {
			kind = remoteReadOnly{lowers: lowers.(registryLowers), name: name}
		}
		switch c.Frontend {
		case "nbd":
			kind = nbdReadOnly{kind, nc}
		case "tcmu":
			kind = tcmuReadOnly{kind, tc}
		}
		if err := conformance.RunReadOnly(kind, dir, conformance.ReadOnlyOptions{Seed: opts.Seed, Reads: reads, VirtualSize: 8 << 20,
			ZeroStatus: true, Logf: logf}); err != nil {
			return err
		}
	} else {
		ops := 3000
		if opts.Quick {
			ops = 600
		}
		if opts.Ops > 0 {
			ops = opts.Ops
		}
		wk := kinds.LSMTWritable{Sparse: c.Upper == "sparse", Engine: eng, Lowers: lowers}
		if c.Codec != "none" || c.Envelope == "tar" {
			// The layers the scenario freezes take the cell's envelope
			// too.
			wk.Envelope = &envelope.CreateOptions{ZFile: ro.ZFile, Tar: c.Envelope == "tar"}
		}
		grain, err := wk.AllocationGrain(dir)
		if err != nil {
			return err
		}
		lw := layerWritable{WritableKind: wk, seal: c.Layer == "sealed", wrap: opts.WrapFile}
		if cs, ok := eng.(CrashSimulator); ok {
			lw.crash = cs
		}
		var w conformance.WritableKind = lw
		switch c.Frontend {
		case "nbd":
			w = nbdWritable{w, nc}
		case "tcmu":
			w = tcmuWritable{w, tc}
		}
		if _, err := conformance.RunWritable(w, dir, conformance.WritableOptions{Seed: opts.Seed, Ops: ops, VirtualSize: 8 << 20,
			Base: true, ZeroStatus: true, AllocationGrain: grain, Cell: name, Logf: logf}); err != nil {
			return err
		}
	}
	st := eng.Stats()
	r.Engine = &st
	if nc != nil {
		ns := nc.snapshot()
		r.NBD = &ns
		if ns.Requests == 0 || ns.BlockStatus == 0 {
			return fmt.Errorf("cell %s: the NBD client sent no requests or no block-status request (counters %+v)", name, ns)
		}
	}
	if tc != nil {
		ts := tc.snapshot()
		r.TCMU = &ts
		if err := tc.check(name, c.Upper != "none"); err != nil {
			return err
		}
	}
	if rs != nil {
		r.Cache, r.Remote = &rs.cache, &rs.remote
		if cs := rs.cache; cs.Misses == 0 || cs.FetchedBytes == 0 {
			return fmt.Errorf("cell %s: cache %s did not serve the IO (counters %+v)", name, c.Cache, cs)
		}
		if rc := rs.remote; rc.BlobRequests == 0 || rc.BlobBytes == 0 || rc.TokenRequests == 0 || rc.AuthRounds == 0 {
			return fmt.Errorf("cell %s: the registry did not serve the lowers with authentication (counters %+v)", name, rc)
		}
	}
	if st.Reads == 0 {
		return fmt.Errorf("cell %s: engine %s did not serve the reads (counters %+v)", name, c.Engine, st)
	}
	if st.Writes == 0 {
		return fmt.Errorf("cell %s: engine %s did not serve the IO (counters %+v)", name, c.Engine, st)
	}
	if counts != nil {
		cc := counts.snapshot()
		r.Codec = &cc
		if cc.Compress == 0 || cc.Decompress == 0 {
			return fmt.Errorf("cell %s: codec %s did not serve the IO (counters %+v)", name, c.Codec, cc)
		}
	}
	if sums != nil {
		r.Checksum = &ChecksumCounts{Flavour: sums.Checksum.Name(), Updates: sums.updates.Load()}
		if r.Checksum.Updates == 0 {
			return fmt.Errorf("cell %s: checksum %s did not serve the block CRCs (counters %+v)", name, r.Checksum.Flavour, *r.Checksum)
		}
	}
	if plugin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ps, err := plugin.Stats(ctx)
		if err != nil {
			return fmt.Errorf("cell %s: plugin counters: %w", name, err)
		}
		cs := ps.Codecs[algorithmOf(c.Codec)]
		r.Codec.PluginDecompressed, r.Codec.PluginCompressed = cs.Decompressed, cs.Compressed
		if cs.Decompressed == 0 || cs.Compressed == 0 {
			return fmt.Errorf("cell %s: the %s plugin did not serve the IO (plugin counters %+v)", name, c.Codec, cs)
		}
	}
	return nil
}

// algorithmOf is the algorithm a flavour implements ("lz4-go" → "lz4").
func algorithmOf(flavour string) string {
	a, _, _ := strings.Cut(flavour, "-")
	return a
}

// namedReadOnly gives a read-only kind the cell's name, so failures name
// the cell.
type namedReadOnly struct {
	conformance.ReadOnlyKind
	name string
}

func (n namedReadOnly) Name() string { return n.name }

// CodecCounts are the calls a cell's codec flavour served.
type CodecCounts struct {
	Flavour    string `json:"flavour"`
	Compress   uint64 `json:"compress"`
	Decompress uint64 `json:"decompress"`
	// PluginCompressed and PluginDecompressed are the blocks a codec
	// plugin reports it served (plugin flavours only).
	PluginCompressed   uint64 `json:"plugin_compressed,omitempty"`
	PluginDecompressed uint64 `json:"plugin_decompressed,omitempty"`
}

// counting counts the calls to a codec.
type counting struct {
	core.Codec
	flavour              string
	compress, decompress atomic.Uint64
}

func (c *counting) Compress(dst, src []byte) (int, error) {
	c.compress.Add(1)
	return c.Codec.Compress(dst, src)
}

func (c *counting) Decompress(dst, src []byte) (int, error) {
	c.decompress.Add(1)
	return c.Codec.Decompress(dst, src)
}

func (c *counting) snapshot() CodecCounts {
	return CodecCounts{Flavour: c.flavour, Compress: c.compress.Load(), Decompress: c.decompress.Load()}
}

// installCounting registers a counting wrapper of the flavour as its
// algorithm's default (name and ZFile number, which the ZFile writer and
// reader resolve) and returns it with the function that restores the
// previous default.
func installCounting(flavour string) (*counting, func(), error) {
	name := flavour
	if algo, ok := strings.CutSuffix(flavour, "-plugin"); ok {
		name = algo // the plugin host registered the plugin's codec under it
	}
	factory, err := core.Codecs.Lookup(name)
	if err != nil {
		return nil, nil, fmt.Errorf("codec %s: %w", flavour, err)
	}
	inner, err := factory()
	if err != nil {
		return nil, nil, fmt.Errorf("codec %s: %w", flavour, err)
	}
	algo := algorithmOf(flavour)
	num, ok := core.Codecs.NumberOf(algo)
	if !ok {
		return nil, nil, fmt.Errorf("codec %s: algorithm %s has no ZFile number", flavour, algo)
	}
	prev, err := core.Codecs.Lookup(algo)
	if err != nil {
		return nil, nil, err
	}
	cw := &counting{Codec: inner, flavour: flavour}
	core.Codecs.Register(algo, num, func() (core.Codec, error) { return cw, nil })
	return cw, func() { core.Codecs.Register(algo, num, prev) }, nil
}

// ChecksumCounts are the calls a cell's block checksum served.
type ChecksumCounts struct {
	// Flavour is the registered crc32c flavour: crc32c-isal in builds
	// with -tags isal, crc32c-go otherwise.
	Flavour string `json:"flavour"`
	Updates uint64 `json:"updates"`
}

// countingChecksum counts the calls to a checksum.
type countingChecksum struct {
	core.Checksum
	updates atomic.Uint64
}

func (c *countingChecksum) Update(crc uint32, p []byte) uint32 {
	c.updates.Add(1)
	return c.Checksum.Update(crc, p)
}

// installChecksum registers a counting wrapper of the registered "crc32c"
// flavour (which the ZFile writer and reader resolve) and returns it with
// the function that restores the flavour.
func installChecksum() (*countingChecksum, func(), error) {
	prev, err := core.Checksums.Lookup(crc32c.Name)
	if err != nil {
		return nil, nil, fmt.Errorf("checksum: %w", err)
	}
	cc := &countingChecksum{Checksum: prev()}
	core.Checksums.Register(crc32c.Name, core.NoNumber, func() core.Checksum { return cc })
	return cc, func() { core.Checksums.Register(crc32c.Name, core.NoNumber, prev) }, nil
}
