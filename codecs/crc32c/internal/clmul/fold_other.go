//go:build !amd64 || purego

package clmul

// Minimum is the length from which Prefix folds.
const Minimum = 256

// Available reports whether this CPU folds; only amd64 does.
const Available = false

// Prefix returns crc and p unchanged: this platform does not fold.
func Prefix(crc uint32, p []byte) (uint32, []byte) { return crc, p }

var _ = keyPair
