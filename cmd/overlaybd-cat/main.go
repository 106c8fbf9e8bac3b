// Command overlaybd-cat writes the merged virtual disk of overlaybd layers,
// or of an image configuration, as raw bytes:
//
//	overlaybd-cat [--service_config_path F] [-o FILE]
//	              (--config CONFIG.v1.json | [--upper-data D [--upper-index I]] LAYER...)
//
// LAYERs are given lowest first; each may be a committed or sealed LSMT
// layer, a ZFile of one, or either wrapped in overlaybd's tar envelope. The
// view goes to standard output, or to FILE, which is then sparse: holes where
// the view is unmapped or zeroed. Every input is opened read-only and nothing
// is modified (no result file is written for --config).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"golang.org/x/term"

	_ "github.com/overlaybd-go/overlaybd/codecs/all"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/core/envelope"
	"github.com/overlaybd-go/overlaybd/core/image"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	_ "github.com/overlaybd-go/overlaybd/engines/all"
	"github.com/overlaybd-go/overlaybd/internal/cli"
	"github.com/overlaybd-go/overlaybd/internal/progress"
	"github.com/overlaybd-go/overlaybd/plugins"
)

const usage = `Usage: overlaybd-cat [OPTIONS] (--config CONFIG.v1.json | [--upper-data D [--upper-index I]] LAYER...)

Write the merged virtual disk of LAYERs (lowest first) with an optional
writable layer on top, or of the image that CONFIG.v1.json describes, to
standard output, or to FILE (-o) with holes where the view is unmapped or
zeroed. A LAYER is a committed or sealed LSMT layer, plain, as a ZFile, or
tar-wrapped. --upper-data without --upper-index is a sparse writable layer.
Everything is opened read-only; nothing is modified (for --config, no result
file is written). The IO engine of local files is overlaybd.json's ioEngine.
When standard error is a terminal, a progress bar over the virtual size is
drawn there, also while the data goes to a redirected standard output (it
never mixes with the data); into a pipe or file standard error stays quiet.

Exit status: 0 success, 105 invalid arguments, 106 nothing to read,
255 failure.

Options:
`

func main() { os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)) }

type options struct {
	serviceConfig, output, config, upperData, upperIndex string
}

func run(ctx context.Context, args []string, stdout io.Writer, stderr io.Writer) int {
	fs := cli.NewFlagSet("overlaybd-cat", stderr, usage)
	var o options
	fs.StringVar(&o.serviceConfig, "service-config-path", "", "global configuration (default "+config.DefaultGlobalPath+", built-in defaults when it does not exist); its codecPlugins serve lz4/zstd")
	fs.StringVarP(&o.output, "output", "o", "", "write the disk to this file (created or truncated, sparse) instead of standard output")
	fs.StringVar(&o.config, "config", "", "image configuration (config.v1.json) to read instead of LAYERs")
	fs.StringVar(&o.upperData, "upper-data", "", "data file of a writable layer on top of the LAYERs")
	fs.StringVar(&o.upperIndex, "upper-index", "", "index file of that writable layer (omit for a sparse layer)")
	if err := cli.Parse(fs, args); err != nil {
		return cli.PrefixedParseError(stderr, "overlaybd-cat", err, cli.ExitValidation)
	}
	layers := fs.Args()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "overlaybd-cat: "+format+"\n", a...)
		return code
	}
	switch {
	case o.config != "" && (len(layers) > 0 || o.upperData != "" || o.upperIndex != ""):
		return fail(cli.ExitValidation, "--config cannot be combined with LAYER arguments or --upper-data/--upper-index")
	case o.upperIndex != "" && o.upperData == "":
		return fail(cli.ExitValidation, "--upper-index needs --upper-data")
	case o.config == "" && len(layers) == 0 && o.upperData == "":
		fs.Usage()
		return fail(cli.ExitRequired, "nothing to read: give --config, or LAYERs and/or --upper-data")
	}

	global, err := config.LoadGlobal(o.serviceConfig)
	if err != nil {
		return fail(cli.ExitFailure, "%v", err)
	}
	host, err := plugins.LoadGlobal(ctx, global, plugins.WithLogger(log))
	if err != nil {
		return fail(cli.ExitFailure, "start codec plugins: %v", err)
	}
	defer host.CloseLogging(log)
	inputs := append([]string{o.config, o.upperData, o.upperIndex}, layers...)
	var view core.File
	var closeView func() error
	if o.config != "" {
		view, closeView, inputs, err = openConfig(ctx, o.config, global, log)
	} else {
		view, closeView, err = openLayers(global, layers, o.upperData, o.upperIndex, log)
	}
	if err != nil {
		return fail(cli.ExitFailure, "%v", err)
	}
	defer closeView()

	bar := progress.New(stderr, view.Size(), "cat")
	defer bar.Finish()
	if o.output == "" {
		if f, ok := stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return fail(cli.ExitValidation, "standard output is a terminal: redirect it or use -o FILE")
		}
		if err := copyOut(stdout, view, bar); err != nil {
			return fail(cli.ExitFailure, "%v", err)
		}
		return cli.ExitOK
	}
	if err := writeSparse(o.output, view, inputs, bar); err != nil {
		return fail(cli.ExitFailure, "%v", err)
	}
	return cli.ExitOK
}

