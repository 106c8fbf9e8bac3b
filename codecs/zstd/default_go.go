//go:build !(cgo_codecs && cgo)

package zstd

import "github.com/overlaybd-go/overlaybd/core"

func registerDefault() {
	core.Codecs.Register(Name, Number, func() (core.Codec, error) { return Go() })
}

// Default returns the flavour that the registry serves under Name.
func Default() (core.Codec, error) { return Go() }
