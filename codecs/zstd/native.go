//go:build cgo_codecs && cgo

package zstd

/*
#cgo LDFLAGS: -lzstd
#include <zstd.h>
*/
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/overlaybd-go/overlaybd/core"
)

// NativeName is the registry name of the libzstd flavour.
const NativeName = "zstd-native"

func registerDefault() {
	f := func() (core.Codec, error) { return Native(), nil }
	core.Codecs.Register(NativeName, core.NoNumber, f)
	core.Codecs.Register(Name, Number, f)
}

// Default returns the flavour that the registry serves under Name.
func Default() (core.Codec, error) { return Native(), nil }

// Native returns the libzstd flavour, whose output is byte-identical to
// upstream overlaybd's (with the same libzstd version, Debian bookworm's
// 1.5.4 for the vectors).
func Native() core.Codec { return nativeCodec{} }

type nativeCodec struct{}

func (nativeCodec) Name() string { return Name }

func (nativeCodec) CompressBound(n int) int { return int(C.ZSTD_compressBound(C.size_t(n))) }

func ptr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

func (nativeCodec) Compress(dst, src []byte) (int, error) {
	n := C.ZSTD_compress(ptr(dst), C.size_t(len(dst)), ptr(src), C.size_t(len(src)), C.int(Level))
	if C.ZSTD_isError(n) != 0 {
		return 0, fmt.Errorf("zstd: compress %d bytes: %s", len(src), C.GoString(C.ZSTD_getErrorName(n)))
	}
	return int(n), nil
}

func (nativeCodec) Decompress(dst, src []byte) (int, error) {
	if err := checkFrame(src, len(dst)); err != nil {
		return 0, err
	}
	n := C.ZSTD_decompress(ptr(dst), C.size_t(len(dst)), ptr(src), C.size_t(len(src)))
	if C.ZSTD_isError(n) != 0 {
		return 0, fmt.Errorf("zstd: decompress %d bytes: %s: %w", len(src), C.GoString(C.ZSTD_getErrorName(n)), core.ErrCorrupt)
	}
	return int(n), nil
}
