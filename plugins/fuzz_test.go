package plugins

import (
	"bytes"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/plugins/internal/wire"
)

// fuzzLane is a fixed batch of two blocks on a small lane.
func fuzzLane() (wire.Header, []wire.Desc, []byte) {
	mem := make([]byte, 4096)
	for i := range mem {
		mem[i] = byte(i * 13)
	}
	descs := []wire.Desc{{SrcOff: 0, SrcLen: 100, DstOff: 128, DstCap: 1000}, {SrcOff: 1152, SrcLen: 50, DstOff: 1216, DstCap: 500}}
	return wire.Header{Op: wire.OpDecompress, Codec: 2, Seq: 42, Count: 2}, descs, mem
}

func validReply(h wire.Header, descs []wire.Desc, mem []byte, n []uint32, status []uint32) []byte {
	b := wire.AppendHeader(nil, h)
	for i, d := range descs {
		out := mem[d.DstOff : d.DstOff+n[i]]
		b = wire.AppendResult(b, wire.Result{Status: status[i], N: n[i], Sum: wire.Sum(h.Seq, uint32(i), status[i], out)})
	}
	return b
}

// FuzzCollect feeds arbitrary replies to the host's reply check: it never
// panics, and whatever it accepts is exactly what the checksums cover.
func FuzzCollect(f *testing.F) {
	h, descs, mem := fuzzLane()
	ok := validReply(h, descs, mem, []uint32{1000, 77}, []uint32{wire.StatusOK, wire.StatusOK})
	f.Add(ok)
	f.Add(validReply(h, descs, mem, []uint32{0, 0}, []uint32{wire.StatusCorrupt, wire.StatusFailed}))
	f.Add(ok[:len(ok)-1])
	f.Add(append(bytes.Clone(ok), 0))
	bad := bytes.Clone(ok)
	bad[wire.HeaderSize+4]++ // length 1001 > capacity
	f.Add(bad)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, reply []byte) {
		blocks := []core.CodecBlock{{Dst: make([]byte, 1000)}, {Dst: make([]byte, 500)}}
		err := collect(reply, h, descs, mem, blocks)
		if err != nil {
			return
		}
		for i, b := range blocks {
			r := wire.ParseResult(reply, i)
			if b.Err != nil {
				if b.N != 0 {
					t.Fatalf("block %d: error with %d bytes", i, b.N)
				}
				continue
			}
			d := descs[i]
			if b.N != int(r.N) || b.N > len(b.Dst) || !bytes.Equal(b.Dst[:b.N], mem[d.DstOff:d.DstOff+r.N]) {
				t.Fatalf("block %d: accepted %d bytes that differ from the lane", i, b.N)
			}
			if wire.Sum(h.Seq, uint32(i), r.Status, b.Dst[:b.N]) != r.Sum {
				t.Fatalf("block %d: accepted with a wrong checksum", i)
			}
		}
	})
}
