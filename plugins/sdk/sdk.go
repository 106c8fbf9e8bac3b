// Package sdk is what the author of an overlaybd codec plugin imports. A
// codec plugin is a separate binary that serves ZFile's lz4 or zstd codec
// (never a new algorithm: files must stay readable by upstream overlaybd) to
// the overlaybd daemons and tools, which start it when overlaybd.json names
// it in codecPlugins. Typical reasons are a codec in a C library, a hardware
// accelerator, or a licence that must stay out of the daemon's process.
//
// Implement core.Codec (Name "lz4" or "zstd"; Decompress errors wrap
// core.ErrCorrupt for input that does not decode) and call Serve from main:
//
//	package main
//
//	import "github.com/overlaybd-go/overlaybd/plugins/sdk"
//
//	type myZstd struct{}
//
//	func (myZstd) Name() string                            { return "zstd" }
//	func (myZstd) CompressBound(n int) int                 { return n + n>>8 + 512 }
//	func (myZstd) Compress(dst, src []byte) (int, error)   { ... }
//	func (myZstd) Decompress(dst, src []byte) (int, error) { ... } // errors wrap core.ErrCorrupt
//
//	func main() {
//		sdk.Serve("my-zstd 1.0", myZstd{})
//	}
//
// The SDK does the rest: the go-plugin handshake with the host, the control
// service (which codecs are served, limits, version, counters), the
// shared-memory data plane that carries batches of blocks, and a CRC32C
// checksum over every reply that the host verifies before it uses a byte.
// The codec is called from several goroutines at once and must be safe for
// concurrent use. Log with Logger: the host forwards the records to its own
// log. docs/plugins.md describes configuration, trust rules and the wire
// protocol.
package sdk

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/plugins/internal/pluginserver"
)

// Serve serves codecs as a codec plugin until the host stops the process;
// version is the plugin's own version string, reported to the host. Serve
// does not return: on a start-up error (the binary was run by hand, a codec
// is not lz4 or zstd) it prints the error to standard error and exits with
// status 1.
func Serve(version string, codecs ...core.Codec) {
	if err := pluginserver.Run(codecs, pluginserver.Options{Version: version}); err != nil {
		fmt.Fprintf(os.Stderr, "codec plugin: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Logger returns a structured logger whose records the host receives and
// writes to its own log, with the plugin's name.
func Logger() *slog.Logger { return pluginserver.Logger() }
