//go:build cgo_codecs && cgo

package zstd

/*
#cgo LDFLAGS: -lzstd
#include <zstd.h>
*/
import "C"

import (
	"fmt"
	"runtime"
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

// Contexts are reused: ZSTD_compress and ZSTD_decompress create and free
// one per call, which costs more than decoding a small block. The pools are
// bounded channels so that no C memory is leaked or held without limit;
// ZSTD_compressCCtx with a reused context writes exactly what
// ZSTD_compress writes.
var (
	cctxs = make(chan *C.ZSTD_CCtx, 2*runtime.GOMAXPROCS(0))
	dctxs = make(chan *C.ZSTD_DCtx, 2*runtime.GOMAXPROCS(0))
)

func getCCtx() *C.ZSTD_CCtx {
	select {
	case c := <-cctxs:
		return c
	default:
		return C.ZSTD_createCCtx()
	}
}

func putCCtx(c *C.ZSTD_CCtx) {
	select {
	case cctxs <- c:
	default:
		C.ZSTD_freeCCtx(c)
	}
}

func getDCtx() *C.ZSTD_DCtx {
	select {
	case c := <-dctxs:
		return c
	default:
		return C.ZSTD_createDCtx()
	}
}

func putDCtx(c *C.ZSTD_DCtx) {
	select {
	case dctxs <- c:
	default:
		C.ZSTD_freeDCtx(c)
	}
}

func (nativeCodec) Compress(dst, src []byte) (int, error) {
	cctx := getCCtx()
	if cctx == nil {
		return 0, fmt.Errorf("zstd: cannot allocate a compression context")
	}
	n := C.ZSTD_compressCCtx(cctx, ptr(dst), C.size_t(len(dst)), ptr(src), C.size_t(len(src)), C.int(Level))
	putCCtx(cctx)
	if C.ZSTD_isError(n) != 0 {
		return 0, fmt.Errorf("zstd: compress %d bytes: %s", len(src), C.GoString(C.ZSTD_getErrorName(n)))
	}
	return int(n), nil
}

func (nativeCodec) Decompress(dst, src []byte) (int, error) {
	if err := checkFrame(src, len(dst)); err != nil {
		return 0, err
	}
	dctx := getDCtx()
	if dctx == nil {
		return 0, fmt.Errorf("zstd: cannot allocate a decompression context")
	}
	n := C.ZSTD_decompressDCtx(dctx, ptr(dst), C.size_t(len(dst)), ptr(src), C.size_t(len(src)))
	putDCtx(dctx)
	if C.ZSTD_isError(n) != 0 {
		return 0, fmt.Errorf("zstd: decompress %d bytes: %s: %w", len(src), C.GoString(C.ZSTD_getErrorName(n)), core.ErrCorrupt)
	}
	return int(n), nil
}
