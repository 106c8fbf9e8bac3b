// Package liblz4 is a small cgo binding to the system's liblz4 (Debian:
// liblz4-dev) that serves ZFile's lz4 codec the way upstream overlaybd does:
// every block is one raw LZ4 block made by LZ4_compress_default and read
// back by LZ4_decompress_safe. With Debian bookworm's liblz4 1.9.4 the
// compressed blocks are byte-identical to upstream's.
package liblz4

/*
#cgo LDFLAGS: -llz4
#include <lz4.h>
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"unsafe"

	"github.com/overlaybd-go/overlaybd/core"
)

// Version is the version of the linked liblz4.
func Version() string { return C.GoString(C.LZ4_versionString()) }

// Codec is ZFile's lz4 codec on liblz4. The zero value is ready to use and
// safe for concurrent use.
type Codec struct{}

var _ core.Codec = Codec{}

func ptr(b []byte) *C.char {
	if len(b) == 0 {
		return nil
	}
	return (*C.char)(unsafe.Pointer(&b[0]))
}

// Name implements core.Codec.
func (Codec) Name() string { return "lz4" }

// CompressBound implements core.Codec (LZ4_compressBound).
func (Codec) CompressBound(n int) int {
	if n < 0 || n > C.LZ4_MAX_INPUT_SIZE {
		return 0
	}
	return int(C.LZ4_compressBound(C.int(n)))
}

// Compress implements core.Codec.
func (Codec) Compress(dst, src []byte) (int, error) {
	if len(src) > C.LZ4_MAX_INPUT_SIZE {
		return 0, fmt.Errorf("lz4: block of %d bytes is too large", len(src))
	}
	r := C.LZ4_compress_default(ptr(src), ptr(dst), C.int(len(src)), C.int(min(len(dst), math.MaxInt32)))
	if r <= 0 {
		return 0, errors.New("lz4: compression failed (destination too small?)")
	}
	return int(r), nil
}

// Decompress implements core.Codec. Input that is not a valid block, or
// whose content does not fit dst, is an error wrapping core.ErrCorrupt.
func (Codec) Decompress(dst, src []byte) (int, error) {
	if len(src) == 0 || len(src) > math.MaxInt32 {
		return 0, fmt.Errorf("lz4: block of %d bytes: %w", len(src), core.ErrCorrupt)
	}
	r := C.LZ4_decompress_safe(ptr(src), ptr(dst), C.int(len(src)), C.int(min(len(dst), math.MaxInt32)))
	if r < 0 {
		return 0, fmt.Errorf("lz4: block of %d bytes does not decode into %d: %w", len(src), len(dst), core.ErrCorrupt)
	}
	return int(r), nil
}
