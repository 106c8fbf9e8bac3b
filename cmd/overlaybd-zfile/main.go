// Command overlaybd-zfile compresses any file into a ZFile, extracts a ZFile
// (plain or inside overlaybd's tar envelope) back to the original bytes, and
// verifies the per-block checksums of a ZFile, with upstream overlaybd's
// arguments and exit codes:
//
//	overlaybd-zfile [-t] [-f] [--algorithm lz4|zstd] [--bs KB] [--service_config_path F] [--verbose] source_file [target_file]
//	overlaybd-zfile -x [-t] [-f] [--service_config_path F] source_file target_file
//	overlaybd-zfile --verify [--service_config_path F] source_file
//
// Differences from upstream, all fixes: an unknown --algorithm is an error
// (upstream silently uses LZ4); reading standard input never produces short
// blocks in the middle of the file; a 64 KiB block that upstream's reader
// could not read fails the compression and the partial output is removed;
// extraction reads files whose blocks upstream cannot read; messages go to
// standard error.
//
// Addition to upstream: --service_config_path reads overlaybd.json for its
// codecPlugins, which then serve lz4/zstd here as in the daemons.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	_ "github.com/overlaybd-go/overlaybd/codecs/all"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/core/envelope"
	"github.com/overlaybd-go/overlaybd/core/zfile"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/internal/cli"
	"github.com/overlaybd-go/overlaybd/internal/progress"
	"github.com/overlaybd-go/overlaybd/plugins"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `Usage:
  overlaybd-zfile [-t] [-f] [--algorithm lz4|zstd] [--bs KB] [--service_config_path F] [--verbose] source_file [target_file]
  overlaybd-zfile -x [-t] [-f] [--service_config_path F] source_file target_file
  overlaybd-zfile --verify [--service_config_path F] source_file

Compresses source_file into the ZFile target_file (LZ4 or zstd blocks with
CRC32C, header not rewritten, as upstream's tool). Without target_file the
input is standard input and source_file is the output. -x extracts a ZFile,
plain or tar-wrapped, and writes the output with mode 0700 as upstream.

Fixes over upstream: an unknown --algorithm is an error (upstream used LZ4);
standard input never yields short blocks mid-file; a 64 KiB block that
upstream's reader could not read fails compression and removes the partial
output; extraction reads such blocks. Messages go to standard error.

Addition to upstream: --service_config_path names the overlaybd.json whose
codecPlugins serve lz4/zstd here as in the daemons (docs/plugins.md).

Options:
`

type tool struct {
	stdin  io.Reader
	stderr io.Writer
	log    *slog.Logger
}

// run is the whole command; the help goes to stdout (as upstream's), every
// other message to stderr.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("overlaybd-zfile", stdout, usage)
	extract := fs.BoolP("extract", "x", false, "decompress (extract) source_file into target_file instead of compressing")
	verify := fs.Bool("verify", false, "check the per-block checksums of source_file and stop")
	tarred := fs.BoolP("tar", "t", false, "compress: wrap the output in overlaybd's tar envelope; extract: accepted (a tar-wrapped ZFile is recognised by content)")
	force := fs.BoolP("force", "f", false, "remove an existing output first")
	algo := fs.String("algorithm", "lz4", "compression algorithm: lz4 or zstd (anything else is an error; upstream silently used lz4)")
	bs := fs.Int("bs", 4, "block size in KiB: 4, 8, 16, 32 or 64")
	workers := fs.Int("workers", 0, "compression/decompression goroutines (0: up to 4); the output does not depend on it")
	verbose := fs.Bool("verbose", false, "debug logging")
	svc := fs.String("service_config_path", "", "service configuration, for its codecPlugins (default "+config.DefaultGlobalPath+", built-in defaults when it does not exist; an explicit path must exist); an addition to upstream's flags")
	if code, ok := cli.Upstream(stderr).Parse(fs, args, 1, "source_file", "target_file"); !ok {
		return code
	}
	t := &tool{stdin: stdin, stderr: stderr, log: cli.Logger(stderr, *verbose)}
	pos := fs.Args()
	src, dst := pos[0], ""
	if len(pos) == 2 {
		dst = pos[1]
	}
	_, host, err := plugins.LoadForTool(ctx, *svc, plugins.WithLogger(t.log))
	if err != nil {
		fmt.Fprintf(stderr, "overlaybd-zfile: %v\n", err)
		return cli.ExitFailure
	}
	defer host.CloseLogging(t.log)
	switch {
	case *verify:
		return t.verify(src)
	case *extract:
		if dst == "" {
			fmt.Fprintln(stderr, "extract needs target_file: reading standard input is not supported")
			return cli.ExitFailure
		}
		return t.extract(ctx, src, dst, *force, *workers)
	}
	if *bs < 4 || *bs > 64 || *bs&(*bs-1) != 0 {
		fmt.Fprintln(stderr, "invalid '--bs' parameters.")
		return cli.ExitFailure
	}
	switch *algo {
	case "lz4", "zstd":
	default:
		fmt.Fprintf(stderr, "invalid '--algorithm' parameters. (%q: want lz4 or zstd)\n", *algo)
		return cli.ExitFailure
	}
	opts := zfile.Options{Algorithm: *algo, BlockSize: *bs << 10, Workers: *workers}
	return t.compress(ctx, src, dst, *tarred, *force, opts)
}

// bar returns a progress bar on standard error, nil (a no-op) unless it is
// a terminal.
func (t *tool) bar(total int64, what string) *progress.Bar {
	return progress.New(t.stderr, total, what)
}

// ctxReader stops a copy when ctx is cancelled and feeds a progress bar.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
	bar *progress.Bar
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.bar.Add(n)
	return n, err
}

