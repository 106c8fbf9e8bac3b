// Command overlaybd-commit turns a writable overlaybd layer into a
// read-only one, with upstream's arguments and exit codes:
//
//	overlaybd-commit [-m MSG] [--uuid UUID] [-p|--parent-uuid UUID]
//	                 [-z [--algorithm lz4|zstd] [--bs KB] [-t] [--compress_threads N]]
//	                 [-f] [--seal] [--commit_sealed] [--service_config_path F] [--verbose]
//	                 data_file [index_file] [commit_file]
//
// The default mode commits the writable layer data_file+index_file into
// commit_file; --seal seals the writable layer in place; --commit_sealed
// compacts the sealed layer data_file into the second positional. -z
// compresses the output as a ZFile (-t wraps it in overlaybd's tar
// envelope). --turboOCI and --upload are not supported yet.
// --service_config_path, an addition to upstream's flags, reads
// overlaybd.json for its codecPlugins, which then serve lz4/zstd here as in
// the daemons.
package main

import (
	"context"
	"errors"
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

const usage = `Usage: overlaybd-commit [OPTIONS] data_file [index_file] [commit_file]

Commit the writable layer data_file + index_file into the read-only layer
commit_file (created; it must not exist unless -f). With --seal the writable
layer is sealed in place instead; with --commit_sealed data_file is a sealed
layer and the second positional is the output.

Differences from upstream: the success line is printed only when the commit
succeeded; a partial output is removed; --uuid and --parent-uuid must be
valid UUIDs (upstream silently stores the null UUID for an invalid one, and
overflows a buffer for one longer than 36 characters); the warning about
--bs/--algorithm without -z appears only when one of them was given.

When standard error is a terminal, the bytes written so far are shown there;
into a pipe or file nothing is drawn.

Addition to upstream: --service_config_path names the overlaybd.json whose
codecPlugins serve lz4/zstd here as in the daemons (docs/plugins.md).

Every flag may be spelled with "_" or "-" (--commit_sealed, --commit-sealed).

Options:
`

type options struct {
	msg, uuid, parent, algorithm  string
	bs, threads                   int
	z, tar, force, turbo, fastoci bool
	seal, commitSealed, verbose   bool
	upload, serviceConfig         string
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("overlaybd-commit", stdout, usage)
	var o options
	fs.StringVarP(&o.msg, "message", "m", "", "commit message, stored as the layer's user tag (at most 256 bytes)")
	fs.StringVar(&o.uuid, "uuid", "", "UUID of the new layer (default: the null UUID)")
	fs.StringVarP(&o.parent, "parent-uuid", "p", "", "parent UUID (default: the writable layer's parent)")
	fs.BoolVarP(&o.z, "compress", "z", false, "compress the output as a ZFile")
	fs.StringVar(&o.algorithm, "algorithm", "", "ZFile algorithm: lz4 or zstd (default lz4)")
	fs.IntVar(&o.bs, "bs", -1, "ZFile block size in KiB: a power of two from 4 to 64; -1 means 4")
	fs.BoolVarP(&o.tar, "tar", "t", false, "wrap the ZFile output in overlaybd's tar envelope")
	fs.IntVar(&o.threads, "compress_threads", 1, "compression workers (the output does not depend on it)")
	fs.BoolVarP(&o.force, "force", "f", false, "remove an existing output first")
	fs.BoolVar(&o.turbo, "turboOCI", false, "commit a TurboOCI layer (not supported yet)")
	fs.BoolVar(&o.fastoci, "fastoci", false, "deprecated spelling of --turboOCI (not supported yet)")
	fs.BoolVar(&o.seal, "seal", false, "seal the writable layer in place")
	fs.BoolVar(&o.commitSealed, "commit_sealed", false, "data_file is a sealed layer; the output is the second positional")
	fs.StringVar(&o.upload, "upload", "", "registry upload URL (not supported yet)")
	fs.Int("upload_bs", 262144, "upload chunk size in KiB (with --upload)")
	fs.String("cred_file_path", "", "registry credentials (with --upload)")
	fs.String("tls_key_path", "", "TLS key (with --upload)")
	fs.String("tls_cert_path", "", "TLS certificate (with --upload)")
	fs.StringVar(&o.serviceConfig, "service_config_path", "", "service configuration, for its codecPlugins (default "+config.DefaultGlobalPath+", built-in defaults when it does not exist; an explicit path must exist); an addition to upstream's flags")
	fs.BoolVar(&o.verbose, "verbose", false, "debug logging")
	cmdline := cli.Upstream(stderr)
	if code, ok := cmdline.Parse(fs, args, 1, "data_file", "index_file", "commit_file"); !ok {
		return code
	}
	slog.SetDefault(cli.Logger(stderr, o.verbose))

	pos := fs.Args()
	if _, err := os.Stat(pos[0]); err != nil {
		return cmdline.Errorf(cli.ExitValidation, "data_file: File does not exist: %s", pos[0])
	}
	if o.tar && o.upload != "" {
		fmt.Fprintln(stderr, "unsupport option with '-t' and '--upload' at the same time.")
		return cli.ExitFailure
	}
	if o.upload != "" {
		fmt.Fprintln(stderr, "overlaybd-commit: --upload is not supported yet")
		return cli.ExitFailure
	}
	if o.turbo || o.fastoci {
		fmt.Fprintln(stderr, "overlaybd-commit: --turboOCI is not supported yet")
		return cli.ExitFailure
	}
	switch o.algorithm {
	case "", "lz4", "zstd":
	default:
		fmt.Fprintln(stderr, "invalid '--algorithm' parameters.")
		return cli.ExitFailure
	}
	if o.bs != -1 && (o.bs < 4 || o.bs > 64 || o.bs&(o.bs-1) != 0) {
		fmt.Fprintln(stderr, "invalid '--bs' parameters.")
		return cli.ExitFailure
	}
	if !o.z && (fs.Changed("bs") || fs.Changed("algorithm")) {
		fmt.Fprintln(stderr, "WARNING option '--bs' and '--algorithm' will be ignored without '-z'")
	}
	copts := lsmt.CommitOptions{Message: []byte(o.msg)}
	if len(copts.Message) > lsmt.TagSize {
		fmt.Fprintf(stderr, "failed to perform commit(), commit message of %d bytes is longer than %d\n", len(copts.Message), lsmt.TagSize)
		return cli.ExitFailure
	}
	if o.uuid != "" {
		u, err := lsmt.ParseUUID(o.uuid)
		if err != nil {
			fmt.Fprintf(stderr, "--uuid: %v\n", err)
			return cli.ExitValidation
		}
		copts.UUID = u
	}
	if o.parent != "" {
		u, err := lsmt.ParseUUID(o.parent)
		if err != nil {
			fmt.Fprintf(stderr, "--parent-uuid: %v\n", err)
			return cli.ExitValidation
		}
		copts.Parent = &u
	}

	_, host, err := plugins.LoadForTool(context.Background(), o.serviceConfig)
	if err != nil {
		fmt.Fprintf(stderr, "overlaybd-commit: %v\n", err)
		return cli.ExitFailure
	}
	defer host.CloseLogging(nil)

	if o.seal {
		if len(pos) < 2 {
			return cmdline.Errorf(cli.ExitRequired, "index_file is required with --seal")
		}
		if err := seal(pos[0], pos[1]); err != nil {
			fmt.Fprintf(stderr, "failed to perform seal, %v\n", err)
			return cli.ExitFailure
		}
		return cli.ExitOK
	}
	var out string
	var src interface {
		Commit(io.Writer, lsmt.CommitOptions) error
		Close() error
	}
	if o.commitSealed {
		if code, ok := cmdline.Args(pos, 2, "data_file", "commit_file (the second positional with --commit_sealed)"); !ok {
			return code
		}
		out = pos[1]
		src, err = openSealed(pos[0])
	} else {
		if len(pos) < 3 {
			return cmdline.Errorf(cli.ExitRequired, "commit_file is required")
		}
		out = pos[2]
		src, err = openWritable(pos[0], pos[1], os.O_RDONLY)
	}
	if err != nil {
		fmt.Fprintf(stderr, "failed to open the layer to commit: %v\n", err)
		return cli.ExitFailure
	}
	defer src.Close()
	eopts := envelope.CreateOptions{Force: o.force, Tar: o.tar && o.z}
	if o.z {
		bs := o.bs
		if bs == -1 {
			bs = 4
		}
		eopts.ZFile = &zfile.Options{Algorithm: o.algorithm, BlockSize: bs << 10, OverwriteHeader: true, Workers: max(o.threads, 1)}
	}
	if err := commit(src, out, eopts, copts, progress.New(stderr, -1, "commit")); err != nil {
		fmt.Fprintf(stderr, "failed to perform commit(), %v\n", err)
		return cli.ExitFailure
	}
	fmt.Fprintln(stdout, "overlaybd-commit has committed files SUCCESSFULLY")
	return cli.ExitOK
}

func commit(src interface {
	Commit(io.Writer, lsmt.CommitOptions) error
}, path string, eopts envelope.CreateOptions, copts lsmt.CommitOptions, bar *progress.Bar) error {
	defer bar.Finish()
	out, err := envelope.Create(path, eopts)
	if err != nil {
		return err
	}
	if err := src.Commit(bar.Writer(out), copts); err != nil {
		out.Abort()
		return err
	}
	return out.Close()
}

func openFile(path string, flag int) (core.File, error) {
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	return psync.NewFile(f, nil), nil
}

// openWritable opens a writable layer with flag: os.O_RDONLY to commit it
// (a commit never changes it), os.O_RDWR to seal it. A sparse layer's index
// file may be absent.
func openWritable(dataPath, indexPath string, flag int) (*lsmt.Writable, error) {
	data, err := openFile(dataPath, flag)
	if err != nil {
		return nil, err
	}
	index, err := openFile(indexPath, flag)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			data.Close()
			return nil, err
		}
		index = nil
	}
	w, err := lsmt.OpenWritable(data, index)
	if err != nil {
		data.Close()
		if index != nil {
			index.Close()
		}
		return nil, err
	}
	return w, nil
}

// openSealed opens a sealed (or committed) layer in any envelope.
func openSealed(path string) (*lsmt.ReadOnly, error) {
	f, err := openFile(path, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	r, err := envelope.OpenLayer(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

func seal(dataPath, indexPath string) error {
	w, err := openWritable(dataPath, indexPath, os.O_RDWR)
	if err != nil {
		return err
	}
	r, err := w.Seal()
	if err != nil {
		w.Close()
		return err
	}
	return r.Close()
}
