// Package lz4 is ZFile's LZ4 codec (algorithm 1): every block is one raw LZ4
// block, without frame or size prefix.
//
// Two flavours exist. Go, always built, uses github.com/pierrec/lz4/v4; its
// compressed bytes are valid LZ4 but differ from upstream's. Native, built
// with the build tag cgo_codecs, calls Debian's liblz4 (LZ4_compress_default,
// LZ4_decompress_safe) and reproduces upstream overlaybd's blocks byte for
// byte. The registry name "lz4" (number 1) serves Native when it is built and
// Go otherwise; "lz4-go" and, with the tag, "lz4-native" name each flavour.
package lz4

import (
	"fmt"
	"sync"

	"github.com/overlaybd-go/overlaybd/core"
	lz4 "github.com/pierrec/lz4/v4"
)

// Name is the registry name of the algorithm; Number is its ZFile number.
const (
	Name   = "lz4"
	Number = 1
	// GoName is the registry name of the pure Go flavour.
	GoName = "lz4-go"
)

func init() {
	core.Codecs.Register(GoName, core.NoNumber, func() (core.Codec, error) { return Go(), nil })
	registerDefault()
}

// compressors recycles the encoders' hash tables.
var compressors = sync.Pool{New: func() any { return new(lz4.Compressor) }}

// Go returns the pure Go flavour.
func Go() core.Codec { return goCodec{} }

type goCodec struct{}

func (goCodec) Name() string { return Name }

// CompressBound follows LZ4_compressBound: n + n/255 + 16.
func (goCodec) CompressBound(n int) int { return lz4.CompressBlockBound(n) }

func (goCodec) Compress(dst, src []byte) (int, error) {
	if len(src) == 0 {
		// LZ4 encodes empty input as a single zero token.
		if len(dst) < 1 {
			return 0, fmt.Errorf("lz4: destination too small")
		}
		dst[0] = 0
		return 1, nil
	}
	c := compressors.Get().(*lz4.Compressor)
	n, err := c.CompressBlock(src, dst)
	compressors.Put(c)
	if err != nil {
		return 0, fmt.Errorf("lz4: compress %d bytes: %w", len(src), err)
	}
	if n == 0 {
		return 0, fmt.Errorf("lz4: compress %d bytes: destination of %d bytes too small", len(src), len(dst))
	}
	return n, nil
}

func (goCodec) Decompress(dst, src []byte) (int, error) {
	n, err := lz4.UncompressBlock(src, dst)
	if err != nil {
		return 0, fmt.Errorf("lz4: decompress %d bytes: %v: %w", len(src), err, core.ErrCorrupt)
	}
	return n, nil
}
