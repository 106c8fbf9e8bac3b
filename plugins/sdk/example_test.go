package sdk_test

import (
	"github.com/overlaybd-go/overlaybd/codecs/zstd"
	"github.com/overlaybd-go/overlaybd/plugins/sdk"
)

// A plugin's main function: serve a core.Codec named "lz4" or "zstd".
// (Not run as a test: Serve only works in a process an overlaybd binary
// started.)
func Example() {
	codec, err := zstd.Go()
	if err != nil {
		sdk.Logger().Error("no codec", "err", err)
		return
	}
	sdk.Serve("zstd-go 1.0", codec)
}
