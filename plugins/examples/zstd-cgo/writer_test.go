package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/overlaybd-go/overlaybd/core/zfile"
	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
	"github.com/overlaybd-go/overlaybd/plugins"
	"github.com/overlaybd-go/overlaybd/plugins/internal/plugintest"
)

// TestWriterThroughPlugin writes every zstd ZFile vector's input with
// core/zfile's writer, zstd served by the plugin, and checks that the file
// is byte-identical to the one upstream's tools wrote and that the plugin
// compressed every block.
func TestWriterThroughPlugin(t *testing.T) {
	h, err := plugins.Load(context.Background(), []plugins.Config{{Path: pluginBin, Algorithms: []string{"zstd"}}},
		filepath.Dir(pluginBin), plugins.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	p := h.Plugins()[0]
	v := plugintest.Vectors(t)
	cases := map[string]struct {
		in   []byte
		opts zfile.Options
	}{
		"zfile/plain.zstd-bs4.zfile":                  {zfiletest.Plain(), zfile.Options{Algorithm: "zstd", BlockSize: 4096}},
		"zfile/plain.zstd-bs32.zfile":                 {zfiletest.Plain(), zfile.Options{Algorithm: "zstd", BlockSize: 32768}},
		"zfile/plain.zstd-bs16-nocrc.zfile":           {zfiletest.Plain(), zfile.Options{Algorithm: "zstd", BlockSize: 16384, NoCRC: true}},
		"zfile/plain.zstd-bs8-hdroverwrite.zfile":     {zfiletest.Plain(), zfile.Options{Algorithm: "zstd", BlockSize: 8192, OverwriteHeader: true}},
		"zfile/unreadable-bs64/plain.zstd-bs64.zfile": {zfiletest.Plain(), zfile.Options{Algorithm: "zstd", BlockSize: 65536, AllowUnreadable: true}},
		"lsmt/rw-log.zstd-bs4.zcommit":                {v["lsmt/rw-log.zstd-bs4.zcommit"], zfile.Options{Algorithm: "zstd", BlockSize: 4096, OverwriteHeader: true}},
		"lsmt/rw-log.zstd-bs32.zcommit":               {v["lsmt/rw-log.zstd-bs32.zcommit"], zfile.Options{Algorithm: "zstd", BlockSize: 32768, OverwriteHeader: true}},
		"lsmt/rw-log.commit.zstd-bs32-nocrc.zfile":    {v["lsmt/rw-log.commit.zstd-bs32-nocrc.zfile"], zfile.Options{Algorithm: "2", BlockSize: 32768, NoCRC: true}},
		"stack/B.zstd-bs16.zcommit":                   {v["stack/B.zstd-bs16.zcommit"], zfile.Options{Algorithm: "zstd", BlockSize: 16384, OverwriteHeader: true}},
		"apply/apply.zstd-bs32.zcommit":               {v["apply/apply.zstd-bs32.zcommit"], zfile.Options{Algorithm: "zstd", BlockSize: 32768, OverwriteHeader: true}},
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
			before := st.Codecs["zstd"].Compressed
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
			blocks := (len(c.in) + c.opts.BlockSize - 1) / c.opts.BlockSize
			if got := st.Codecs["zstd"].Compressed - before; got != uint64(blocks) {
				t.Fatalf("the plugin compressed %d blocks, want %d", got, blocks)
			}
		})
	}
}
