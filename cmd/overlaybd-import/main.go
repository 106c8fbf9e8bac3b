// Command overlaybd-import turns a raw disk image (a file or a block
// device, e.g. an ext4 image made with mkfs.ext4 -d) into a committed
// overlaybd layer: blocks that are all zeros, and holes of a sparse file,
// become unmapped ranges that read as zeros and take no space.
//
//	overlaybd-import [-z [--algorithm lz4|zstd] [--bs KB] [-t]] [-f] [-m MSG]
//	                 [--uuid UUID] [-p|--parent-uuid UUID]
//	                 [--zero-block-size BYTES] [--vsize BYTES]
//	                 [--service_config_path F] [--verbose]
//	                 raw_file commit_file
//
// The output is what `overlaybd-commit` writes for a writable layer holding
// the same data (optionally compressed as a ZFile and/or wrapped in the tar
// envelope, with overlaybd-commit's -z/--algorithm/--bs/-t), so it can be a
// lower of any image config, e.g. {"lowers":[{"file":"commit_file"}]}, or
// the base of a writable layer made with overlaybd-create. Upstream has no
// such tool; it stands in for `overlaybd-apply --raw`-style imports.
//
// --service_config_path reads overlaybd.json for its codecPlugins, which then
// compress the ZFile here as in the daemons.
//
// Exit status: 0 on success, 2 on a usage error, 1 when the import fails
// (the partial output is removed).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	_ "github.com/overlaybd-go/overlaybd/codecs/all"
	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/core/envelope"
	"github.com/overlaybd-go/overlaybd/core/image"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/core/zfile"
	"github.com/overlaybd-go/overlaybd/internal/cli"
	"github.com/overlaybd-go/overlaybd/internal/progress"
	"github.com/overlaybd-go/overlaybd/plugins"
)

const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage: overlaybd-import [flags] raw_file commit_file

Turns a raw disk image into a committed overlaybd layer; zero blocks become holes.
On a terminal, standard error shows the bytes written so far.

Flags:
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("overlaybd-import", stderr, usage)
	compress := fs.BoolP("compress", "z", false, "compress the layer as a ZFile (as overlaybd-commit -z)")
	algo := fs.String("algorithm", "lz4", "ZFile algorithm: lz4 or zstd")
	bs := fs.Int("bs", 4, "ZFile block size in KiB: 4, 8, 16, 32 or 64")
	tarred := fs.BoolP("tar", "t", false, "wrap the output in overlaybd's tar envelope")
	force := fs.BoolP("force", "f", false, "remove an existing output first")
	msg := fs.StringP("message", "m", "", "commit message stored in the layer (at most 256 bytes)")
	uuid := fs.String("uuid", "", "UUID of the new layer (default: null, as overlaybd-commit)")
	parent := fs.StringP("parent-uuid", "p", "", "parent UUID stored in the layer")
	zbs := fs.Int("zero-block-size", 4096, "granularity in bytes at which zero data is left out (a multiple of 512)")
	vsize := fs.Int64("vsize", 0, "virtual size in bytes (default: the raw image's size rounded up to 512)")
	svc := fs.String("service_config_path", "", "service configuration, for its codecPlugins (default "+config.DefaultGlobalPath+", built-in defaults when it does not exist; an explicit path must exist)")
	verbose := fs.Bool("verbose", false, "debug logging")
	if err := cli.Parse(fs, args); err != nil {
		return cli.PrefixedParseError(stderr, "overlaybd-import", err, exitUsage)
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "overlaybd-import: "+format+"\n", a...)
		return exitUsage
	}
	if fs.NArg() != 2 {
		return usageErr("need raw_file and commit_file (got %d arguments)", fs.NArg())
	}
	log := cli.Logger(stderr, *verbose)

	opts := image.ImportOptions{ZeroBlockSize: *zbs, VirtualSize: *vsize}
	opts.Commit.Message = []byte(*msg)
	if len(opts.Commit.Message) > 256 {
		return usageErr("-m: message of %d bytes (at most 256)", len(opts.Commit.Message))
	}
	if *uuid != "" {
		u, err := lsmt.ParseUUID(*uuid)
		if err != nil {
			return usageErr("--uuid %q: %v", *uuid, err)
		}
		opts.Commit.UUID = u
	}
	if *parent != "" {
		u, err := lsmt.ParseUUID(*parent)
		if err != nil {
			return usageErr("--parent-uuid %q: %v", *parent, err)
		}
		opts.Commit.Parent = &u
	}
	var copts envelope.CreateOptions
	copts.Tar, copts.Force = *tarred, *force
	if *compress {
		copts.ZFile = &zfile.Options{Algorithm: *algo, BlockSize: *bs << 10, OverwriteHeader: true}
		if *algo != "lz4" && *algo != "zstd" {
			return usageErr("--algorithm %q: lz4 or zstd", *algo)
		}
		if err := zfile.CheckBlockSize(*bs << 10); err != nil {
			return usageErr("--bs %d: %v", *bs, err)
		}
	} else if *tarred {
		log.Info("-t without -z: the tar envelope wraps the plain layer")
	}

	_, host, err := plugins.LoadForTool(ctx, *svc, plugins.WithLogger(log))
	if err != nil {
		fmt.Fprintf(stderr, "overlaybd-import: %v\n", err)
		return exitFailure
	}
	defer host.CloseLogging(log)

	rawPath, outPath := fs.Arg(0), fs.Arg(1)
	src, err := os.Open(rawPath)
	if err != nil {
		log.Error("open raw image", "err", err)
		return exitFailure
	}
	defer src.Close()
	bar := progress.New(stderr, -1, "import")
	defer bar.Finish()
	out, err := envelope.Create(outPath, copts)
	if err != nil {
		log.Error("create output", "err", err)
		return exitFailure
	}
	st, err := image.ImportRaw(ctx, src, bar.Writer(out), opts)
	if err != nil {
		out.Abort()
		log.Error("import failed", "err", err)
		return exitFailure
	}
	if err := out.Close(); err != nil {
		log.Error("finish output", "err", err)
		return exitFailure
	}
	bar.Finish()
	fmt.Fprintf(stdout, "overlaybd-import: %s -> %s: virtual size %d, %d bytes of data\n", rawPath, outPath, st.VirtualSize, st.DataBytes)
	return exitOK
}
