//go:build !cgo_codecs

package main

// cgoCodecs reports whether the codecs are the cgo flavour, which writes
// ZFiles byte-identical to upstream's.
const cgoCodecs = false
