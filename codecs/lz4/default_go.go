//go:build !(cgo_codecs && cgo)

package lz4

import "github.com/overlaybd-go/overlaybd/core"

func registerDefault() {
	core.Codecs.Register(Name, Number, func() (core.Codec, error) { return Go(), nil })
}

// Default returns the flavour that the registry serves under Name.
func Default() core.Codec { return Go() }