func (t *tool) compress(ctx context.Context, src, dst string, tarred, force bool, opts zfile.Options) int {
	var in io.Reader
	total := int64(-1)
	if dst == "" {
		dst, in = src, t.stdin
		src = "-"
	} else {
		f, err := os.Open(src)
		if err != nil {
			fmt.Fprintf(t.stderr, "failed to open file %s: %v\n", src, err)
			return cli.ExitFailure
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			total = st.Size()
		}
		in = f
	}
	fmt.Fprintf(t.stderr, "compress file %s as %s\n", src, dst)
	out, err := envelope.Create(dst, envelope.CreateOptions{ZFile: &opts, Tar: tarred, Force: force})
	if err != nil {
		fmt.Fprintf(t.stderr, "failed to open file %s: %v\n", dst, err)
		return cli.ExitFailure
	}
	bar := t.bar(total, "compress")
	_, err = out.ReadFrom(&ctxReader{ctx: ctx, r: in, bar: bar})
	if err != nil {
		out.Abort()
	} else {
		err = out.Close()
	}
	bar.Finish()
	if err != nil {
		fmt.Fprintf(t.stderr, "compress failed, %v\n", err)
		return cli.ExitFailure
	}
	i, o := out.Stats()
	t.log.Debug("compressed", "in", i, "out", o, "algorithm", opts.Algorithm, "block_size", opts.BlockSize)
	fmt.Fprintln(t.stderr, "compress file done.")
	return cli.ExitOK
}

// openZFile opens path, strips a tar envelope and requires a ZFile.
func (t *tool) openZFile(path string, workers int) (*zfile.Reader, *envelope.Description, error) {
	f, err := psync.New(core.EngineConfig{Logger: t.log}).Open(path, core.OpenOptions{Flag: os.O_RDONLY})
	if err != nil {
		return nil, nil, err
	}
	var zopts []zfile.ReaderOption
	if workers > 0 {
		zopts = append(zopts, zfile.WithWorkers(workers))
	}
	inner, d, err := envelope.Open(f, envelope.WithZFileOptions(zopts...))
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	zr, ok := inner.(*zfile.Reader)
	if !ok {
		inner.Close()
		return nil, d, fmt.Errorf("format error! %s should be a zfile (it is %s)", path, d)
	}
	return zr, d, nil
}

func (t *tool) verify(src string) int {
	zr, d, err := t.openZFile(src, 0)
	if err != nil {
		if d != nil {
			fmt.Fprintln(t.stderr, err)
		} else {
			fmt.Fprintf(t.stderr, "%s is not a valid zfile blob or checksum can't be found. (%v)\n", src, err)
		}
		return cli.ExitFailure
	}
	defer zr.Close()
	if err := zr.VerifyBlocks(); err != nil {
		fmt.Fprintf(t.stderr, "%s is not a valid zfile blob or checksum can't be found. (%v)\n", src, err)
		return cli.ExitFailure
	}
	t.log.Debug("verified", "layout", d.String(), "blocks", zr.BlockCount())
	fmt.Fprintf(t.stderr, "%s is a valid zfile blob.\n", src)
	return cli.ExitOK
}

// extractChunk is the size of one read of the ZFile reader; large reads
// decode blocks in parallel.
const extractChunk = 4 << 20

func (t *tool) extract(ctx context.Context, src, dst string, force bool, workers int) int {
	zr, _, err := t.openZFile(src, workers)
	if err != nil {
		fmt.Fprintf(t.stderr, "failed to open file %s: %v\n", src, err)
		return cli.ExitFailure
	}
	defer zr.Close()
	fmt.Fprintf(t.stderr, "decompress file %s as %s\n", src, dst)
	if force {
		if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(t.stderr, "failed to open file %s: %v\n", dst, err)
			return cli.ExitFailure
		}
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o700)
	if err != nil {
		fmt.Fprintf(t.stderr, "failed to open file %s: %v\n", dst, err)
		return cli.ExitFailure
	}
	bar := t.bar(zr.Size(), "decompress")
	err = copyOut(ctx, out, zr, bar)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	bar.Finish()
	if err != nil {
		os.Remove(dst)
		fmt.Fprintf(t.stderr, "decompress failed, %v\n", err)
		return cli.ExitFailure
	}
	fmt.Fprintln(t.stderr, "decompress file done.")
	return cli.ExitOK
}

// copyOut writes the whole of r to w, overlapping the decode of the next
// chunk with the write of the current one.
func copyOut(ctx context.Context, w io.Writer, r *zfile.Reader, bar *progress.Bar) error {
	size := r.Size()
	type chunk struct {
		buf []byte
		err error
	}
	bufs := make(chan []byte, 2)
	bufs <- make([]byte, extractChunk)
	bufs <- make([]byte, extractChunk)
	ready := make(chan chunk, 2)
	done := make(chan struct{})
	var wg sync.WaitGroup
	defer func() {
		close(done)
		wg.Wait()
	}()
	wg.Go(func() {
		defer close(ready)
		for off := int64(0); off < size; {
			var buf []byte
			select {
			case buf = <-bufs:
			case <-done:
				return
			}
			n := min(int64(len(buf)), size-off)
			var err error
			if err = ctx.Err(); err == nil {
				var m int
				m, err = r.ReadAt(buf[:n], off)
				if err == io.EOF && int64(m) == n {
					err = nil
				}
			}
			select {
			case ready <- chunk{buf[:n], err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
			off += n
		}
	})
	for c := range ready {
		if c.err != nil {
			return c.err
		}
		if _, err := w.Write(c.buf); err != nil {
			return err
		}
		bar.Add(len(c.buf))
		bufs <- c.buf[:cap(c.buf)]
	}
	return nil
}
