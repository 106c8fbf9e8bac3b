package clmul

import (
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

var table = crc32.MakeTable(crc32.Castagnoli)

// raw is the raw CRC32C (no inversions) by hash/crc32, the reference.
func raw(crc uint32, p []byte) uint32 { return ^crc32.Update(^crc, table, p) }

func update(crc uint32, p []byte) uint32 {
	crc, rest := Prefix(crc, p)
	return raw(crc, rest)
}

// TestPowers checks xPowMod against the CRC itself: the raw CRC of a one
// bit followed by n-1 zero bits (x^(n-1)) is x^(n+31) modulo the
// polynomial, bit-reversed.
func TestPowers(t *testing.T) {
	for _, bytes := range []int{1, 4, 5, 16, 64, 257} {
		msg := make([]byte, bytes)
		msg[0] = 1
		n := 8 * bytes
		if got, want := reverse32(xPowMod(n+31)), raw(0, msg); got != want {
			t.Errorf("x^%d: %#08x, want %#08x", n+31, got, want)
		}
	}
}

func reverse32(v uint32) uint32 {
	var r uint32
	for range 32 {
		r = r<<1 | v&1
		v >>= 1
	}
	return r
}

// TestAgainstHashCRC32 compares with hash/crc32 for every length up to
// 3 KiB and random longer ones, at many alignments and random seeds.
func TestAgainstHashCRC32(t *testing.T) {
	if !Available {
		t.Skip("this CPU or platform does not fold")
	}
	r := rand.New(rand.NewPCG(3, 4))
	buf := make([]byte, 1<<20+64)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	check := func(n, align int) {
		p := buf[align : align+n]
		seed := r.Uint32()
		if got, want := update(seed, p), raw(seed, p); got != want {
			t.Fatalf("len %d align %d seed %#x: %#08x, want %#08x", n, align, seed, got, want)
		}
	}
	for n := 0; n <= 3072; n++ {
		check(n, n%64)
	}
	for range 300 {
		check(r.IntN(1<<20), r.IntN(64))
	}
	// Runs of zeros and of ones exercise the products' extremes.
	for _, v := range []byte{0, 0xFF} {
		z := make([]byte, 4096)
		for i := range z {
			z[i] = v
		}
		for _, seed := range []uint32{0, 100007, 0xFFFFFFFF} {
			if got, want := update(seed, z), raw(seed, z); got != want {
				t.Fatalf("%#x×4096 seed %#x: %#08x, want %#08x", v, seed, got, want)
			}
		}
	}
}

func FuzzPrefix(f *testing.F) {
	f.Add(uint32(100007), make([]byte, 300))
	f.Add(uint32(0), make([]byte, 4100))
	f.Fuzz(func(t *testing.T, seed uint32, p []byte) {
		if got, want := update(seed, p), raw(seed, p); got != want {
			t.Fatalf("len %d seed %#x: %#08x, want %#08x", len(p), seed, got, want)
		}
	})
}

// BenchmarkFold compares folding with hash/crc32 alone (its peer) at
// block-sized inputs.
func BenchmarkFold(b *testing.B) {
	for _, n := range []int{256, 512, 1536, 4096, 65536} {
		buf := make([]byte, n)
		b.Run(fmt.Sprintf("fold/%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				update(1, buf)
			}
		})
		b.Run(fmt.Sprintf("hash-crc32/%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				raw(1, buf)
			}
		})
	}
}
