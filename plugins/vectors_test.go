package plugins

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/overlaybd-go/overlaybd/codecs/all"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/plugins/internal/plugintest"
)

// TestVectorsThroughPlugin reads every ZFile vector with both lz4 and zstd
// served by a plugin process and checks the content and that the plugin
// decoded every block.
func TestVectorsThroughPlugin(t *testing.T) {
	h, err := Load(context.Background(), []Config{{Path: filepath.Base(faultBin), Algorithms: []string{"lz4", "zstd"}}}, filepath.Dir(faultBin))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	p := h.Plugins()[0]
	for _, alg := range []string{"lz4", "zstd"} {
		f, err := core.Codecs.Lookup(alg)
		if err != nil {
			t.Fatal(err)
		}
		if c, err := f(); err != nil || c.Name() != alg {
			t.Fatalf("%s: %v", alg, err)
		} else if _, ok := c.(*codec); !ok {
			t.Fatalf("%s resolves to %T", alg, c)
		}
	}
	for rel, want := range plugintest.Vectors(t) {
		t.Run(rel, func(t *testing.T) {
			r := plugintest.OpenVector(t, rel)
			defer r.Close()
			before, err := p.Stats(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			plugintest.ReadAll(t, r, want)
			after, err := p.Stats(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			alg := r.Algorithm()
			if got := after.Codecs[alg].Decompressed - before.Codecs[alg].Decompressed; got < uint64(r.BlockCount()) {
				t.Fatalf("plugin decoded %d %s blocks of %d", got, alg, r.BlockCount())
			}
		})
	}
}

// TestReaderNeverGetsWrongData reads a ZFile through core/zfile's reader
// while the plugin serving its codec misbehaves: every read fails or returns
// the right bytes, and reads succeed again once the plugin behaves.
func TestReaderNeverGetsWrongData(t *testing.T) {
	control := filepath.Join(t.TempDir(), "control")
	setMode(t, control, "ok")
	h, err := Load(context.Background(), []Config{{Path: faultBin, Algorithms: []string{"zstd"}, Args: []string{"-control", control}}}, "",
		WithCallTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	want := plugintest.Vectors(t)["zfile/plain.zstd-bs4.zfile"]
	for _, mode := range []string{"corrupt", "badsum", "short", "long", "short-msg", "long-msg", "wrongseq", "crash", "hang"} {
		t.Run(mode, func(t *testing.T) {
			r := plugintest.OpenVector(t, "zfile/plain.zstd-bs4.zfile")
			defer r.Close()
			setMode(t, control, mode)
			buf := make([]byte, 10000) // three blocks
			n, err := r.ReadAt(buf, 100_000)
			if err == nil {
				t.Fatalf("read through a plugin in mode %s succeeded", mode)
			}
			if !errors.Is(err, core.ErrCorrupt) {
				t.Fatalf("err %v does not wrap core.ErrCorrupt", err)
			}
			if !bytes.Equal(buf[:n], want[100_000:100_000+n]) {
				t.Fatalf("the %d bytes returned with the error are wrong", n)
			}
			setMode(t, control, "ok")
			if n, err := r.ReadAt(buf, 100_000); err != nil || !bytes.Equal(buf[:n], want[100_000:100_000+n]) || n != len(buf) {
				t.Fatalf("after the plugin recovered: %d, %v", n, err)
			}
		})
	}
}