// openLayer opens one read-only layer through its envelope (tar, ZFile).
func openLayer(eng core.Engine, path string) (*lsmt.ReadOnly, error) {
	f, err := eng.Open(path, core.OpenOptions{Flag: os.O_RDONLY})
	if err != nil {
		return nil, err
	}
	ro, err := envelope.OpenLayer(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ro, nil
}

// openUpper opens a writable layer read-only; it is never written.
func openUpper(eng core.Engine, data, index string) (*lsmt.Writable, error) {
	df, err := eng.Open(data, core.OpenOptions{Flag: os.O_RDONLY})
	if err != nil {
		return nil, err
	}
	var xf core.File
	if index != "" {
		if xf, err = eng.Open(index, core.OpenOptions{Flag: os.O_RDONLY}); err != nil {
			df.Close()
			return nil, err
		}
	}
	w, err := lsmt.OpenWritable(df, xf)
	if err != nil {
		df.Close()
		if xf != nil {
			xf.Close()
		}
		return nil, fmt.Errorf("writable layer %s: %w", data, err)
	}
	return w, nil
}

func newEngine(g *config.Global, log *slog.Logger) (core.Engine, error) {
	name, factory, err := g.IOEngine.Factory()
	if err != nil {
		return nil, err
	}
	eng, err := factory(core.EngineConfig{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("io engine %s: %w", name, err)
	}
	return eng, nil
}

func openLayers(g *config.Global, layers []string, upperData, upperIndex string, log *slog.Logger) (core.File, func() error, error) {
	eng, err := newEngine(g, log)
	if err != nil {
		return nil, nil, err
	}
	var ros []*lsmt.ReadOnly
	cleanup := func() {
		for _, r := range ros {
			r.Close()
		}
		eng.Close()
	}
	for i, p := range layers {
		ro, err := openLayer(eng, p)
		if err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("layer %d: %w", i, err)
		}
		ros = append(ros, ro)
	}
	var upper *lsmt.Writable
	if upperData != "" {
		if upper, err = openUpper(eng, upperData, upperIndex); err != nil {
			cleanup()
			return nil, nil, err
		}
	}
	s, err := lsmt.NewStack(ros, upper)
	if err != nil {
		if upper != nil {
			upper.Close()
		}
		cleanup()
		return nil, nil, err
	}
	return s, func() error { return errors.Join(s.Close(), eng.Close()) }, nil
}

// openConfig opens the image of an image configuration read-only: the
// lowers through core/image (without writing the result file), the upper,
// if any, opened read-only on top of them. It returns the files read, so
// that the output cannot be one of them.
func openConfig(ctx context.Context, path string, g *config.Global, log *slog.Logger) (core.File, func() error, []string, error) {
	cfg, err := config.LoadImage(path, g)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, nil, nil, err
	}
	inputs := []string{path, cfg.Upper.Data, cfg.Upper.Index}
	for _, l := range cfg.Lowers {
		inputs = append(inputs, l.LocalCandidates()...)
	}
	lowersOnly := *cfg
	lowersOnly.ResultFile = "" // nothing is written
	lowersOnly.Upper = config.Upper{}

	var img *image.Image
	var lowers []*lsmt.ReadOnly
	if len(cfg.Lowers) > 0 {
		img, err = image.Open(ctx, &lowersOnly, image.Options{Global: g, ReadOnly: true, Logger: log, NoTrace: true})
		if err != nil {
			return nil, nil, nil, err
		}
		if !cfg.Writable() {
			return img, img.Close, inputs, nil
		}
		lowers = img.Lowers()
	}
	closeImg := func() error {
		if img != nil {
			return img.Close()
		}
		return nil
	}
	eng, err := newEngine(g, log)
	if err != nil {
		closeImg()
		return nil, nil, nil, err
	}
	upper, err := openUpper(eng, cfg.Upper.Data, cfg.Upper.Index)
	if err != nil {
		eng.Close()
		closeImg()
		return nil, nil, nil, err
	}
	s, err := lsmt.NewStack(lowers, upper)
	if err != nil {
		upper.Close()
		eng.Close()
		closeImg()
		return nil, nil, nil, err
	}
	// The new stack shares the image's lowers: the image closes them, the
	// upper is closed here.
	return s, func() error { return errors.Join(upper.Close(), eng.Close(), closeImg()) }, inputs, nil
}

