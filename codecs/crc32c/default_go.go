//go:build !(isal && cgo)

package crc32c

import "github.com/overlaybd-go/overlaybd/core"

func registerDefault() {
	core.Checksums.Register(Name, core.NoNumber, func() core.Checksum { return Go() })
}

// Default returns the flavour that the registry serves under Name.
func Default() core.Checksum { return Go() }
