package pluginserver

import (
	"bytes"
	"io"
	"log/slog"
	"testing"

	"github.com/overlaybd-go/overlaybd/codecs/lz4"
	"github.com/overlaybd-go/overlaybd/plugins/internal/wire"
)

func testServer() *server {
	c := lz4.Go()
	sv := &served{codec: c, name: c.Name()}
	s := &server{opts: Options{MaxBlock: 64 << 10}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	s.byID[1] = sv
	s.list = append(s.list, sv)
	return s
}

func TestBatch(t *testing.T) {
	s := testServer()
	lane := make([]byte, 1<<16)
	in := bytes.Repeat([]byte("overlaybd "), 300)
	copy(lane, in)
	msg := wire.AppendHeader(nil, wire.Header{Op: wire.OpCompress, Codec: 1, Seq: 9, Count: 3})
	msg = wire.AppendDesc(msg, wire.Desc{SrcOff: 0, SrcLen: uint32(len(in)), DstOff: 4096, DstCap: 4096})
	msg = wire.AppendDesc(msg, wire.Desc{SrcOff: 0, SrcLen: 10, DstOff: 1 << 16, DstCap: 1}) // outside the lane
	msg = wire.AppendDesc(msg, wire.Desc{SrcOff: 0, SrcLen: uint32(len(in)), DstOff: 8192, DstCap: 1})
	reply := s.batch(msg, nil, lane)
	if len(reply) != wire.HeaderSize+3*wire.ResultSize {
		t.Fatalf("reply of %d bytes", len(reply))
	}
	r0 := wire.ParseResult(reply, 0)
	if r0.Status != wire.StatusOK || r0.N == 0 || wire.Sum(9, 0, wire.StatusOK, lane[4096:4096+r0.N]) != r0.Sum {
		t.Fatalf("block 0: %+v", r0)
	}
	out := make([]byte, len(in))
	if n, err := lz4.Go().Decompress(out, lane[4096:4096+r0.N]); err != nil || !bytes.Equal(out[:n], in) {
		t.Fatalf("compressed block does not decode: %v", err)
	}
	if r := wire.ParseResult(reply, 1); r.Status != wire.StatusBadRequest {
		t.Fatalf("block outside the lane: %+v", r)
	}
	if r := wire.ParseResult(reply, 2); r.Status == wire.StatusOK {
		t.Fatalf("block into a 1-byte destination: %+v", r)
	}
}

// FuzzBatch feeds arbitrary doorbell messages to the plugin's server: it
// never panics and always answers with a well-formed reply.
func FuzzBatch(f *testing.F) {
	msg := wire.AppendHeader(nil, wire.Header{Op: wire.OpDecompress, Codec: 1, Seq: 1, Count: 1})
	f.Add(wire.AppendDesc(msg, wire.Desc{SrcOff: 0, SrcLen: 64, DstOff: 1024, DstCap: 4096}))
	f.Add(wire.AppendDesc(msg, wire.Desc{SrcOff: 0xffffffff, SrcLen: 0xffffffff, DstOff: 0xffffffff, DstCap: 0xffffffff}))
	f.Add(msg)
	f.Add([]byte("OBDP"))
	s := testServer()
	lane := make([]byte, 1<<14)
	for i := range lane {
		lane[i] = byte(i)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		reply := s.batch(msg, nil, bytes.Clone(lane))
		h, err := wire.ParseHeader(reply)
		if err != nil {
			t.Fatalf("malformed reply: %v", err)
		}
		if len(reply) != wire.HeaderSize+int(h.Count)*wire.ResultSize {
			t.Fatalf("reply of %d bytes for count %d", len(reply), h.Count)
		}
	})
}
