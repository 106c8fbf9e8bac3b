package plugins

import (
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
)

// BenchmarkRoundTrip measures the cost of one doorbell round trip: a
// one-byte lz4 block through the data plane, against the same block through
// one gRPC call.
//
//	go test -run '^$' -bench RoundTrip ./plugins/
func BenchmarkRoundTrip(b *testing.B) {
	p, err := Start(b.Context(), Config{Path: faultBin, Algorithms: []string{"lz4"}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	shm, err := p.Codec("lz4")
	if err != nil {
		b.Fatal(err)
	}
	call, err := p.CallCodec("lz4")
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		codec core.Codec
	}{{"shm", shm}, {"grpc", call}} {
		b.Run(c.name, func(b *testing.B) {
			dst := make([]byte, 16)
			for range b.N {
				if n, err := c.codec.Decompress(dst, []byte{0x10, 'x'}); err != nil || n != 1 {
					b.Fatal(n, err)
				}
			}
		})
	}
}
