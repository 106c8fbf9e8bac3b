// Package crc32c is overlaybd's checksum: CRC32C (Castagnoli, reflected
// polynomial 0x82F63B78) in raw form, that is without the initial and final
// inversion of the standard CRC-32C. ZFile seeds block checksums with
// BlockSeed and header digests and jump-table checksums with 0.
//
// The pure Go flavour (registry name "crc32c-go") uses hash/crc32, which
// runs the SSE4.2/ARMv8 CRC instructions where available, and on amd64 CPUs
// with AVX-512 VPCLMULQDQ folds long inputs in Go assembly first (package
// internal/clmul; the build tag purego turns that off). With the build tag
// isal, "crc32c-isal" calls ISA-L's crc32_iscsi through cgo. The registry
// name "crc32c" serves ISA-L when it is built and pure Go otherwise; every
// flavour computes the same value.
package crc32c

import (
	"hash/crc32"

	"github.com/overlaybd-go/overlaybd/codecs/crc32c/internal/clmul"
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
// On amd64 with AVX-512 VPCLMULQDQ, inputs of clmul.Minimum bytes or more
// are folded with carry-less multiplication first (about three times
// hash/crc32's speed at 4 KiB), and hash/crc32 finishes the last bytes.
func Update(crc uint32, p []byte) uint32 {
	crc, p = clmul.Prefix(crc, p)
	return ^crc32.Update(^crc, table, p)
}

// Go returns the pure Go flavour.
func Go() core.Checksum { return goChecksum{} }

type goChecksum struct{}

func (goChecksum) Name() string                       { return GoName }
func (goChecksum) Update(crc uint32, p []byte) uint32 { return Update(crc, p) }
