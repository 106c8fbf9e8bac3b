package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"

	_ "github.com/overlaybd-go/overlaybd/codecs/all"
	golz4 "github.com/overlaybd-go/overlaybd/codecs/lz4"
	"github.com/overlaybd-go/overlaybd/core/zfile"
	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
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

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func decoded(t *testing.T, p *plugins.Plugin, alg string) uint64 {
	t.Helper()
	st, err := p.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Codecs[alg].Decompressed
}

func TestLiblz4InProcess(t *testing.T) { plugintest.CheckCodec(t, liblz4.Codec{}, golz4.Go()) }

func TestCodecThroughPlugin(t *testing.T) {
	p, err := plugins.Start(context.Background(), plugins.Config{Path: lz4Bin, Algorithms: []string{"lz4"}}, plugins.WithLogger(quiet()))
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
	}, "", plugins.WithLogger(quiet()))
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
	h, err := plugins.Load(context.Background(), []plugins.Config{{Path: lz4Bin, Algorithms: []string{"lz4"}}}, "", plugins.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	p := h.Plugins()[0]
	v := plugintest.Vectors(t)
	plain := zfiletest.Plain()
	cases := map[string]struct {
		in   []byte
		opts zfile.Options
	}{
		"zfile/plain.lz4-bs4.zfile":                  {plain, zfile.Options{Algorithm: "lz4", BlockSize: 4096}},
		"zfile/plain.lz4-bs32.zfile":                 {plain, zfile.Options{Algorithm: "lz4", BlockSize: 32768}},
		"zfile/plain.lz4-bs4-nocrc.zfile":            {plain, zfile.Options{Algorithm: "lz4", BlockSize: 4096, NoCRC: true}},
		"zfile/unreadable-bs64/plain.lz4-bs64.zfile": {plain, zfile.Options{Algorithm: "lz4", BlockSize: 65536, AllowUnreadable: true}},
		"lsmt/rw-log.lz4-bs4.zcommit":                {v["lsmt/rw-log.lz4-bs4.zcommit"], zfile.Options{Algorithm: "lz4", BlockSize: 4096, OverwriteHeader: true}},
		"lsmt/rw-log.lz4-bs32.zcommit":               {v["lsmt/rw-log.lz4-bs32.zcommit"], zfile.Options{Algorithm: "lz4", BlockSize: 32768, OverwriteHeader: true}},
		"lsmt/rw-log.commit.zfile":                   {v["lsmt/rw-log.commit.zfile"], zfile.Options{}},
		"lsmt/rw-log.commit.lz4-bs4-nocrc.zfile":     {v["lsmt/rw-log.commit.lz4-bs4-nocrc.zfile"], zfile.Options{Algorithm: "1", NoCRC: true}},
		"stack/merged-by-tool.zfile":                 {v["stack/merged-by-tool.zfile"], zfile.Options{}},
	}
	for rel, c := range cases {
		t.Run(rel, func(t *testing.T) {
			want, err := os.ReadFile(testvectors.Path(t, rel))
			if err != nil {
				t.Fatal(err)
			}
			st, err := p.Stats(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			before := st.Codecs["lz4"].Compressed
			out := zfiletest.NewMemFile(nil)
			w, err := zfile.NewWriterAt(out, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(c.in); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if got := out.Bytes(); !bytes.Equal(got, want) {
				t.Fatalf("not byte-identical: %d bytes, want %d", len(got), len(want))
			}
			if st, err = p.Stats(context.Background()); err != nil {
				t.Fatal(err)
			}
			bs := max(c.opts.BlockSize, 4096)
			if got, blocks := st.Codecs["lz4"].Compressed-before, (len(c.in)+bs-1)/bs; got != uint64(blocks) {
				t.Fatalf("the plugin compressed %d blocks, want %d", got, blocks)
			}
		})
	}
}
