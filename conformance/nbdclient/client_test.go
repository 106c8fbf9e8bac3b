package nbdclient

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/frontends/nbd"
)

// serverHello is what a fixed-newstyle server sends first, followed by its
// answers to the client's options: NBD_REP_ACK to NBD_OPT_STRUCTURED_REPLY,
// the base:allocation context and NBD_REP_ACK to NBD_OPT_SET_META_CONTEXT,
// and NBD_REP_INFO (export, 1 MiB) and NBD_REP_ACK to NBD_OPT_GO.
func serverHello() []byte {
	b := binary.BigEndian.AppendUint64(nil, magicNBD)
	b = binary.BigEndian.AppendUint64(b, magicOpt)
	b = binary.BigEndian.AppendUint16(b, flagFixed|flagNoZeroes)
	rep := func(opt, typ uint32, data []byte) {
		b = binary.BigEndian.AppendUint64(b, magicOptReply)
		b = binary.BigEndian.AppendUint32(b, opt)
		b = binary.BigEndian.AppendUint32(b, typ)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		b = append(b, data...)
	}
	rep(optStructured, repAck, nil)
	rep(optSetMetaCtx, repMetaContext, append(binary.BigEndian.AppendUint32(nil, 7), metaAllocation...))
	rep(optSetMetaCtx, repAck, nil)
	info := binary.BigEndian.AppendUint16(nil, infoExport)
	info = binary.BigEndian.AppendUint64(info, 1<<20)
	info = binary.BigEndian.AppendUint16(info, 1)
	rep(optGo, repInfo, info)
	rep(optGo, repAck, nil)
	return b
}

// FuzzHandshake feeds arbitrary server bytes to the negotiation: it must
// fail cleanly or produce a client, never panic or hang.
func FuzzHandshake(f *testing.F) {
	f.Add(serverHello())
	f.Add(serverHello()[:18])
	f.Add([]byte("NBDMAGIC"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cli, srv := net.Pipe()
		go func() {
			io.Copy(io.Discard, srv)
		}()
		go func() {
			srv.Write(data)
			srv.Close()
		}()
		cli.SetDeadline(time.Now().Add(5 * time.Second))
		c, err := newClient(cli, "")
		if err == nil && c.Size() < 0 {
			t.Errorf("negative size %d", c.Size())
		}
		cli.Close()
	})
}

// The client reads, writes, trims, zeroes and flushes through frontends/nbd.
func TestAgainstServer(t *testing.T) {
	dir := t.TempDir()
	f, err := psync.New(core.EngineConfig{}).Open(filepath.Join(dir, "disk"), core.OpenOptions{Flag: 0o102, Perm: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.(interface{ Truncate(int64) error }).Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	srv, err := nbd.NewServer([]nbd.Export{{File: f}}, nbd.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	defer func() { srv.Close(); <-done }()
	c, err := Dial(context.Background(), "unix", sock, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Size() != 1<<20 {
		t.Fatalf("size %d", c.Size())
	}
	data := bytes.Repeat([]byte{0x5a}, 8192)
	if _, err := c.WriteAt(data, 4096); err != nil {
		t.Fatal(err)
	}
	// TRIM is advisory in NBD: the content of a trimmed range of a file
	// without core.Discarder is not checked.
	if err := c.Discard(12288, 4096); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteZeroes(8192+512, 512); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 8192)
	if _, err := c.ReadAt(got, 4096); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(data)
	clear(want[4096+512 : 4096+1024])
	if !bytes.Equal(got, want) {
		t.Errorf("read back differs: first bytes %x, at 4096+512: %x, at 4096+1024: %x", got[:4], got[4096+512:4096+516], got[4096+1024:4096+1028])
	}
	// Reads across the end return what exists and io.EOF.
	if n, err := c.ReadAt(make([]byte, 1024), 1<<20-512); n != 512 || err != io.EOF {
		t.Errorf("read across the end: %d, %v", n, err)
	}
	// Errors of the server are errors of the client.
	if _, err := c.WriteAt(data, 1<<20); !errors.Is(err, ErrNBD) {
		t.Errorf("write past the end: %v", err)
	}
}

// fakeServer answers the handshake with serverHello and then hands the
// transmission phase to serve; it stops when the test ends.
func fakeServer(t *testing.T, serve func(conn net.Conn)) *Client {
	t.Helper()
	cli, srv := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer srv.Close()
		// Write the hello while reading the client's options: net.Pipe
		// has no buffer, and the client writes its options before it
		// reads the replies to them.
		hello := serverHello()
		go srv.Write(hello)
		var flags [4]byte
		if _, err := io.ReadFull(srv, flags[:]); err != nil {
			return
		}
		for range 3 { // STRUCTURED_REPLY, SET_META_CONTEXT, GO
			var h [16]byte
			if _, err := io.ReadFull(srv, h[:]); err != nil {
				return
			}
			if _, err := io.CopyN(io.Discard, srv, int64(binary.BigEndian.Uint32(h[12:]))); err != nil {
				return
			}
		}
		serve(srv)
	}()
	t.Cleanup(func() { cli.Close(); <-done })
	cli.SetDeadline(time.Now().Add(10 * time.Second))
	c, err := newClient(cli, "")
	if err != nil {
		t.Fatal(err)
	}
	c.start()
	return c
}

type testRequest struct {
	typ    uint16
	handle uint64
	off    uint64
	length uint32
}

func readRequest(t *testing.T, r io.Reader) testRequest {
	var h [28]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		t.Errorf("read request: %v", err)
		return testRequest{}
	}
	q := testRequest{typ: binary.BigEndian.Uint16(h[6:]), handle: binary.BigEndian.Uint64(h[8:]),
		off: binary.BigEndian.Uint64(h[16:]), length: binary.BigEndian.Uint32(h[24:])}
	if q.typ == cmdWrite {
		io.CopyN(io.Discard, r, int64(q.length))
	}
	return q
}

func chunk(flags, typ uint16, handle uint64, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, magicStructured)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

func pattern(off uint64, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte((off+uint64(i))*7 + 1)
	}
	return p
}

