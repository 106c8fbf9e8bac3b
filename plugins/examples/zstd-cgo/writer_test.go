package main

import (
	"testing"

	"github.com/overlaybd-go/overlaybd/core/zfile"
	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
	"github.com/overlaybd-go/overlaybd/plugins/internal/plugintest"
)

// TestWriterThroughPlugin writes every zstd ZFile vector's input with
// core/zfile's writer, zstd served by the plugin, and checks that the file
// is byte-identical to the one upstream's tools wrote and that the plugin
// compressed every block.
func TestWriterThroughPlugin(t *testing.T) {
	v := plugintest.Vectors(t)
	plugintest.CheckWriter(t, loadPlugin(t, pluginBin), "zstd", map[string]plugintest.WriterCase{
		"zfile/plain.zstd-bs4.zfile":                  {In: zfiletest.Plain(), Opts: zfile.Options{Algorithm: "zstd", BlockSize: 4096}},
		"zfile/plain.zstd-bs32.zfile":                 {In: zfiletest.Plain(), Opts: zfile.Options{Algorithm: "zstd", BlockSize: 32768}},
		"zfile/plain.zstd-bs16-nocrc.zfile":           {In: zfiletest.Plain(), Opts: zfile.Options{Algorithm: "zstd", BlockSize: 16384, NoCRC: true}},
		"zfile/plain.zstd-bs8-hdroverwrite.zfile":     {In: zfiletest.Plain(), Opts: zfile.Options{Algorithm: "zstd", BlockSize: 8192, OverwriteHeader: true}},
		"zfile/unreadable-bs64/plain.zstd-bs64.zfile": {In: zfiletest.Plain(), Opts: zfile.Options{Algorithm: "zstd", BlockSize: 65536, AllowUnreadable: true}},
		"lsmt/rw-log.zstd-bs4.zcommit":                {In: v["lsmt/rw-log.zstd-bs4.zcommit"], Opts: zfile.Options{Algorithm: "zstd", BlockSize: 4096, OverwriteHeader: true}},
		"lsmt/rw-log.zstd-bs32.zcommit":               {In: v["lsmt/rw-log.zstd-bs32.zcommit"], Opts: zfile.Options{Algorithm: "zstd", BlockSize: 32768, OverwriteHeader: true}},
		"lsmt/rw-log.commit.zstd-bs32-nocrc.zfile":    {In: v["lsmt/rw-log.commit.zstd-bs32-nocrc.zfile"], Opts: zfile.Options{Algorithm: "2", BlockSize: 32768, NoCRC: true}},
		"stack/B.zstd-bs16.zcommit":                   {In: v["stack/B.zstd-bs16.zcommit"], Opts: zfile.Options{Algorithm: "zstd", BlockSize: 16384, OverwriteHeader: true}},
		"apply/apply.zstd-bs32.zcommit":               {In: v["apply/apply.zstd-bs32.zcommit"], Opts: zfile.Options{Algorithm: "zstd", BlockSize: 32768, OverwriteHeader: true}},
	})
}
