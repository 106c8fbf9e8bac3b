//go:build amd64 && !purego

package clmul

import "golang.org/x/sys/cpu"

// Minimum is the length from which Prefix folds; shorter inputs are
// faster with the CRC32 instruction alone.
const Minimum = 256

var (
	// Available reports whether this CPU folds: AVX-512 with VPCLMULQDQ
	// (and PCLMULQDQ/AVX for the 128-bit steps),
	// and SSE4.2 for the final CRC32 instructions.
	Available = cpu.X86.HasAVX512F && cpu.X86.HasAVX512VPCLMULQDQ && cpu.X86.HasPCLMULQDQ && cpu.X86.HasAVX && cpu.X86.HasSSE42
	// keys holds the multiplier pairs that move a 128-bit lane 256, 64 and
	// 16 bytes forward.
	keys = [6]uint64{
		keyPair(2048)[0], keyPair(2048)[1],
		keyPair(512)[0], keyPair(512)[1],
		keyPair(128)[0], keyPair(128)[1],
	}
)

// foldAVX512 returns the raw CRC32C of p continued from crc. len(p) is at
// least 256.
//
//go:noescape
func foldAVX512(crc uint32, p []byte, keys *[6]uint64) uint32

// Prefix extends the raw CRC32C crc with the prefix of p that it handles
// (all of p, or nothing when p is shorter than Minimum or the CPU cannot
// fold) and returns the new CRC and the rest of p.
func Prefix(crc uint32, p []byte) (uint32, []byte) {
	if !Available || len(p) < Minimum {
		return crc, p
	}
	return foldAVX512(crc, p, &keys), p[len(p):]
}
