package fileengine

import (
	"math/bits"
	"sync"
	"unsafe"
)

// Align is the alignment of offsets, lengths and buffer addresses of
// O_DIRECT requests, as upstream's aligned-file adaptor uses (4 KiB).
const Align = 4096

// maxPooledClass is the largest size class (log2 bytes) kept in the pools.
const maxPooledClass = 23 // 8 MiB

var pools [maxPooledClass + 1]sync.Pool

// AlignedBuffer returns a buffer of n bytes whose address is a multiple of
// Align. Its contents are undefined. Return it with FreeAligned when done.
func AlignedBuffer(n int) []byte {
	class := sizeClass(n)
	if class <= maxPooledClass {
		if p, ok := pools[class].Get().(*[]byte); ok {
			return (*p)[:n]
		}
	}
	size := n
	if class <= maxPooledClass {
		size = 1 << class
	}
	raw := make([]byte, size+Align)
	skip := (Align - int(uintptr(unsafe.Pointer(&raw[0]))%Align)) % Align
	return raw[skip : skip+n : skip+size]
}

// FreeAligned returns a buffer obtained from AlignedBuffer to the pool.
func FreeAligned(b []byte) {
	class := sizeClass(cap(b))
	if class <= maxPooledClass && cap(b) == 1<<class {
		b = b[:cap(b)]
		pools[class].Put(&b)
	}
}

func sizeClass(n int) int {
	if n <= Align {
		return 12
	}
	return bits.Len(uint(n - 1))
}

// IsAligned reports whether buf, off and len(buf) meet O_DIRECT's
// alignment.
func IsAligned(buf []byte, off int64) bool {
	if off%Align != 0 || len(buf)%Align != 0 {
		return false
	}
	return len(buf) == 0 || uintptr(unsafe.Pointer(&buf[0]))%Align == 0
}
