// Command overlaybd-conformance runs the conformance matrix (IO engine ×
// codec × envelope × source and cache × layer kind × frontend) against the
// reference model, prints it as a table and writes a JSON report; it exits
// with status 1 when a cell fails. With --check-install it checks an
// installed deployment read-only instead.
package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"

	"github.com/spf13/pflag"

	"github.com/overlaybd-go/overlaybd/conformance"
	"github.com/overlaybd-go/overlaybd/conformance/matrix"
	"github.com/overlaybd-go/overlaybd/core"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fs := pflag.NewFlagSet("overlaybd-conformance", pflag.ContinueOnError)
	fs.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		return pflag.NormalizedName(strings.ReplaceAll(name, "_", "-"))
	})
	var f matrix.Filter
	fs.StringVar(&f.Engine, "engine", "", "IO engines to run, comma separated (psync, libaio, posixaio, io_uring)")
	fs.StringVar(&f.Codec, "codec", "", "codec flavours (none, lz4-go, lz4-native, lz4-plugin, zstd-go, zstd-native, zstd-plugin)")
	fs.StringVar(&f.Cache, "cache", "", "sources and caches (local, remote-file, remote-download, remote-ocf)")
	fs.StringVar(&f.Envelope, "envelope", "", "envelopes (plain, tar)")
	fs.StringVar(&f.Layer, "layer", "", "layer kinds (committed, sealed)")
	fs.StringVar(&f.Upper, "upper", "", "writable uppers (none, append-only, sparse)")
	fs.StringVar(&f.Frontend, "frontend", "", "frontends (inprocess, nbd, tcmu; tcmu needs root, configfs and the target_core_user and tcm_loop modules, else its cells are not run)")
	seed := fs.Int64("seed", 0, "seed of every cell (default: "+conformance.SeedEnv+" or the clock)")
	quick := fs.Bool("quick", false, "fewer operations per cell (600 per writable cell, 200 reads per read-only cell)")
	ops := fs.Int("ops", 0, "operations per writable cell and random reads per read-only cell (default 3000 and 1000)")
	report := fs.String("report", "", "write the JSON report to this file")
	markdown := fs.Bool("markdown", false, "print the table as Markdown")
	pluginLz4 := fs.String("plugin-lz4", "", "lz4 codec plugin binary for the lz4-plugin cells (e.g. built from plugins/examples/lz4-cgo)")
	pluginZstd := fs.String("plugin-zstd", "", "zstd codec plugin binary for the zstd-plugin cells (e.g. built from plugins/examples/zstd-cgo)")
	checkInstall := fs.Bool("check-install", false, "check an installed deployment read-only and exit")
	cfgPath := fs.String("service-config-path", "/etc/overlaybd/overlaybd.json", "overlaybd.json of the deployment (with --check-install)")
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return 0
		}
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if os.Getenv("GOMEMLIMIT") == "" {
		// The run's registry keeps every distinct lower in memory (about
		// 2 GiB for the full matrix); a soft limit keeps the garbage
		// collector from letting the heap double on top of that.
		debug.SetMemoryLimit(3 << 30)
	}
	if *checkInstall {
		return checkDeployment(*cfgPath, log)
	}
	s := *seed
	if s == 0 {
		var err error
		if s, err = conformance.Seed(); err != nil {
			log.Error("seed", "err", err)
			return 2
		}
	}
	checksum := "none"
	if f, err := core.Checksums.Lookup("crc32c"); err == nil {
		checksum = f().Name()
	}
	log.Info("conformance matrix", "seed", s, "replay", fmt.Sprintf("--seed %d", s),
		"codecs", strings.Join(core.Codecs.Names(), ","), "checksum", checksum)
	if *ops < 0 {
		fmt.Fprintln(os.Stderr, "overlaybd-conformance: --ops must not be negative")
		return 2
	}
	rs, err := matrix.Run(f, matrix.Options{Seed: s, Quick: *quick, Ops: *ops,
		PluginBins: map[string]string{"lz4": *pluginLz4, "zstd": *pluginZstd}, Logf: func(format string, a ...any) {
			fmt.Fprintf(os.Stderr, format+"\n", a...)
		}})
	if err != nil {
		log.Error("run", "err", err)
		return 2
	}
	if err := matrix.WriteTable(os.Stdout, rs, *markdown); err != nil {
		log.Error("table", "err", err)
		return 2
	}
	if *report != "" {
		if err := matrix.WriteReport(*report, s, rs); err != nil {
			log.Error("report", "err", err)
			return 2
		}
	}
	for _, r := range rs {
		if r.Status == matrix.Fail {
			fmt.Fprintf(os.Stderr, "FAIL %s: %s\n", r.Name, r.Reason)
		}
	}
	if matrix.Summarize(rs)[matrix.Fail] > 0 {
		return 1
	}
	return 0
}
