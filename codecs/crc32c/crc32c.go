// Package crc32c is overlaybd's checksum: CRC32C (Castagnoli, reflected
// polynomial 0x82F63B78) in raw form, that is without the initial and final
// inversion of the standard CRC-32C. ZFile seeds block checksums with
// BlockSeed and header digests and jump-table checksums with 0.
//
// The pure Go flavour (registry name "crc32c-go") uses hash/crc32, which
// runs the SSE4.2/ARMv8 CRC instructions where available. With the build tag
// isal, "crc32c-isal" calls ISA-L's crc32_iscsi through cgo. The registry
// name "crc32c" serves ISA-L when it is built and pure Go otherwise; every
// flavour computes the same value.
package crc32c

import (
	"hash/crc32"

	"github.com/overlaybd-go/overlaybd/core"
)

const (
	// Name is the registry name of the fastest flavour built.
	Name = "crc32c"
	// GoName is the registry name of the pure Go flavour.
	GoName = "crc32c-go"
	// BlockSeed seeds the per-block checksum of a ZFile
	// (NOI_WELL_KNOWN_PRIME in overlaybd).
	BlockSeed = 100007
)

var table = crc32.MakeTable(crc32.Castagnoli)

func init() {
	core.Checksums.Register(GoName, core.NoNumber, func() core.Checksum { return Go() })
	registerDefault()
}

// Update extends the raw CRC32C crc with p using the pure Go flavour.
func Update(crc uint32, p []byte) uint32 {
	return ^crc32.Update(^crc, table, p)
}

// Go returns the pure Go flavour.
func Go() core.Checksum { return goChecksum{} }

type goChecksum struct{}

func (goChecksum) Name() string                       { return GoName }
func (goChecksum) Update(crc uint32, p []byte) uint32 { return Update(crc, p) }
