package main

import (
	"context"
	"fmt"
	"os"
	"testing"

	_ "github.com/overlaybd-go/overlaybd/codecs/all"
	golz4 "github.com/overlaybd-go/overlaybd/codecs/lz4"
	"github.com/overlaybd-go/overlaybd/core/zfile"
	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
	"github.com/overlaybd-go/overlaybd/plugins"
	"github.com/overlaybd-go/overlaybd/plugins/examples/lz4-cgo/liblz4"
	"github.com/overlaybd-go/overlaybd/plugins/internal/plugintest"
)

// lz4Bin and zstdBin are the two example plugins, built once per run.
var lz4Bin, zstdBin string

func TestMain(m *testing.M) {
	var cleanups []func()
	code := 1
	defer func() {
		for _, c := range cleanups {
			c()
		}
		os.Exit(code)
	}()
	for _, b := range []struct {
		pkg string
		bin *string
	}{{"github.com/overlaybd-go/overlaybd/plugins/examples/lz4-cgo", &lz4Bin}, {"github.com/overlaybd-go/overlaybd/plugins/examples/zstd-cgo", &zstdBin}} {
		bin, cleanup, err := plugintest.Build(b.pkg)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return
		}
		cleanups = append(cleanups, cleanup)
		*b.bin = bin
	}
	code = m.Run()
}

func decoded(t *testing.T, p *plugins.Plugin, alg string) uint64 {
	t.Helper()
	return plugintest.Counters(t, p, alg).Decompressed
}

func TestLiblz4InProcess(t *testing.T) { plugintest.CheckCodec(t, liblz4.Codec{}, golz4.Go()) }

func TestCodecThroughPlugin(t *testing.T) {
	p, err := plugins.Start(context.Background(), plugins.Config{Path: lz4Bin, Algorithms: []string{"lz4"}}, plugins.WithLogger(plugintest.Quiet()))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := p.Codec("lz4")
	if err != nil {
		t.Fatal(err)
	}
	before := decoded(t, p, "lz4")
	plugintest.CheckCodec(t, c, golz4.Go())
	if served := decoded(t, p, "lz4") - before; served < uint64(3*len(plugintest.Inputs())) {
		t.Fatalf("the plugin counted %d decoded blocks", served)
	}
}

// TestEveryVectorThroughExamplePlugins serves lz4 and zstd from the two
// example plugins and reads every ZFile vector through them; each plugin's
// counter proves it decoded every block of its algorithm.
func TestEveryVectorThroughExamplePlugins(t *testing.T) {
	h, err := plugins.Load(context.Background(), []plugins.Config{
		{Path: lz4Bin, Algorithms: []string{"lz4"}},
		{Path: zstdBin, Algorithms: []string{"zstd"}},
	}, "", plugins.WithLogger(plugintest.Quiet()))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	byAlg := map[string]*plugins.Plugin{"lz4": h.Plugins()[0], "zstd": h.Plugins()[1]}
	for rel, want := range plugintest.Vectors(t) {
		t.Run(rel, func(t *testing.T) {
			r := plugintest.OpenVector(t, rel)
			defer r.Close()
			p := byAlg[r.Algorithm()]
			if p == nil {
				t.Fatalf("algorithm %q", r.Algorithm())
			}
			before := decoded(t, p, r.Algorithm())
			plugintest.ReadAll(t, r, want)
			if served := decoded(t, p, r.Algorithm()) - before; served < uint64(r.BlockCount()) {
				t.Fatalf("the %s plugin decoded %d blocks of %d", r.Algorithm(), served, r.BlockCount())
			}
		})
	}
}

// TestWriterThroughPlugin writes every lz4 ZFile vector's input with
// core/zfile's writer, lz4 served by the plugin: the files are
// byte-identical to upstream's.
func TestWriterThroughPlugin(t *testing.T) {
	h, err := plugins.Load(context.Background(), []plugins.Config{{Path: lz4Bin, Algorithms: []string{"lz4"}}}, "", plugins.WithLogger(plugintest.Quiet()))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	v := plugintest.Vectors(t)
	plain := zfiletest.Plain()
	plugintest.CheckWriter(t, h.Plugins()[0], "lz4", map[string]plugintest.WriterCase{
		"zfile/plain.lz4-bs4.zfile":                  {In: plain, Opts: zfile.Options{Algorithm: "lz4", BlockSize: 4096}},
		"zfile/plain.lz4-bs32.zfile":                 {In: plain, Opts: zfile.Options{Algorithm: "lz4", BlockSize: 32768}},
		"zfile/plain.lz4-bs4-nocrc.zfile":            {In: plain, Opts: zfile.Options{Algorithm: "lz4", BlockSize: 4096, NoCRC: true}},
		"zfile/unreadable-bs64/plain.lz4-bs64.zfile": {In: plain, Opts: zfile.Options{Algorithm: "lz4", BlockSize: 65536, AllowUnreadable: true}},
		"lsmt/rw-log.lz4-bs4.zcommit":                {In: v["lsmt/rw-log.lz4-bs4.zcommit"], Opts: zfile.Options{Algorithm: "lz4", BlockSize: 4096, OverwriteHeader: true}},
		"lsmt/rw-log.lz4-bs32.zcommit":               {In: v["lsmt/rw-log.lz4-bs32.zcommit"], Opts: zfile.Options{Algorithm: "lz4", BlockSize: 32768, OverwriteHeader: true}},
		"lsmt/rw-log.commit.zfile":                   {In: v["lsmt/rw-log.commit.zfile"], Opts: zfile.Options{}},
		"lsmt/rw-log.commit.lz4-bs4-nocrc.zfile":     {In: v["lsmt/rw-log.commit.lz4-bs4-nocrc.zfile"], Opts: zfile.Options{Algorithm: "1", NoCRC: true}},
		"stack/merged-by-tool.zfile":                 {In: v["stack/merged-by-tool.zfile"], Opts: zfile.Options{}},
	})
}
