package wire

import (
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"reflect"
	"testing"
)

func TestSumKnownValue(t *testing.T) {
	// The checksum covers seq, index, status and length before the data:
	// changing any of them changes it.
	base := Sum(1, 2, StatusOK, []byte("123456789"))
	for _, other := range []uint32{Sum(2, 2, StatusOK, []byte("123456789")), Sum(1, 3, StatusOK, []byte("123456789")),
		Sum(1, 2, StatusCorrupt, []byte("123456789")), Sum(1, 2, StatusOK, []byte("12345678")), Sum(1, 2, StatusOK, []byte("123456780"))} {
		if other == base {
			t.Fatal("checksum does not cover every field")
		}
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	h := Header{Op: OpCompress, Codec: 2, Seq: 1<<40 + 5, Count: 64}
	b := AppendHeader(nil, h)
	if len(b) != HeaderSize {
		t.Fatalf("header of %d bytes", len(b))
	}
	got, err := ParseHeader(b)
	if err != nil || got != h {
		t.Fatalf("%+v, %v", got, err)
	}
	b[0]++
	if _, err := ParseHeader(b); err == nil {
		t.Fatal("bad magic accepted")
	}
}

func FuzzParseDataPlane(f *testing.F) {
	f.Add("memfd=3,lane=9437184,socks=4:5:6:7")
	f.Add("memfd=3,lane=0,socks=4")
	f.Add("memfd=3,memfd=3,lane=1,socks=4")
	f.Add("socks=,lane=1,memfd=3")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDataPlane(s)
		if err != nil {
			return
		}
		again, err := ParseDataPlane(d.String())
		if err != nil || !reflect.DeepEqual(again, d) {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, d, d.String(), again, err)
		}
	})
}

// TestSumIsStandardCRC32C checks Sum against hash/crc32's Castagnoli CRC of
// the same bytes, at sizes on both sides of the folding threshold.
func TestSumIsStandardCRC32C(t *testing.T) {
	tab := crc32.MakeTable(crc32.Castagnoli)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 15, 64, 255, 256, 1000, 1024, 4095, 4096, 4097, 65535, 65536, 1 << 20} {
		out := make([]byte, n)
		for i := range out {
			out[i] = byte(rng.Uint32())
		}
		var h [20]byte
		binary.LittleEndian.PutUint64(h[:], 77)
		binary.LittleEndian.PutUint32(h[8:], 3)
		binary.LittleEndian.PutUint32(h[12:], StatusOK)
		binary.LittleEndian.PutUint32(h[16:], uint32(n))
		want := crc32.Update(crc32.Checksum(h[:], tab), tab, out)
		if got := Sum(77, 3, StatusOK, out); got != want {
			t.Fatalf("%d bytes: Sum %#x, CRC-32C %#x", n, got, want)
		}
	}
}
