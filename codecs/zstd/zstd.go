// Package zstd is ZFile's zstd codec (algorithm 2): every block is one
// complete zstd frame, content size included, as upstream's
// ZSTD_compress(level 3) writes it.
//
// Two flavours exist. Go, always built, uses
// github.com/klauspost/compress/zstd at SpeedDefault, the encoder level
// closest to libzstd level 3; its frames are valid but differ from
// upstream's. Native, built with the build tag cgo_codecs, calls Debian's
// libzstd (ZSTD_compress level 3, ZSTD_decompress) and reproduces upstream's
// blocks byte for byte. The registry name "zstd" (number 2) serves Native
// when it is built and Go otherwise; "zstd-go" and, with the tag,
// "zstd-native" name each flavour.
package zstd

import (
	"fmt"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/overlaybd-go/overlaybd/core"
)

// Name is the registry name of the algorithm; Number is its ZFile number.
const (
	Name   = "zstd"
	Number = 2
	// GoName is the registry name of the pure Go flavour.
	GoName = "zstd-go"
	// Level is the libzstd compression level upstream hard-wires.
	Level = 3
	// maxFrameContent bounds what one frame may declare or decode to; ZFile
	// blocks are at most a few hundred KiB.
	maxFrameContent = 16 << 20
)

func init() {
	core.Codecs.Register(GoName, core.NoNumber, func() (core.Codec, error) { return Go() })
	registerDefault()
}

var (
	goOnce  sync.Once
	goInst  *goCodec
	goError error
)

// Go returns the pure Go flavour. The encoder and decoder are shared and
// safe for concurrent use.
func Go() (core.Codec, error) {
	goOnce.Do(func() {
		enc, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(Level)),
			zstd.WithEncoderCRC(false),
			// EncodeAll takes one of this many encoders per call: it bounds
			// how many blocks compress in parallel.
			zstd.WithEncoderConcurrency(min(runtime.GOMAXPROCS(0), 8)),
			zstd.WithZeroFrames(true))
		if err != nil {
			goError = fmt.Errorf("zstd: encoder: %w", err)
			return
		}
		dec, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(0),
			zstd.WithDecoderMaxMemory(maxFrameContent),
			zstd.WithDecodeAllCapLimit(true))
		if err != nil {
			goError = fmt.Errorf("zstd: decoder: %w", err)
			return
		}
		goInst = &goCodec{enc: enc, dec: dec}
	})
	if goError != nil {
		return nil, goError
	}
	return goInst, nil
}

type goCodec struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
}

func (*goCodec) Name() string { return Name }

// CompressBound follows ZSTD_COMPRESSBOUND.
func (*goCodec) CompressBound(n int) int { return compressBound(n) }

func compressBound(n int) int {
	b := n + n>>8
	if n < 128<<10 {
		b += (128<<10 - n) >> 11
	}
	return b
}

func (c *goCodec) Compress(dst, src []byte) (int, error) {
	out := c.enc.EncodeAll(src, dst[:0])
	if len(out) > len(dst) || (len(out) > 0 && &out[0] != &dst[0]) {
		if len(out) > len(dst) {
			return 0, fmt.Errorf("zstd: compress %d bytes: destination of %d bytes too small", len(src), len(dst))
		}
		copy(dst, out)
	}
	return len(out), nil
}

func (c *goCodec) Decompress(dst, src []byte) (int, error) {
	if err := checkFrame(src, len(dst)); err != nil {
		return 0, err
	}
	// The capacity is clipped so that the decoder never touches bytes
	// beyond dst, which may belong to a neighbour decoded concurrently.
	out, err := c.dec.DecodeAll(src, dst[:0:len(dst)])
	if err != nil {
		return 0, fmt.Errorf("zstd: decompress %d bytes: %v: %w", len(src), err, core.ErrCorrupt)
	}
	if len(out) > len(dst) {
		return 0, fmt.Errorf("zstd: frame decodes to more than %d bytes: %w", len(dst), core.ErrCorrupt)
	}
	if len(out) > 0 && &out[0] != &dst[0] {
		copy(dst, out)
	}
	return len(out), nil
}

// checkFrame rejects frames whose header declares more content than fits in
// capacity bytes before any decoding (and allocation) happens.
func checkFrame(src []byte, capacity int) error {
	var h zstd.Header
	if err := h.Decode(src); err != nil {
		return fmt.Errorf("zstd: frame header: %v: %w", err, core.ErrCorrupt)
	}
	if h.HasFCS && h.FrameContentSize > uint64(capacity) {
		return fmt.Errorf("zstd: frame declares %d bytes, block holds %d: %w", h.FrameContentSize, capacity, core.ErrCorrupt)
	}
	return nil
}
