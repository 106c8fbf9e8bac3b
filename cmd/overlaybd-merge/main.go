// Command overlaybd-merge flattens the layers of an image into one
// committed overlaybd layer, with upstream's arguments and exit codes:
//
//	overlaybd-merge [--compress[=false]] [-t] [--service_config_path F] [--verbose]
//	                image_config_path output
//
// The lowers (and the upper, if configured) of the image configuration
// config.v1.json are merged; each lower may be a plain committed or sealed
// layer, a ZFile of one, or either inside overlaybd's tar envelope. The
// output is a ZFile (LZ4, 4 KiB blocks, CRCs) unless --compress=false.
// Remote lowers and --upload are not supported yet.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	_ "github.com/overlaybd-go/overlaybd/codecs/all"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/core/envelope"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/core/zfile"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/internal/cli"
	"github.com/overlaybd-go/overlaybd/internal/progress"
	"github.com/overlaybd-go/overlaybd/plugins"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = `Usage: overlaybd-merge [OPTIONS] image_config_path output

Merge the layers of the image described by image_config_path (config.v1.json)
into one committed layer written to output (overwritten if it exists).

Differences from upstream: -t works (upstream's is non-functional); a partial
output is removed on failure; lowers may be given in any envelope (tar, ZFile,
plain).

When standard error is a terminal, the bytes written so far are shown there;
into a pipe or file nothing is drawn.

Every flag may be spelled with "_" or "-" (--service_config_path, --service-config-path).

Options:
`

func run(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("overlaybd-merge", stdout, usage)
	compress := fs.Bool("compress", true, "write a ZFile (LZ4, 4 KiB blocks, CRCs); --compress=false writes a plain layer")
	tar := fs.BoolP("tar", "t", false, "wrap the output in overlaybd's tar envelope")
	svc := fs.String("service_config_path", "", "service configuration (default "+config.DefaultGlobalPath+"; an explicit path must exist); its codecPlugins serve lz4/zstd")
	upload := fs.String("upload", "", "registry upload URL (not supported yet)")
	fs.Int("upload_bs", 262144, "upload chunk size in KiB (with --upload)")
	fs.String("cred_file_path", "", "registry credentials (with --upload)")
	fs.String("tls_key_path", "", "TLS key (with --upload)")
	fs.String("tls_cert_path", "", "TLS certificate (with --upload)")
	verbose := fs.Bool("verbose", false, "debug logging")
	cmdline := cli.Upstream(stderr)
	if code, ok := cmdline.Parse(fs, args, 2, "image_config_path", "output"); !ok {
		return code
	}
	slog.SetDefault(cli.Logger(stderr, *verbose))
	pos := fs.Args()
	for _, p := range []struct{ name, path string }{{"image_config_path", pos[0]}, {"--service_config_path", *svc}} {
		if p.path == "" {
			continue
		}
		if _, err := os.Stat(p.path); err != nil {
			return cmdline.Errorf(cli.ExitValidation, "%s: File does not exist: %s", p.name, p.path)
		}
	}
	if *upload != "" {
		fmt.Fprintln(stderr, "overlaybd-merge: --upload is not supported yet")
		return cli.ExitFailure
	}
	g, err := config.LoadGlobal(*svc)
	if err != nil {
		fmt.Fprintf(stderr, "failed to create image file: %v\n", err)
		return cli.ExitFailure
	}
	host, err := plugins.LoadGlobal(context.Background(), g)
	if err != nil {
		fmt.Fprintf(stderr, "failed to start codec plugins: %v\n", err)
		return cli.ExitFailure
	}
	defer host.CloseLogging(nil)
	img, err := config.LoadImage(pos[0], g)
	if err != nil {
		fmt.Fprintf(stderr, "failed to create image file: %v\n", err)
		return cli.ExitFailure
	}
	stack, err := openImage(img)
	if err != nil {
		fmt.Fprintf(stderr, "failed to create image file: %v\n", err)
		return cli.ExitFailure
	}
	defer stack.Close()
	eopts := envelope.CreateOptions{Force: true, Tar: *tar}
	if *compress {
		eopts.ZFile = &zfile.Options{}
	}
	bar := progress.New(stderr, -1, "merge")
	defer bar.Finish()
	out, err := envelope.Create(pos[1], eopts)
	if err != nil {
		fmt.Fprintf(stderr, "failed to create output file: %v\n", err)
		return cli.ExitFailure
	}
	if err := stack.Flatten(bar.Writer(out), lsmt.CommitOptions{}); err != nil {
		out.Abort()
		fmt.Fprintf(stderr, "failed to compact: %v\n", err)
		return cli.ExitFailure
	}
	if err := out.Close(); err != nil {
		fmt.Fprintf(stderr, "failed to compact: %v\n", err)
		return cli.ExitFailure
	}
	bar.Finish()
	slog.Info("merged", "layers", len(img.Lowers), "output", pos[1])
	return cli.ExitOK
}

// openImage opens the image's lowers (local files only) and upper, read-only.
func openImage(img *config.Image) (*lsmt.Stack, error) {
	var lowers []*lsmt.ReadOnly
	closeAll := func() {
		for _, l := range lowers {
			l.Close()
		}
	}
	for i, l := range img.Lowers {
		path := ""
		for _, c := range l.LocalCandidates() {
			if _, err := os.Stat(c); err == nil {
				path = c
				break
			}
		}
		if path == "" {
			closeAll()
			return nil, fmt.Errorf("lower %d (%s): no local file; remote layers are not supported yet", i, l.Digest)
		}
		r, err := openLayer(path)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("open lower %d (%s): %w", i, path, err)
		}
		lowers = append(lowers, r)
	}
	var upper *lsmt.Writable
	if img.Writable() {
		if img.Upper.Target != "" {
			closeAll()
			return nil, fmt.Errorf("upper with a TurboOCI target: not supported yet")
		}
		data, err := openFile(img.Upper.Data)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("open upper data: %w", err)
		}
		index, err := openFile(img.Upper.Index)
		if err != nil {
			data.Close()
			closeAll()
			return nil, fmt.Errorf("open upper index: %w", err)
		}
		if upper, err = lsmt.OpenWritable(data, index); err != nil {
			data.Close()
			index.Close()
			closeAll()
			return nil, fmt.Errorf("open upper: %w", err)
		}
	}
	s, err := lsmt.NewStack(lowers, upper)
	if err != nil {
		closeAll()
		if upper != nil {
			upper.Close()
		}
		return nil, err
	}
	return s, nil
}

func openFile(path string) (core.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return psync.NewFile(f, nil), nil
}

// openLayer opens a committed or sealed layer in any envelope.
func openLayer(path string) (*lsmt.ReadOnly, error) {
	f, err := openFile(path)
	if err != nil {
		return nil, err
	}
	return envelope.OpenLayer(f)
}
