package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	_ "github.com/overlaybd-go/overlaybd/codecs/all"
	gozstd "github.com/overlaybd-go/overlaybd/codecs/zstd"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
	"github.com/overlaybd-go/overlaybd/plugins"
	"github.com/overlaybd-go/overlaybd/plugins/examples/zstd-cgo/libzstd"
	"github.com/overlaybd-go/overlaybd/plugins/internal/plugintest"
)

// pluginBin is this plugin, built once per test run with go build.
var pluginBin string

func TestMain(m *testing.M) {
	bin, cleanup, err := plugintest.Build("github.com/overlaybd-go/overlaybd/plugins/examples/zstd-cgo")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginBin = bin
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// startPlugin starts the plugin on its own, for its codecs.
func startPlugin(tb testing.TB) *plugins.Plugin {
	tb.Helper()
	p, err := plugins.Start(context.Background(), plugins.Config{Path: pluginBin, Algorithms: []string{"zstd"}}, plugins.WithLogger(plugintest.Quiet()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// loadPlugin starts the plugin in a plugin host from a codecPlugins entry
// with path, relative to the plugin's folder or absolute, so that it serves
// zstd to core/zfile until the test ends.
func loadPlugin(tb testing.TB, path string) *plugins.Plugin {
	tb.Helper()
	h, err := plugins.Load(context.Background(), []plugins.Config{{Path: path, Algorithms: []string{"zstd"}}},
		filepath.Dir(pluginBin), plugins.WithLogger(plugintest.Quiet()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	return h.Plugins()[0]
}

func decoded(tb testing.TB, p *plugins.Plugin) uint64 {
	tb.Helper()
	return plugintest.Counters(tb, p, "zstd").Decompressed
}

func goZstd(tb testing.TB) core.Codec {
	c, err := gozstd.Go()
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func TestLibzstdInProcess(t *testing.T) { plugintest.CheckCodec(t, libzstd.Codec{}, goZstd(t)) }

func TestCodecThroughPlugin(t *testing.T) {
	p := startPlugin(t)
	c, err := p.Codec("zstd")
	if err != nil {
		t.Fatal(err)
	}
	before := decoded(t, p)
	plugintest.CheckCodec(t, c, goZstd(t))
	if served := decoded(t, p) - before; served < uint64(3*len(plugintest.Inputs())) {
		t.Fatalf("the plugin counted %d decoded blocks; the checks did not go through it", served)
	}
	if v := p.Version(); v != "zstd-cgo 1.0 (libzstd "+libzstd.Version()+")" {
		t.Fatalf("version %q", v)
	}
}

func TestLz4NotServed(t *testing.T) {
	_, err := plugins.Start(context.Background(), plugins.Config{Path: pluginBin, Algorithms: []string{"lz4"}}, plugins.WithLogger(plugintest.Quiet()))
	if err == nil {
		t.Fatal("a zstd plugin started for lz4")
	}
	t.Log(err)
}

// TestVectorsThroughPlugin reads every ZFile vector with zstd served by the
// plugin, registered from a codecPlugins entry with a path relative to the
// configuration's folder (lz4 stays in process), and compares with the
// expected content; the plugin's own counter proves it decoded every zstd
// block. It also checks that the plugin's compression reproduces upstream's
// zstd blocks byte for byte.
func TestVectorsThroughPlugin(t *testing.T) {
	p := loadPlugin(t, filepath.Base(pluginBin))
	f, err := core.Codecs.Lookup("zstd")
	if err != nil {
		t.Fatal(err)
	}
	zc, err := f()
	if err != nil {
		t.Fatal(err)
	}
	zstdFiles := 0
	for rel, want := range plugintest.Vectors(t) {
		t.Run(rel, func(t *testing.T) {
			r := plugintest.OpenVector(t, rel)
			defer r.Close()
			before := decoded(t, p)
			plugintest.ReadAll(t, r, want)
			served := decoded(t, p) - before
			if r.Algorithm() != "zstd" {
				if served != 0 {
					t.Fatalf("%s file: the zstd plugin decoded %d blocks", r.Algorithm(), served)
				}
				return
			}
			zstdFiles++
			if served < uint64(r.BlockCount()) {
				t.Fatalf("the plugin decoded %d blocks of %d", served, r.BlockCount())
			}
			raw, err := os.ReadFile(testvectors.Path(t, rel))
			if err != nil {
				t.Fatal(err)
			}
			bs := int64(r.Header().BlockSize)
			comp := make([]byte, zc.CompressBound(int(bs)))
			for i := range r.BlockCount() {
				off, l := r.StoredBlock(i)
				if r.Header().Verify {
					l -= 4
				}
				m, err := zc.Compress(comp, want[i*bs:min((i+1)*bs, int64(len(want)))])
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(comp[:m], raw[off:off+l]) {
					t.Fatalf("block %d: the plugin's %d bytes differ from upstream's %d", i, m, l)
				}
			}
		})
	}
	if zstdFiles < 10 {
		t.Fatalf("%d zstd vectors went through the plugin", zstdFiles)
	}
}
