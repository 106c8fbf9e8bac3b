package plugins

import (
	"context"
	"path/filepath"
	"testing"

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
