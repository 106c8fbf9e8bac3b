package fileengine

import (
	"testing"
	"unsafe"
)

func TestAlignedBuffer(t *testing.T) {
	for _, n := range []int{1, 511, 4096, 4097, 65536, 1 << 20, 3<<20 + 5, 20 << 20} {
		for range 3 {
			b := AlignedBuffer(n)
			if len(b) != n || uintptr(unsafe.Pointer(&b[0]))%Align != 0 {
				t.Fatalf("AlignedBuffer(%d): len %d, address %#x", n, len(b), uintptr(unsafe.Pointer(&b[0])))
			}
			b[n-1] = 1 // the whole length is usable
			FreeAligned(b)
		}
	}
}

func TestIsAligned(t *testing.T) {
	b := AlignedBuffer(8192)
	defer FreeAligned(b)
	for _, c := range []struct {
		buf  []byte
		off  int64
		want bool
	}{
		{b, 0, true}, {b[:4096], 4096, true}, {b, 512, false}, {b[:4095], 0, false},
		{b[512 : 512+4096], 0, false}, {b[:0], 0, true}, {b[:0], 1, false},
	} {
		if got := IsAligned(c.buf, c.off); got != c.want {
			t.Errorf("IsAligned(len %d at +%d, off %d) = %v", len(c.buf), uintptr(unsafe.Pointer(unsafe.SliceData(c.buf)))%Align, c.off, got)
		}
	}
}
