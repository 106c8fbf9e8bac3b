package nbd

import (
	"encoding/binary"
	"io"
	"math/rand/v2"
	"testing"
)

// BenchmarkRead4KDepth16 measures 4 KiB random reads through the server
// over a unix socket, 16 requests in flight, with structured replies; the
// peer is BenchmarkRead4KDirect, the same reads straight from the file.
func BenchmarkRead4KDepth16(b *testing.B) {
	f, _ := newFile(b, 64<<20, true)
	_, sock := startServer(b, []Export{{File: f, ReadOnly: true}}, Options{})
	rc := dialRaw(b, sock)
	rc.goExport("", true)
	rng := rand.New(rand.NewPCG(1, 1))
	const depth = 16
	var h [20]byte
	buf := make([]byte, 8+4096)
	b.SetBytes(4096)
	b.ResetTimer()
	sent, got := 0, 0
	for got < b.N {
		for sent < b.N && sent-got < depth {
			rc.request(0, cmdRead, uint64(sent), uint64(rng.IntN(16384))*4096, 4096, nil)
			sent++
		}
		if _, err := io.ReadFull(rc.c, h[:]); err != nil {
			b.Fatal(err)
		}
		n := binary.BigEndian.Uint32(h[16:])
		if _, err := io.ReadFull(rc.c, buf[:n]); err != nil {
			b.Fatal(err)
		}
		got++
	}
}

// BenchmarkRead4KDirect is the peer of BenchmarkRead4KDepth16: the same
// reads with pread on the calling goroutine.
func BenchmarkRead4KDirect(b *testing.B) {
	f, _ := newFile(b, 64<<20, true)
	rng := rand.New(rand.NewPCG(1, 1))
	buf := make([]byte, 4096)
	b.SetBytes(4096)
	b.ResetTimer()
	for range b.N {
		if _, err := f.ReadAt(buf, int64(rng.IntN(16384))*4096); err != nil {
			b.Fatal(err)
		}
	}
}
