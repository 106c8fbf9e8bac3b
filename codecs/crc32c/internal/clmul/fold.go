// Package clmul computes the raw CRC32C of long inputs by folding them with
// carry-less multiplication where the CPU has it (amd64 AVX-512
// VPCLMULQDQ). It is kept apart from package crc32c because Go assembly
// cannot live in a package that also uses cgo.
package clmul

import "math/bits"

// poly is the CRC32C (Castagnoli) polynomial in normal bit order, without
// its x^32 term.
const poly = 0x1EDC6F41

// xPowMod returns x^n modulo the CRC32C polynomial, in normal bit order
// (bit e is the coefficient of x^e).
func xPowMod(n int) uint32 {
	v := uint64(1)
	for range n {
		v <<= 1
		if v&(1<<32) != 0 {
			v ^= 1<<32 | poly
		}
	}
	return uint32(v)
}

// foldKey returns x^n modulo the polynomial as a 64-bit multiplier in the
// reflected order of the data: the coefficient of x^e in bit 63-e. A
// carry-less product of a reflected 64-bit word with it is the word times
// x^(n+1), which the folding code uses to move a lane forward.
func foldKey(n int) uint64 { return bits.Reverse64(uint64(xPowMod(n))) }

// keyPair returns the multipliers that move a 128-bit lane d bits forward:
// one for its low (earlier) word and one for its high word.
func keyPair(d int) [2]uint64 { return [2]uint64{foldKey(d + 63), foldKey(d - 1)} }
