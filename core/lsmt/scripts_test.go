package lsmt_test

// The write scripts of the test vectors (testdata/README.md, "Data
// generators"), regenerated in Go.

const (
	kib = 1024
	mib = 1024 * kib
)

type scriptOp struct {
	kind   byte // 'P' pattern, 'C' constant, 'R' xorshift, 'D' discard
	off, n int64
	k      uint32
	fill   byte
}

var scripts = map[string][]scriptOp{
	"main": {
		{'P', 0, 64 * kib, 1, 0}, {'C', 1 * mib, 512 * kib, 2, 0xA5}, {'P', 1*mib + 4608, 8192, 3, 0},
		{'P', 8*mib - 2048, 6144, 4, 0}, {'R', 32768, 98304, 5, 0}, {'D', 1*mib + 256*kib, 128 * kib, 6, 0},
		{'P', 1*mib + 300*kib, 4096, 7, 0}, {'P', 64*mib - 12288, 12288, 8, 0}, {'C', 20 * mib, 256 * kib, 9, 0x00},
		{'P', 20*mib + 128*kib, 512, 10, 0}, {'D', 40 * mib, 1 * mib, 11, 0}, {'P', 0, 4096, 12, 0},
		{'P', 1*mib + 512*kib - 512, 1024, 13, 0}, {'R', 10*mib + 512, 1536, 14, 0}, {'D', 12288, 1024, 15, 0},
	},
	"stackA": {{'P', 0, 256 * kib, 21, 0}, {'P', 4 * mib, 128 * kib, 22, 0}, {'C', 16 * mib, 64 * kib, 23, 0x5A}},
	"stackB": {{'P', 128 * kib, 256 * kib, 31, 0}, {'D', 4*mib + 32*kib, 64 * kib, 32, 0}, {'P', 16*mib + 16*kib, 4096, 33, 0}},
	"stackC": {
		{'P', 0, 4096, 41, 0}, {'C', 300 * kib, 8192, 42, 0xFF}, {'D', 16 * mib, 8192, 43, 0},
		{'P', 64*mib - 4096, 4096, 44, 0}, {'P', 4*mib + 64*kib, 512, 45, 0},
	},
}

// opData returns the bytes an op writes (zeros for a discard).
func opData(op scriptOp) []byte {
	b := make([]byte, op.n)
	switch op.kind {
	case 'P':
		x := byte(op.k * 37)
		for j := range b {
			a := uint64(op.off) + uint64(j)
			b[j] = byte(uint32(a*2654435761)>>24) ^ x
		}
	case 'C':
		for j := range b {
			b[j] = op.fill
		}
	case 'R':
		s := op.k*0x01000193 + 1
		for j := range b {
			s ^= s << 13
			s ^= s >> 17
			s ^= s << 5
			b[j] = byte(s)
		}
	}
	return b
}

// image applies the named scripts, in order, to a zero disk of vsize bytes.
func image(vsize int64, names ...string) []byte {
	img := make([]byte, vsize)
	for _, n := range names {
		for _, op := range scripts[n] {
			copy(img[op.off:op.off+op.n], opData(op))
		}
	}
	return img
}