const chunk = 1 << 20

func copyOut(w io.Writer, f core.File, bar *progress.Bar) error {
	buf := make([]byte, chunk)
	size := f.Size()
	for off := int64(0); off < size; off += chunk {
		n := min(chunk, size-off)
		if _, err := f.ReadAt(buf[:n], off); err != nil && !(err == io.EOF && off+n == size) {
			return fmt.Errorf("read at %d: %w", off, err)
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		bar.Add(int(n))
	}
	return nil
}

// writeSparse writes the view to path, leaving holes where BlockStatus says
// the view is unmapped or zeroed. path must not be one of the inputs.
func writeSparse(path string, f core.File, inputs []string, bar *progress.Bar) error {
	if st, err := os.Stat(path); err == nil {
		for _, in := range inputs {
			if in == "" {
				continue
			}
			if ist, err := os.Stat(in); err == nil && os.SameFile(st, ist) {
				return fmt.Errorf("refusing to overwrite the input %s", in)
			}
		}
	}
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	size := f.Size()
	if err := out.Truncate(size); err != nil {
		out.Close()
		return err
	}
	bs, _ := f.(core.BlockStatuser)
	buf := make([]byte, chunk)
	for off := int64(0); off < size; {
		ext := []core.Extent{{Offset: off, Length: min(64*chunk, size-off)}}
		if bs != nil {
			if ext, err = bs.BlockStatus(off, min(64*chunk, size-off)); err != nil {
				out.Close()
				return fmt.Errorf("block status at %d: %w", off, err)
			}
		}
		for _, e := range ext {
			if e.Flags&core.ExtentZero == 0 {
				for p := e.Offset; p < e.Offset+e.Length; p += chunk {
					n := min(chunk, e.Offset+e.Length-p)
					if _, err := f.ReadAt(buf[:n], p); err != nil && !(err == io.EOF && p+n == size) {
						out.Close()
						return fmt.Errorf("read at %d: %w", p, err)
					}
					if _, err := out.WriteAt(buf[:n], p); err != nil {
						out.Close()
						return err
					}
				}
			}
			off = e.Offset + e.Length
			bar.Add(int(e.Length))
		}
	}
	return out.Close()
}
