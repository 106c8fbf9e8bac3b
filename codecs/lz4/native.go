//go:build cgo_codecs && cgo

package lz4

/*
#cgo LDFLAGS: -llz4
#include <lz4.h>
*/
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/overlaybd-go/overlaybd/core"
)

// NativeName is the registry name of the liblz4 flavour.
const NativeName = "lz4-native"

func registerDefault() {
	f := func() (core.Codec, error) { return Native(), nil }
	core.Codecs.Register(NativeName, core.NoNumber, f)
	core.Codecs.Register(Name, Number, f)
}

// Default returns the flavour that the registry serves under Name.
func Default() core.Codec { return Native() }

// Native returns the liblz4 flavour, whose output is byte-identical to
// upstream overlaybd's.
func Native() core.Codec { return nativeCodec{} }

type nativeCodec struct{}

func (nativeCodec) Name() string { return Name }

func (nativeCodec) CompressBound(n int) int { return int(C.LZ4_compressBound(C.int(n))) }

func (nativeCodec) Compress(dst, src []byte) (int, error) {
	if len(src) > C.LZ4_MAX_INPUT_SIZE || len(dst) > 1<<31-1 {
		return 0, fmt.Errorf("lz4: block of %d bytes too large", len(src))
	}
	var s, d *C.char
	if len(src) > 0 {
		s = (*C.char)(unsafe.Pointer(&src[0]))
	}
	if len(dst) > 0 {
		d = (*C.char)(unsafe.Pointer(&dst[0]))
	}
	n := C.LZ4_compress_default(s, d, C.int(len(src)), C.int(len(dst)))
	if n <= 0 {
		return 0, fmt.Errorf("lz4: compress %d bytes into %d: failed", len(src), len(dst))
	}
	return int(n), nil
}

func (nativeCodec) Decompress(dst, src []byte) (int, error) {
	if len(src) == 0 || len(src) > 1<<31-1 || len(dst) > 1<<31-1 {
		return 0, fmt.Errorf("lz4: decompress %d bytes: %w", len(src), core.ErrCorrupt)
	}
	var d *C.char
	if len(dst) > 0 {
		d = (*C.char)(unsafe.Pointer(&dst[0]))
	}
	n := C.LZ4_decompress_safe((*C.char)(unsafe.Pointer(&src[0])), d, C.int(len(src)), C.int(len(dst)))
	if n < 0 {
		return 0, fmt.Errorf("lz4: decompress %d bytes: malformed block: %w", len(src), core.ErrCorrupt)
	}
	return int(n), nil
}
