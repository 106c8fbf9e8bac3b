// Package libzstd is a small cgo binding to the system's libzstd
// (Debian: libzstd-dev) that serves ZFile's zstd codec the way upstream
// overlaybd does: every block is one complete frame made by
// ZSTD_compress at level 3, read back by ZSTD_decompress. With Debian
// bookworm's libzstd 1.5.4 the compressed blocks are byte-identical to
// upstream's. Compression and decompression contexts are reused from a
// bounded pool, which gives the same bytes as the one-shot calls without
// their per-call allocation.
package libzstd

/*
#cgo LDFLAGS: -lzstd
#include <zstd.h>
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"github.com/overlaybd-go/overlaybd/core"
)

// Level is the compression level upstream overlaybd hard-wires.
const Level = 3

// Version is the version of the linked libzstd.
func Version() string { return C.GoString(C.ZSTD_versionString()) }

// Codec is ZFile's zstd codec on libzstd. The zero value is ready to use and
// safe for concurrent use.
type Codec struct{}

var _ core.Codec = Codec{}

// pool holds idle contexts (as unsafe.Pointer: cgo's incomplete context
// types cannot be type arguments); a context is created when the pool is
// empty and freed when it is full, so C memory stays bounded.
type pool struct {
	idle   chan unsafe.Pointer
	create func() unsafe.Pointer
	free   func(unsafe.Pointer)
}

func newPool(create func() unsafe.Pointer, free func(unsafe.Pointer)) *pool {
	return &pool{idle: make(chan unsafe.Pointer, 2*runtime.GOMAXPROCS(0)), create: create, free: free}
}

func (p *pool) get() unsafe.Pointer {
	select {
	case c := <-p.idle:
		return c
	default:
		return p.create()
	}
}

func (p *pool) put(c unsafe.Pointer) {
	select {
	case p.idle <- c:
	default:
		p.free(c)
	}
}

var (
	cctxs = newPool(func() unsafe.Pointer { return unsafe.Pointer(C.ZSTD_createCCtx()) },
		func(c unsafe.Pointer) { C.ZSTD_freeCCtx((*C.ZSTD_CCtx)(c)) })
	dctxs = newPool(func() unsafe.Pointer { return unsafe.Pointer(C.ZSTD_createDCtx()) },
		func(c unsafe.Pointer) { C.ZSTD_freeDCtx((*C.ZSTD_DCtx)(c)) })
)

func ptr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

func zstdErr(code C.size_t) error {
	return errors.New(C.GoString(C.ZSTD_getErrorName(code)))
}

// Name implements core.Codec.
func (Codec) Name() string { return "zstd" }

// CompressBound implements core.Codec (ZSTD_compressBound).
func (Codec) CompressBound(n int) int { return int(C.ZSTD_compressBound(C.size_t(n))) }

// Compress implements core.Codec: one frame at level 3.
func (Codec) Compress(dst, src []byte) (int, error) {
	c := cctxs.get()
	if c == nil {
		return 0, errors.New("zstd: cannot allocate a compression context")
	}
	r := C.ZSTD_compressCCtx((*C.ZSTD_CCtx)(c), ptr(dst), C.size_t(len(dst)), ptr(src), C.size_t(len(src)), Level)
	cctxs.put(c)
	if C.ZSTD_isError(r) != 0 {
		return 0, fmt.Errorf("zstd compress %d bytes: %w", len(src), zstdErr(r))
	}
	return int(r), nil
}

// Decompress implements core.Codec. Input that is not one valid frame, or
// whose content does not fit dst, is an error wrapping core.ErrCorrupt.
func (Codec) Decompress(dst, src []byte) (int, error) {
	if len(src) == 0 {
		return 0, fmt.Errorf("zstd: empty block: %w", core.ErrCorrupt)
	}
	d := dctxs.get()
	if d == nil {
		return 0, errors.New("zstd: cannot allocate a decompression context")
	}
	r := C.ZSTD_decompressDCtx((*C.ZSTD_DCtx)(d), ptr(dst), C.size_t(len(dst)), ptr(src), C.size_t(len(src)))
	dctxs.put(d)
	if C.ZSTD_isError(r) != 0 {
		return 0, fmt.Errorf("zstd decompress %d bytes into %d: %w: %w", len(src), len(dst), zstdErr(r), core.ErrCorrupt)
	}
	return int(r), nil
}
