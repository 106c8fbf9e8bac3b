// Command overlaybd-create makes a new writable overlaybd layer, with
// upstream's arguments and exit codes:
//
//	overlaybd-create [-u PARENT_UUID] [--uuid UUID] [-s] [--raw] [--mkfs] [--verbose] data_file index_file vsize
//
// vsize is in GiB. By default it creates an append-only layer (a data file
// and an index file); -s creates a sparse layer (the data file holds the
// disk in place; the index file is left empty and later holds the layer's
// discard log). --raw creates a plain raw image. --mkfs then makes an ext4
// file system with upstream's parameters on the new device (internal/mkfs),
// writing through the layer. --turboOCI/--fastoci are not supported yet.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/internal/cli"
	"github.com/overlaybd-go/overlaybd/internal/mkfs"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = `Usage: overlaybd-create [OPTIONS] data_file index_file vsize

Create a new writable overlaybd layer: data_file and index_file are created
(they must not exist) and vsize is the virtual size in GiB.

Differences from upstream: --uuid (new) sets the layer's UUID instead of a
random one; -p/--parent-uuid are spellings of -u; a failure removes the files
this run created; -s keeps the layer's discards in index_file (upstream
leaves it empty and forgets discards on reopen; upstream still reads the layer).

--mkfs makes the file system with mkfs.ext4 (e2fsprogs) and upstream's
parameters (4 KiB blocks, 256-byte inodes, one inode per 16 KiB, no journal)
in a sparse scratch file next to data_file, then writes its blocks through the
new layer (or into the raw file); it needs vsize of at least 1. On failure it
prints "mkfs failed, <reason>", exits 255 and removes the files it created.
--mkfs with --turboOCI is not supported.

Every flag may be spelled with "_" or "-" (--parent_uuid, --parent-uuid).

Options:
`

func run(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("overlaybd-create", stdout, usage)
	var parent, parentP, uuid string
	fs.StringVarP(&parent, "parent-uuid", "u", "", "parent UUID for the header (an unparsable value is ignored with a warning, as upstream)")
	fs.StringVarP(&parentP, "parent", "p", "", "same as -u")
	fs.StringVar(&uuid, "uuid", "", "UUID of the new layer (default: random)")
	sparse := fs.BoolP("sparse", "s", false, "create a sparse writable layer")
	turbo := fs.Bool("turboOCI", false, "create a TurboOCI writable layer (not supported yet)")
	fastoci := fs.Bool("fastoci", false, "deprecated spelling of --turboOCI (not supported yet)")
	raw := fs.Bool("raw", false, "create a plain raw image instead of an LSMT layer")
	withFS := fs.Bool("mkfs", false, "create an ext4 file system on the new device (needs mkfs.ext4)")
	verbose := fs.Bool("verbose", false, "debug logging")
	if code, ok := cli.Upstream(stderr).Parse(fs, args, 3, "data_file", "index_file", "vsize"); !ok {
		return code
	}
	slog.SetDefault(cli.Logger(stderr, *verbose))

	pos := fs.Args()
	vsizeGiB, err := strconv.ParseInt(pos[2], 10, 64)
	if err != nil || vsizeGiB < 0 || vsizeGiB > 1<<30 {
		fmt.Fprintf(stderr, "vsize: %q is not a size in GiB\n", pos[2])
		return cli.ExitConversion
	}
	if *turbo || *fastoci {
		fmt.Fprintln(stderr, "overlaybd-create: --turboOCI is not supported yet")
		return cli.ExitFailure
	}
	if parentP != "" {
		if parent != "" && parent != parentP {
			fmt.Fprintln(stderr, "overlaybd-create: -u and -p give different parents")
			return cli.ExitValidation
		}
		parent = parentP
	}
	opts := lsmt.CreateOptions{VirtualSize: vsizeGiB << 30, Sparse: *sparse}
	if parent != "" {
		if u, err := lsmt.ParseUUID(parent); err != nil {
			slog.Warn("parent uuid ignored", "err", err)
		} else {
			opts.ParentUUID = u
		}
	}
	if uuid != "" {
		u, err := lsmt.ParseUUID(uuid)
		if err != nil || u.IsNull() {
			fmt.Fprintf(stderr, "overlaybd-create: --uuid: invalid UUID %q\n", uuid)
			return cli.ExitValidation
		}
		opts.UUID = u
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := create(ctx, pos[0], pos[1], opts, *raw, *withFS, stderr); err != nil {
		return cli.ExitFailure
	}
	fmt.Fprintln(stdout, "overlaybd-create has created files SUCCESSFULLY")
	return cli.ExitOK
}

// create makes the files, and with withFS an ext4 file system on the new
// device; on failure it removes what it created.
func create(ctx context.Context, dataPath, indexPath string, opts lsmt.CreateOptions, raw, withFS bool, stderr io.Writer) (err error) {
	var created []string
	defer func() {
		if err != nil {
			for _, p := range created {
				os.Remove(p)
			}
		}
	}()
	open := func(path string) (*os.File, error) {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			fmt.Fprintf(stderr, "failed to open file '%s', %s\n", path, errnoText(err))
			return nil, err
		}
		created = append(created, path)
		return f, nil
	}
	df, err := open(dataPath)
	if err != nil {
		return err
	}
	xf, err := open(indexPath)
	if err != nil {
		df.Close()
		return err
	}
	// makeFS writes the file system through dev, the created device.
	makeFS := func(dev io.WriterAt) error {
		if !withFS {
			return nil
		}
		err := mkfs.Ext4(ctx, dev, opts.VirtualSize, mkfs.Options{TempDir: filepath.Dir(dataPath)})
		if err != nil {
			fmt.Fprintf(stderr, "mkfs failed, %s\n", strings.TrimPrefix(err.Error(), "mkfs: "))
		}
		return err
	}
	if raw {
		xf.Close()
		if err = df.Truncate(opts.VirtualSize); err != nil {
			fmt.Fprintf(stderr, "failed to create raw image: %v\n", err)
		} else {
			err = makeFS(df)
		}
		if err == nil {
			if err = df.Sync(); err != nil {
				fmt.Fprintf(stderr, "failed to create raw image: %v\n", err)
			}
		}
		if e := df.Close(); err == nil && e != nil {
			err = e
			fmt.Fprintf(stderr, "failed to create raw image: %v\n", err)
		}
		return err
	}
	w, err := lsmt.Create(psync.NewFile(df, nil), psync.NewFile(xf, nil), opts)
	if err != nil {
		df.Close()
		xf.Close()
		fmt.Fprintf(stderr, "failed to create lsmt file object, possibly I/O error! (%v)\n", err)
		return err
	}
	if err = makeFS(w); err != nil {
		w.Close()
		return err
	}
	err = w.Sync()
	if e := w.Close(); err == nil {
		err = e
	}
	if err != nil {
		fmt.Fprintf(stderr, "failed to create lsmt file object, possibly I/O error! (%v)\n", err)
	}
	return err
}

// errnoText renders an error as upstream's "<errno>: <strerror>".
func errnoText(err error) string {
	var en syscall.Errno
	if errors.As(err, &en) {
		return fmt.Sprintf("%d: %s", int(en), en.Error())
	}
	return err.Error()
}
