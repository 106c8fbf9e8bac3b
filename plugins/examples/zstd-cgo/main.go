// Command zstd-cgo is a codec plugin that serves ZFile's zstd codec from
// Debian's libzstd through cgo: blocks compressed by ZSTD_compress at level
// 3 are byte-identical to upstream overlaybd's, and decoding is faster than
// the pure-Go decoder. Build it with
//
//	go build -o /usr/local/lib/overlaybd/plugins/zstd-cgo ./plugins/examples/zstd-cgo
//
// (needs cgo and libzstd-dev) and name it in overlaybd.json:
//
//	"codecPlugins": [{"path": "/usr/local/lib/overlaybd/plugins/zstd-cgo", "algorithms": ["zstd"]}]
package main

import (
	"github.com/overlaybd-go/overlaybd/plugins/examples/zstd-cgo/libzstd"
	"github.com/overlaybd-go/overlaybd/plugins/sdk"
)

func main() {
	sdk.Serve("zstd-cgo 1.0 (libzstd "+libzstd.Version()+")", libzstd.Codec{})
}
