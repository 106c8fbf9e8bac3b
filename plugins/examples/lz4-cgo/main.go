// Command lz4-cgo is a codec plugin that serves ZFile's lz4 codec from
// Debian's liblz4 through cgo: its blocks are byte-identical to upstream
// overlaybd's (the pure-Go encoder's are not). Build it with
//
//	go build -o /usr/local/lib/overlaybd/plugins/lz4-cgo ./plugins/examples/lz4-cgo
//
// (needs cgo and liblz4-dev) and name it in overlaybd.json:
//
//	"codecPlugins": [{"path": "/usr/local/lib/overlaybd/plugins/lz4-cgo", "algorithms": ["lz4"]}]
package main

import (
	"github.com/overlaybd-go/overlaybd/plugins/examples/lz4-cgo/liblz4"
	"github.com/overlaybd-go/overlaybd/plugins/sdk"
)

func main() {
	sdk.Serve("lz4-cgo 1.0 (liblz4 "+liblz4.Version()+")", liblz4.Codec{})
}
