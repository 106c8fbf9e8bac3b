// Package codectest checks that a core.Codec behaves as ZFile needs: round
// trips for every size a ZFile block can have, bounded output, and errors
// wrapping core.ErrCorrupt (never a panic, never extra bytes) on bad input.
// Every codec flavour's tests run it.
package codectest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

// Inputs returns the test inputs: empty, one byte, patterned, zero,
// incompressible and text-like data at block-size edges.
func Inputs() map[string][]byte {
	r := rand.New(rand.NewPCG(7, 11))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	pattern := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte((uint32(i) * 2654435761) >> 24)
		}
		return b
	}
	out := map[string][]byte{
		"empty":   {},
		"one":     {42},
		"text":    bytes.Repeat([]byte("overlaybd zfile test vector line 00000001\n"), 200),
		"zeros4k": make([]byte, 4096),
	}
	for _, n := range []int{4095, 4096, 4097, 32768, 65536} {
		out["random"+itoa(n)] = random(n)
		out["pattern"+itoa(n)] = pattern(n)
	}
	out["zeros64k"] = make([]byte, 65536)
	return out
}

func itoa(n int) string {
	const digits = "0123456789"
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{digits[n%10]}, b...)
	}
	return string(b)
}

// RoundTrip compresses and decompresses every input with c.
func RoundTrip(t *testing.T, c core.Codec) {
	t.Helper()
	for name, in := range Inputs() {
		if len(in) == 0 {
			continue // ZFile never compresses an empty block
		}
		comp := make([]byte, c.CompressBound(len(in)))
		n, err := c.Compress(comp, in)
		if err != nil {
			t.Fatalf("%s: compress %s: %v", c.Name(), name, err)
		}
		if n <= 0 || n > len(comp) {
			t.Fatalf("%s: compress %s: length %d of %d", c.Name(), name, n, len(comp))
		}
		out := make([]byte, len(in))
		m, err := c.Decompress(out, comp[:n])
		if err != nil {
			t.Fatalf("%s: decompress %s: %v", c.Name(), name, err)
		}
		if m != len(in) || !bytes.Equal(out, in) {
			t.Fatalf("%s: %s: round trip gave %d bytes, different content", c.Name(), name, m)
		}
		// Neither direction may touch bytes beyond len(dst), even when the
		// slice's capacity extends further: neighbouring blocks of one
		// buffer are decoded concurrently.
		guarded := bytes.Repeat([]byte{0xEE}, 2*len(in)+c.CompressBound(len(in))+64)
		if m, err := c.Decompress(guarded[:len(in)], comp[:n]); err != nil || m != len(in) {
			t.Fatalf("%s: %s: decompress into a window: %d, %v", c.Name(), name, m, err)
		}
		if bytes.Count(guarded[len(in):], []byte{0xEE}) != len(guarded)-len(in) {
			t.Fatalf("%s: %s: decompress wrote beyond len(dst)", c.Name(), name)
		}
		bound := c.CompressBound(len(in))
		for i := range guarded {
			guarded[i] = 0xEE
		}
		if _, err := c.Compress(guarded[:bound], in); err != nil {
			t.Fatalf("%s: %s: compress into a window: %v", c.Name(), name, err)
		}
		if bytes.Count(guarded[bound:], []byte{0xEE}) != len(guarded)-bound {
			t.Fatalf("%s: %s: compress wrote beyond len(dst)", c.Name(), name)
		}
		// A destination one byte too small must be refused, not overrun.
		if len(in) > 1 {
			small := make([]byte, len(in)-1)
			if _, err := c.Decompress(small, comp[:n]); !errors.Is(err, core.ErrCorrupt) {
				t.Fatalf("%s: %s: decompress into a short buffer: err %v, want ErrCorrupt", c.Name(), name, err)
			}
		}
	}
}

// Interop checks that what a compresses, b decompresses.
func Interop(t *testing.T, a, b core.Codec) {
	t.Helper()
	for name, in := range Inputs() {
		if len(in) == 0 {
			continue
		}
		comp := make([]byte, a.CompressBound(len(in)))
		n, err := a.Compress(comp, in)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]byte, len(in))
		m, err := b.Decompress(out, comp[:n])
		if err != nil || m != len(in) || !bytes.Equal(out, in) {
			t.Fatalf("%s: compressed by one flavour, the other gave %d bytes, err %v", name, m, err)
		}
	}
}

// Corrupt feeds damaged compressed blocks to c: every result is either an
// error wrapping core.ErrCorrupt or a length within the destination.
func Corrupt(t *testing.T, c core.Codec) {
	t.Helper()
	r := rand.New(rand.NewPCG(3, 5))
	in := Inputs()["pattern32768"]
	comp := make([]byte, c.CompressBound(len(in)))
	n, err := c.Compress(comp, in)
	if err != nil {
		t.Fatal(err)
	}
	comp = comp[:n]
	dst := make([]byte, len(in))
	check := func(src []byte) {
		m, err := c.Decompress(dst, src)
		if err != nil && !errors.Is(err, core.ErrCorrupt) {
			t.Fatalf("%s: error %v does not wrap ErrCorrupt", c.Name(), err)
		}
		if err == nil && (m < 0 || m > len(dst)) {
			t.Fatalf("%s: decompressed length %d outside destination of %d", c.Name(), m, len(dst))
		}
	}
	check(nil)
	check([]byte{0xff})
	for i := 0; i < 300; i++ {
		bad := bytes.Clone(comp)
		bad[r.IntN(len(bad))] ^= byte(1 + r.IntN(255))
		check(bad)
		check(comp[:r.IntN(len(comp))])
	}
}

// VectorBlocks returns the compressed payloads (CRC stripped) of the first
// blocks of the upstream ZFile vector rel, to seed fuzz targets.
func VectorBlocks(tb testing.TB, rel string, n int) [][]byte {
	tb.Helper()
	z, err := os.ReadFile(testvectors.Path(tb, rel))
	if err != nil {
		tb.Fatal(err)
	}
	// Header fields: the trailer's jump table (FORMAT-ZFILE §2, §5).
	tr := z[len(z)-512:]
	indexOff := binary.LittleEndian.Uint64(tr[40:])
	count := binary.LittleEndian.Uint64(tr[48:])
	verify := tr[88] != 0
	var out [][]byte
	off := uint64(512)
	for i := uint64(0); i < count && len(out) < n; i++ {
		l := uint64(binary.LittleEndian.Uint32(z[indexOff+4*i:]))
		p := z[off : off+l]
		if verify {
			p = p[:len(p)-4]
		}
		out = append(out, p)
		off += l
	}
	return out
}