// Three reads in flight at once are answered newest first; the middle one
// in three chunks (data, hole, data) in reverse order. Every read gets its
// own bytes.
func TestOutOfOrderReplies(t *testing.T) {
	const n = 4096
	c := fakeServer(t, func(conn net.Conn) {
		var reqs []testRequest
		for range 3 {
			reqs = append(reqs, readRequest(t, conn))
		}
		for i := len(reqs) - 1; i >= 0; i-- {
			q := reqs[i]
			if q.typ != cmdRead || q.length != n {
				t.Errorf("request %+v, want a read of %d bytes", q, n)
				return
			}
			var out []byte
			if i == 1 {
				tail := append(binary.BigEndian.AppendUint64(nil, q.off+3072), pattern(q.off+3072, 1024)...)
				hole := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, q.off+1024), 2048)
				head := append(binary.BigEndian.AppendUint64(nil, q.off), pattern(q.off, 1024)...)
				out = append(out, chunk(0, chunkOffsetData, q.handle, tail)...)
				out = append(out, chunk(0, chunkOffsetHole, q.handle, hole)...)
				out = append(out, chunk(chunkFlagDone, chunkOffsetData, q.handle, head)...)
			} else {
				out = chunk(chunkFlagDone, chunkOffsetData, q.handle, append(binary.BigEndian.AppendUint64(nil, q.off), pattern(q.off, n)...))
			}
			conn.Write(out)
		}
	})
	var wg sync.WaitGroup
	errs := make([]error, 3)
	bufs := make([][]byte, 3)
	// The requests leave in this order: the fake server answers the last
	// one first whatever the goroutines' order.
	for i := range 3 {
		bufs[i] = bytes.Repeat([]byte{0xee}, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.ReadAt(bufs[i], int64(i)*n)
		}()
	}
	wg.Wait()
	holes := 0
	for i := range 3 {
		if errs[i] != nil {
			t.Fatalf("read %d: %v", i, errs[i])
		}
		want := pattern(uint64(i)*n, n)
		if bytes.Equal(bufs[i][1024:3072], make([]byte, 2048)) && bytes.Equal(bufs[i][:1024], want[:1024]) && bytes.Equal(bufs[i][3072:], want[3072:]) {
			holes++
			continue
		}
		if !bytes.Equal(bufs[i], want) {
			t.Errorf("read %d: wrong bytes (first %x)", i, bufs[i][:8])
		}
	}
	if holes != 1 {
		t.Errorf("%d reads got the chunked reply with a hole, want 1", holes)
	}
	st := c.Stats()
	if st.MaxInFlight != 3 || st.OutOfOrder != 2 || st.HoleChunks != 1 || st.Chunks != 5 {
		t.Errorf("stats %+v: want 3 in flight, 2 out of order, 1 hole chunk, 5 chunks", st)
	}
}

