package crc32c

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
)

func flavours(t testing.TB) map[string]core.Checksum {
	out := map[string]core.Checksum{}
	for _, name := range core.Checksums.Names() {
		f, err := core.Checksums.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = f()
	}
	return out
}

// TestCheckValues uses the values of FORMAT-ZFILE §4.1, which differ from
// the standard CRC-32C check value 0xE3069283.
func TestCheckValues(t *testing.T) {
	for name, c := range flavours(t) {
		for _, tc := range []struct {
			seed uint32
			in   string
			want uint32
		}{
			{0, "123456789", 0x58E3FA20},
			{BlockSeed, "123456789", 0x3C9BD4E0},
			{0, "", 0},
			{BlockSeed, "", 0x000186A7},
			{0, string(make([]byte, 4096)), 0},
		} {
			if got := c.Update(tc.seed, []byte(tc.in)); got != tc.want {
				t.Errorf("%s: raw(%d, %.12q) = %#08x, want %#08x", name, tc.seed, tc.in, got, tc.want)
			}
		}
	}
}

// TestFlavoursAgree compares every registered flavour with the pure Go one on
// random lengths, seeds and chunkings.
func TestFlavoursAgree(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	fl := flavours(t)
	for i := 0; i < 200; i++ {
		n := r.IntN(len(buf))
		if i%3 == 0 {
			n = r.IntN(300)
		}
		seed := r.Uint32()
		p := buf[:n]
		want := Update(seed, p)
		for name, c := range fl {
			if got := c.Update(seed, p); got != want {
				t.Fatalf("%s: len %d seed %#x: %#08x, want %#08x", name, n, seed, got, want)
			}
			cut := r.IntN(n + 1)
			if got := c.Update(c.Update(seed, p[:cut]), p[cut:]); got != want {
				t.Fatalf("%s: chunked at %d of %d: %#08x, want %#08x", name, cut, n, got, want)
			}
		}
	}
}

func BenchmarkChecksum(b *testing.B) {
	for _, size := range []int{256, 512, 1024, 1536, 2048, 3072, 4096, 65536, 1 << 20} {
		buf := make([]byte, size)
		for i := range buf {
			buf[i] = byte(i * 7)
		}
		for name, c := range flavours(b) {
			if name == Name {
				continue // an alias of one of the named flavours
			}
			b.Run(name+"/"+sizeName(size), func(b *testing.B) {
				b.SetBytes(int64(size))
				for b.Loop() {
					c.Update(BlockSeed, buf)
				}
			})
		}
	}
}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	if n%1024 != 0 {
		return fmt.Sprintf("%dB", n)
	}
	return fmt.Sprintf("%dKiB", n>>10)
}