// Replies that break the protocol fail the request with ErrProtocol.
func TestProtocolViolations(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply func(q testRequest) []byte
	}{
		{"unknown handle", func(q testRequest) []byte { return chunk(chunkFlagDone, chunkNone, q.handle+100, nil) }},
		{"chunk outside the read", func(q testRequest) []byte {
			return chunk(chunkFlagDone, chunkOffsetData, q.handle, append(binary.BigEndian.AppendUint64(nil, q.off+512), make([]byte, 1024)...))
		}},
		{"read not covered", func(q testRequest) []byte {
			return chunk(chunkFlagDone, chunkOffsetData, q.handle, append(binary.BigEndian.AppendUint64(nil, q.off), make([]byte, 512)...))
		}},
		{"read answered without data", func(q testRequest) []byte { return chunk(chunkFlagDone, chunkNone, q.handle, nil) }},
		{"bad magic", func(q testRequest) []byte { return make([]byte, 20) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fakeServer(t, func(conn net.Conn) {
				q := readRequest(t, conn)
				conn.Write(tc.reply(q))
				io.Copy(io.Discard, conn)
			})
			_, err := c.ReadAt(make([]byte, 1024), 4096)
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("read: %v, want ErrProtocol", err)
			}
			// The connection is unusable afterwards.
			if _, err := c.ReadAt(make([]byte, 512), 0); err == nil {
				t.Fatal("a read after a protocol violation succeeded")
			}
		})
	}
}

// An error chunk fails its request alone; the message reaches the caller.
func TestErrorChunk(t *testing.T) {
	c := fakeServer(t, func(conn net.Conn) {
		q := readRequest(t, conn)
		msg := "no such sector"
		p := binary.BigEndian.AppendUint32(nil, 5)
		p = binary.BigEndian.AppendUint16(p, uint16(len(msg)))
		conn.Write(chunk(chunkFlagDone, chunkError, q.handle, append(p, msg...)))
		q = readRequest(t, conn)
		conn.Write(chunk(chunkFlagDone, chunkOffsetData, q.handle, append(binary.BigEndian.AppendUint64(nil, q.off), pattern(q.off, 512)...)))
		io.Copy(io.Discard, conn)
	})
	if _, err := c.ReadAt(make([]byte, 512), 0); !errors.Is(err, ErrNBD) || !strings.Contains(err.Error(), "no such sector") {
		t.Fatalf("read: %v", err)
	}
	p := make([]byte, 512)
	if _, err := c.ReadAt(p, 512); err != nil || !bytes.Equal(p, pattern(512, 512)) {
		t.Fatalf("read after an error reply: %v", err)
	}
}

// Through frontends/nbd over an LSMT layer: block status reports the holes
// and the data, and reads from several goroutines are in flight together.
func TestBlockStatusAndPipeliningAgainstServer(t *testing.T) {
	dir := t.TempDir()
	eng := psync.New(core.EngineConfig{})
	open := func(name string) core.File {
		f, err := eng.Open(filepath.Join(dir, name), core.OpenOptions{Flag: os.O_RDWR | os.O_CREATE, Perm: 0o644})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	w, err := lsmt.Create(open("data"), open("index"), lsmt.CreateOptions{VirtualSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	srv, err := nbd.NewServer([]nbd.Export{{File: w}}, nbd.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	defer func() { srv.Close(); <-done }()
	c, err := Dial(context.Background(), "unix", sock, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.Structured() {
		t.Fatal("structured replies not negotiated")
	}
	if _, err := c.WriteAt(pattern(0, 64<<10), 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := c.Discard(1<<20+16<<10, 8<<10); err != nil {
		t.Fatal(err)
	}
	ext, err := c.BlockStatus(0, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	const hz = core.ExtentHole | core.ExtentZero
	x := func(off, n int64, fl core.ExtentFlags) core.Extent {
		return core.Extent{Offset: off, Length: n, Flags: fl}
	}
	want := []core.Extent{x(0, 1<<20, hz), x(1<<20, 16<<10, 0), x(1<<20+16<<10, 8<<10, hz),
		x(1<<20+24<<10, 40<<10, 0), x(1<<20+64<<10, 3<<20-64<<10, hz)}
	if len(ext) != len(want) {
		t.Fatalf("extents %+v, want %+v", ext, want)
	}
	for i := range want {
		if ext[i] != want[i] {
			t.Errorf("extent %d: %+v, want %+v", i, ext[i], want[i])
		}
	}
	if _, err := c.BlockStatus(4<<20-512, 1024); !errors.Is(err, core.ErrOutOfRange) {
		t.Errorf("block status past the end: %v", err)
	}
	// Eight goroutines read at once over the one connection.
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				off := int64(1<<20 + (g*20+i)%64*1024)
				p := make([]byte, 1024)
				if _, err := c.ReadAt(p, off); err != nil {
					t.Error(err)
					return
				}
				want := pattern(uint64(off-1<<20), 1024)
				if off >= 1<<20+16<<10 && off < 1<<20+24<<10 {
					want = make([]byte, 1024)
				}
				if !bytes.Equal(p, want) {
					t.Errorf("read at %d differs", off)
					return
				}
			}
		}()
	}
	wg.Wait()
	if st := c.Stats(); st.MaxInFlight < 2 || st.BlockStatus != 1 {
		t.Errorf("stats %+v: want several requests in flight and one block status", st)
	} else {
		t.Logf("client stats %+v", st)
	}
}
