package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/engines/psync"
)

func TestNegotiation(t *testing.T) {
	f, _ := newFile(t, 1<<20, true)
	ro, _ := newFile(t, 3<<20, false)
	_, sock := startServer(t, []Export{
		{Name: "", File: f, Description: "default disk"},
		{Name: "ro", File: ro, ReadOnly: true},
	}, Options{})

	t.Run("list", func(t *testing.T) {
		rc := dialRaw(t, sock)
		rc.clientFlags(flagCFixedNewstyle)
		rc.option(optList, nil)
		var names []string
		for {
			r := rc.optReply()
			if r.typ == repAck {
				break
			}
			if r.typ != repServer {
				t.Fatalf("reply %#x", r.typ)
			}
			n := binary.BigEndian.Uint32(r.data)
			names = append(names, string(r.data[4:4+n]))
		}
		if len(names) != 2 || names[0] != "" || names[1] != "ro" {
			t.Fatalf("exports %q", names)
		}
		rc.option(optList, []byte{1})
		if r := rc.optReply(); r.typ != repErrInvalid {
			t.Fatalf("LIST with data: %#x", r.typ)
		}
		rc.option(optAbort, nil)
		if r := rc.optReply(); r.typ != repAck {
			t.Fatalf("ABORT: %#x", r.typ)
		}
		if !rc.closedByPeer() {
			t.Fatal("connection open after ABORT")
		}
	})

	t.Run("errors", func(t *testing.T) {
		rc := dialRaw(t, sock)
		rc.clientFlags(flagCFixedNewstyle | flagCNoZeroes)
		for _, tc := range []struct {
			name string
			opt  uint32
			data []byte
			want uint32
		}{
			{"unknown option", 99, []byte("xyz"), repErrUnsup},
			{"starttls", optStartTLS, nil, repErrPolicy},
			{"extended headers", optExtendedHeader, nil, repErrUnsup},
			{"info of unknown export", optInfo, infoData("nope"), repErrUnknown},
			{"go of unknown export", optGo, infoData("nope"), repErrUnknown},
			{"info short", optInfo, []byte{0, 0, 0, 9, 'a'}, repErrInvalid},
			{"info count mismatch", optInfo, append(infoData(""), 0), repErrInvalid},
			{"meta before structured", optSetMetaCtx, metaData("", "base:allocation"), repErrInvalid},
			{"structured with data", optStructured, []byte{0}, repErrInvalid},
		} {
			rc.option(tc.opt, tc.data)
			if r := rc.optReply(); r.typ != tc.want || r.opt != tc.opt {
				t.Errorf("%s: reply opt %d type %#x, want %#x", tc.name, r.opt, r.typ, tc.want)
			}
		}
		// Oversized option data is skipped and refused.
		rc.option(optInfo, make([]byte, maxOptionLen+1))
		if r := rc.optReply(); r.typ != repErrTooBig {
			t.Fatalf("oversized option: %#x", r.typ)
		}
		rc.option(optStructured, nil)
		if r := rc.optReply(); r.typ != repAck {
			t.Fatalf("structured: %#x", r.typ)
		}
		for _, bad := range [][]byte{
			{0, 0, 0, 0, 0, 0, 0, 1},                              // count 1, no query
			append(metaData("", "base:allocation"), 'x'),          // trailing byte
			{0, 0, 0, 5, 'a'},                                     // name overruns
			{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 'a'}, // huge count
		} {
			rc.option(optListMetaCtx, bad)
			if r := rc.optReply(); r.typ != repErrInvalid {
				t.Errorf("meta request %x: %#x", bad, r.typ)
			}
		}
		rc.option(optListMetaCtx, metaData("ro"))
		if r := rc.optReply(); r.typ != repMetaContext || string(r.data[4:]) != metaContextAllocation {
			t.Fatalf("list meta: %#x %q", r.typ, r.data)
		}
		if r := rc.optReply(); r.typ != repAck {
			t.Fatalf("list meta ack: %#x", r.typ)
		}
		rc.option(optSetMetaCtx, metaData("", "x-other:thing"))
		if r := rc.optReply(); r.typ != repAck {
			t.Fatalf("set unknown meta: %#x", r.typ)
		}
		// INFO leaves the connection in negotiation; GO ends it.
		rc.option(optInfo, infoData("", infoName, infoDescription, infoBlockSize))
		got := map[uint16][]byte{}
		for {
			r := rc.optReply()
			if r.typ == repAck {
				break
			}
			got[binary.BigEndian.Uint16(r.data)] = r.data[2:]
		}
		if size := binary.BigEndian.Uint64(got[infoExport]); size != 1<<20 {
			t.Errorf("size %d", size)
		}
		if string(got[infoDescription]) != "default disk" {
			t.Errorf("description %q", got[infoDescription])
		}
		if bs := got[infoBlockSize]; len(bs) != 12 || binary.BigEndian.Uint32(bs[8:]) != DefaultMaxRequest {
			t.Errorf("block size %x", bs)
		}
		_, flags := rc.goExport("ro", false)
		if flags&flagReadOnly == 0 || flags&flagCanMultiConn == 0 || flags&flagSendTrim != 0 {
			t.Errorf("ro flags %#x", flags)
		}
	})

	t.Run("bad client flags", func(t *testing.T) {
		rc := dialRaw(t, sock)
		rc.clientFlags(1 << 7)
		if !rc.closedByPeer() {
			t.Fatal("server kept a connection with unknown client flags")
		}
	})

	t.Run("bad option magic", func(t *testing.T) {
		rc := dialRaw(t, sock)
		rc.clientFlags(flagCFixedNewstyle)
		rc.write(make([]byte, 16))
		if !rc.closedByPeer() {
			t.Fatal("server kept a connection with a bad option magic")
		}
	})

	t.Run("export name", func(t *testing.T) {
		rc := dialRaw(t, sock)
		rc.clientFlags(flagCFixedNewstyle)
		rc.option(optExportName, []byte("ro"))
		var b [10 + 124]byte
		rc.readFull(b[:])
		if binary.BigEndian.Uint64(b[:]) != 3<<20 || !bytes.Equal(b[10:], make([]byte, 124)) {
			t.Fatalf("export name reply %x", b[:10])
		}
		rc.request(0, cmdRead, 7, 4096, 512, nil)
		errno, h, data := rc.simpleReply(512)
		if errno != 0 || h != 7 || !bytes.Equal(data, make([]byte, 512)) {
			t.Fatalf("read: errno %d handle %d", errno, h)
		}
		rc.request(0, cmdDisc, 8, 0, 0, nil)
		if !rc.closedByPeer() {
			t.Fatal("connection open after DISC")
		}
	})

	t.Run("unknown export name", func(t *testing.T) {
		rc := dialRaw(t, sock)
		rc.clientFlags(flagCFixedNewstyle | flagCNoZeroes)
		rc.option(optExportName, []byte("nope"))
		if !rc.closedByPeer() {
			t.Fatal("connection open after EXPORT_NAME of an unknown export")
		}
	})
}

func TestBadRequests(t *testing.T) {
	f, _ := newFile(t, 1<<20, true)
	ro, _ := newFile(t, 1<<20, true)
	_, sock := startServer(t, []Export{
		{Name: "rw", File: sparseFile{f}},
		{Name: "ro", File: ro, ReadOnly: true},
		{Name: "aligned", File: strictFile{f}, Alignment: 512},
	}, Options{MaxRequest: 1 << 20})
	want := fileBytes(t, f)

	for _, structured := range []bool{false, true} {
		rc := dialRaw(t, sock)
		rc.goExport("rw", structured)
		reply := func() uint32 {
			if structured {
				ch := rc.chunk()
				if ch.flags&replyFlagDone == 0 {
					t.Fatalf("chunk without DONE")
				}
				return ch.errno()
			}
			errno, _, _ := rc.simpleReply(0)
			return errno
		}
		for _, tc := range []struct {
			name        string
			flags, typ  uint16
			off         uint64
			length      uint32
			payload     []byte
			wantErrno   uint32
			wantPayload bool
		}{
			{"read past end", 0, cmdRead, 1<<20 - 512, 1024, nil, errnoInval, false},
			{"read offset overflow", 0, cmdRead, ^uint64(0) - 10, 512, nil, errnoInval, false},
			{"read too large", 0, cmdRead, 0, 2 << 20, nil, errnoOverflow, false},
			{"write past end", 0, cmdWrite, 1 << 20, 512, make([]byte, 512), errnoNoSpc, false},
			{"write too large", 0, cmdWrite, 0, 1<<20 + 1, make([]byte, 1<<20+1), errnoOverflow, false},
			{"trim past end", 0, cmdTrim, 1<<20 - 512, 4096, nil, errnoNoSpc, false},
			{"unknown command", 0, 42, 0, 0, nil, errnoInval, false},
			{"unknown flag", 1 << 9, cmdRead, 0, 512, nil, errnoInval, false},
			{"FUA on read", cmdFlagFUA, cmdRead, 0, 512, nil, errnoInval, false},
			{"block status past end", 0, cmdBlockStatus, 1 << 20, 512, nil, errnoInval, false},
		} {
			if !structured && tc.typ == cmdBlockStatus {
				continue
			}
			rc.request(tc.flags, tc.typ, 1, tc.off, tc.length, tc.payload)
			if got := reply(); got != tc.wantErrno {
				t.Errorf("structured=%v %s: errno %d, want %d", structured, tc.name, got, tc.wantErrno)
			}
		}
		// The connection still works after all of that.
		rc.request(0, cmdRead, 2, 4096, 4096, nil)
		if structured {
			ch := rc.chunk()
			if ch.typ != replyTypeOffsetData || !bytes.Equal(ch.payload[8:], want[4096:8192]) {
				t.Fatalf("read after errors: type %d", ch.typ)
			}
		} else {
			errno, _, data := rc.simpleReply(4096)
			if errno != 0 || !bytes.Equal(data, want[4096:8192]) {
				t.Fatalf("read after errors: errno %d", errno)
			}
		}
	}

	// Block status without a negotiated context.
	rc := dialRaw(t, sock)
	rc.clientFlags(flagCFixedNewstyle | flagCNoZeroes)
	rc.option(optStructured, nil)
	rc.optReply()
	rc.goExport("rw", false)
	rc.request(0, cmdBlockStatus, 3, 0, 512, nil)
	if ch := rc.chunk(); ch.errno() != errnoInval {
		t.Fatalf("block status without context: %d", ch.errno())
	}

	// Writes to a read-only export.
	rc = dialRaw(t, sock)
	rc.goExport("ro", false)
	for _, typ := range []uint16{cmdWrite, cmdTrim, cmdWriteZeroes} {
		var p []byte
		if typ == cmdWrite {
			p = make([]byte, 512)
		}
		rc.request(0, typ, 4, 0, 512, p)
		if errno, _, _ := rc.simpleReply(0); errno != errnoPerm {
			t.Errorf("cmd %d on read-only: errno %d", typ, errno)
		}
	}

	// An unaligned read of a file that needs alignment is widened.
	rc = dialRaw(t, sock)
	rc.goExport("aligned", false)
	rc.request(0, cmdRead, 5, 100, 1000, nil)
	if errno, _, data := rc.simpleReply(1000); errno != 0 || !bytes.Equal(data, want[100:1100]) {
		t.Errorf("unaligned read: errno %d", errno)
	}

	// A bad request magic drops that connection only.
	bad := dialRaw(t, sock)
	bad.goExport("rw", false)
	bad.write(make([]byte, requestHeaderLen))
	if !bad.closedByPeer() {
		t.Fatal("connection kept after a bad request magic")
	}
	// A client that leaves in the middle of a write payload.
	gone := dialRaw(t, sock)
	gone.goExport("rw", false)
	gone.request(0, cmdWrite, 9, 0, 4096, make([]byte, 100))
	gone.c.Close()

	ok := dialRaw(t, sock)
	ok.goExport("rw", false)
	ok.request(0, cmdRead, 6, 0, 4096, nil)
	if errno, _, data := ok.simpleReply(4096); errno != 0 || !bytes.Equal(data, want[:4096]) {
		t.Fatalf("other connection after failures: errno %d", errno)
	}
	if got := fileBytes(t, f); !bytes.Equal(got, want) {
		t.Fatal("refused requests changed the export")
	}
}

// gateFile blocks reads at offset 0 until the test opens the gate, to
// prove that one connection's requests are served concurrently and replied
// to out of order.
type gateFile struct {
	core.File
	gate chan struct{}
}

func (g *gateFile) ReadAt(p []byte, off int64) (int, error) {
	if off == 0 {
		select {
		case <-g.gate:
		case <-time.After(10 * time.Second):
		}
	}
	return g.File.ReadAt(p, off)
}

func TestOutOfOrderReplies(t *testing.T) {
	f, _ := newFile(t, 1<<20, true)
	g := &gateFile{File: f, gate: make(chan struct{})}
	_, sock := startServer(t, []Export{{File: g}}, Options{})
	rc := dialRaw(t, sock)
	rc.goExport("", true)
	rc.request(0, cmdRead, 100, 0, 4096, nil)
	rc.request(0, cmdRead, 200, 65536, 4096, nil)
	// A server that served requests in order would answer 100 first,
	// after the gate's timeout.
	first := rc.chunk()
	close(g.gate)
	second := rc.chunk()
	if first.handle != 200 || second.handle != 100 {
		t.Fatalf("reply order %d, %d: want 200 then 100", first.handle, second.handle)
	}
}

// slowFile delays writes so that Shutdown finds them in flight.
type slowFile struct {
	core.File
	started chan struct{}
	syncs   chan struct{}
}

func (s *slowFile) WriteAt(p []byte, off int64) (int, error) {
	s.started <- struct{}{}
	time.Sleep(200 * time.Millisecond)
	return s.File.WriteAt(p, off)
}

func (s *slowFile) Sync() error {
	select {
	case s.syncs <- struct{}{}:
	default:
	}
	return s.File.Sync()
}

func TestShutdownFinishesInFlight(t *testing.T) {
	f, _ := newFile(t, 1<<20, false)
	sf := &slowFile{File: f, started: make(chan struct{}, 8), syncs: make(chan struct{}, 1)}
	s, sock := startServer(t, []Export{{File: sf}}, Options{})
	rc := dialRaw(t, sock)
	rc.goExport("", false)
	data := bytes.Repeat([]byte{0xAB}, 4096)
	rc.request(0, cmdWrite, 1, 8192, 4096, data)
	<-sf.started
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if errno, h, _ := rc.simpleReply(0); errno != 0 || h != 1 {
		t.Fatalf("in-flight write: errno %d handle %d", errno, h)
	}
	if !rc.closedByPeer() {
		t.Fatal("connection open after shutdown")
	}
	select {
	case <-sf.syncs:
	default:
		t.Fatal("shutdown did not sync the writable export")
	}
	got := make([]byte, 4096)
	if _, err := f.ReadAt(got, 8192); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("data after shutdown: %v", err)
	}
}

func TestWritePathsRaw(t *testing.T) {
	f, _ := newFile(t, 1<<20, true)
	srv, sock := startServer(t, []Export{{File: sparseFile{f}}}, Options{})
	defer func() {
		st := srv.Stats()
		want := map[string]uint64{"write": 1, "trim": 1, "write_zeroes": 2, "flush": 1, "cache": 1, "read": 1, "block_status": 2}
		if fmt.Sprint(st.Requests) != fmt.Sprint(want) || st.WriteBytes != 8192 || st.Connections != 1 || st.Errors != 0 {
			t.Errorf("stats %+v", st)
		}
	}()
	rc := dialRaw(t, sock)
	rc.goExport("", true)
	data := bytes.Repeat([]byte{0x5A}, 8192)
	rc.request(cmdFlagFUA, cmdWrite, 1, 65536, 8192, data)
	rc.request(0, cmdTrim, 2, 0, 65536, nil)
	rc.request(cmdFlagNoHole, cmdWriteZeroes, 3, 262144, 4096, nil)
	rc.request(0, cmdWriteZeroes, 4, 524288, 65536, nil)
	rc.request(0, cmdFlush, 5, 0, 0, nil)
	rc.request(0, cmdCache, 6, 0, 1<<20, nil)
	rc.request(0, cmdRead, 7, 0, 0, nil)
	for range 7 {
		if ch := rc.chunk(); ch.errno() != 0 || ch.typ != replyTypeNone {
			t.Fatalf("handle %d: type %d errno %d", ch.handle, ch.typ, ch.errno())
		}
	}
	rc.request(0, cmdBlockStatus, 8, 0, 1<<20, nil)
	ch := rc.chunk()
	if ch.typ != replyTypeBlockStatus || binary.BigEndian.Uint32(ch.payload) != metaContextAllocationID {
		t.Fatalf("block status chunk type %d", ch.typ)
	}
	var exts []core.Extent
	pos := int64(0)
	for b := ch.payload[4:]; len(b) >= 8; b = b[8:] {
		l := int64(binary.BigEndian.Uint32(b))
		exts = append(exts, core.Extent{Offset: pos, Length: l, Flags: core.ExtentFlags(binary.BigEndian.Uint32(b[4:]))})
		pos += l
	}
	if pos != 1<<20 {
		t.Fatalf("extents cover %d bytes", pos)
	}
	if e := exts[0]; e.Flags != core.ExtentHole|core.ExtentZero || e.Length != 65536 {
		t.Errorf("trimmed range reported as %+v", e)
	}
	if e := exts[1]; e.Flags != 0 || e.Offset != 65536 {
		t.Errorf("written range reported as %+v", e)
	}
	rc.request(cmdFlagReqOne, cmdBlockStatus, 9, 0, 1<<20, nil)
	if ch := rc.chunk(); len(ch.payload) != 12 {
		t.Fatalf("REQ_ONE gave %d descriptors", (len(ch.payload)-4)/8)
	}
	got := fileBytes(t, f)
	if !bytes.Equal(got[65536:65536+8192], data) || !bytes.Equal(got[:65536], make([]byte, 65536)) ||
		!bytes.Equal(got[262144:262144+4096], make([]byte, 4096)) || !bytes.Equal(got[524288:524288+65536], make([]byte, 65536)) {
		t.Fatal("export content differs from the requests")
	}
}

// durableFile records which completed writes a Sync made durable.
type durableFile struct {
	core.File
	mu      sync.Mutex
	written map[int64]bool
	durable map[int64]bool
	syncs   int
}

func (d *durableFile) WriteAt(p []byte, off int64) (int, error) {
	n, err := d.File.WriteAt(p, off)
	d.mu.Lock()
	d.written[off] = true
	d.mu.Unlock()
	return n, err
}

func (d *durableFile) Sync() error {
	err := d.File.Sync()
	d.mu.Lock()
	for off := range d.written {
		d.durable[off] = true
	}
	d.syncs++
	d.mu.Unlock()
	return err
}

func (d *durableFile) isDurable(off int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.durable[off]
}

// TestMultiConnFlush: a FLUSH on one connection covers writes completed on
// another (NBD_FLAG_CAN_MULTI_CONN), and FUA writes are durable when
// replied to.
func TestMultiConnFlush(t *testing.T) {
	f, _ := newFile(t, 1<<20, false)
	d := &durableFile{File: f, written: map[int64]bool{}, durable: map[int64]bool{}}
	_, sock := startServer(t, []Export{{File: d}}, Options{})
	a, b := dialRaw(t, sock), dialRaw(t, sock)
	if _, flags := a.goExport("", false); flags&flagCanMultiConn == 0 {
		t.Fatal("export does not advertise multi-conn")
	}
	b.goExport("", true)
	a.request(0, cmdWrite, 1, 4096, 512, make([]byte, 512))
	if errno, _, _ := a.simpleReply(0); errno != 0 {
		t.Fatal(errno)
	}
	if d.isDurable(4096) {
		t.Fatal("write durable before any flush: the test proves nothing")
	}
	b.request(0, cmdFlush, 2, 0, 0, nil)
	if ch := b.chunk(); ch.errno() != 0 {
		t.Fatal(ch.errno())
	}
	if !d.isDurable(4096) {
		t.Fatal("FLUSH on one connection did not cover a write completed on another")
	}
	a.request(cmdFlagFUA, cmdWrite, 3, 8192, 512, make([]byte, 512))
	a.simpleReply(0)
	if !d.isDurable(8192) {
		t.Fatal("FUA write replied to before it was durable")
	}
}

// strictFile refuses IO that is not 512-byte aligned, as LSMT layers do.
type strictFile struct{ core.File }

func (s strictFile) ReadAt(p []byte, off int64) (int, error) {
	if off%512 != 0 || len(p)%512 != 0 {
		return 0, fmt.Errorf("unaligned read [%d, +%d): %w", off, len(p), core.ErrUnsupported)
	}
	n, err := s.File.ReadAt(p, off)
	// Widen the window between the read and the write of a
	// read-modify-write, so that a missing lock shows.
	time.Sleep(50 * time.Microsecond)
	return n, err
}

func (s strictFile) WriteAt(p []byte, off int64) (int, error) {
	if off%512 != 0 || len(p)%512 != 0 {
		return 0, fmt.Errorf("unaligned write [%d, +%d): %w", off, len(p), core.ErrUnsupported)
	}
	return s.File.WriteAt(p, off)
}

func (s strictFile) Discard(off, n int64) error {
	if off%512 != 0 || n%512 != 0 {
		return fmt.Errorf("unaligned discard: %w", core.ErrUnsupported)
	}
	return sparseFile{s.File.(*psync.File)}.Discard(off, n)
}

func (s strictFile) BlockStatus(off, n int64) ([]core.Extent, error) {
	if off%512 != 0 || n%512 != 0 {
		return nil, fmt.Errorf("unaligned block status: %w", core.ErrUnsupported)
	}
	return sparseFile{s.File.(*psync.File)}.BlockStatus(off, n)
}

// TestUnalignedRequests: a file that needs 512-byte alignment serves
// requests of any alignment, and concurrent unaligned writes sharing
// sectors do not lose each other's bytes.
func TestUnalignedRequests(t *testing.T) {
	f, _ := newFile(t, 1<<20, true)
	model := fileBytes(t, f)
	_, sock := startServer(t, []Export{{File: strictFile{f}, Alignment: 512}}, Options{})
	rc := dialRaw(t, sock)
	rc.goExport("", true)
	// 128 writes of 8 bytes into sectors 0 and 1, all in flight at once.
	for i := range 128 {
		p := bytes.Repeat([]byte{byte(i + 1)}, 8)
		copy(model[8*i:], p)
		rc.request(0, cmdWrite, uint64(i), uint64(8*i), 8, p)
	}
	for range 128 {
		if ch := rc.chunk(); ch.errno() != 0 {
			t.Fatalf("unaligned write %d: errno %d", ch.handle, ch.errno())
		}
	}
	rc.request(0, cmdWriteZeroes, 1000, 70000, 3000, nil)
	copy(model[70000:73000], make([]byte, 3000))
	rc.request(0, cmdTrim, 1001, 300, 100, nil) // inside one sector: nothing to discard
	rc.request(0, cmdCache, 1002, 1, 10, nil)
	for range 3 {
		if ch := rc.chunk(); ch.errno() != 0 {
			t.Fatalf("handle %d: errno %d", ch.handle, ch.errno())
		}
	}
	rc.request(0, cmdBlockStatus, 1003, 100, 5000, nil)
	ch := rc.chunk()
	total := uint32(0)
	for b := ch.payload[4:]; len(b) >= 8; b = b[8:] {
		total += binary.BigEndian.Uint32(b)
	}
	if ch.errno() != 0 || total != 5000 {
		t.Fatalf("unaligned block status: errno %d, %d bytes described", ch.errno(), total)
	}
	rc.request(0, cmdRead, 1004, 3, 80000, nil)
	ch = rc.chunk()
	if ch.errno() != 0 || !bytes.Equal(ch.payload[8:], model[3:80003]) {
		t.Fatal("content after unaligned requests differs from the model")
	}
	if !bytes.Equal(fileBytes(t, f), model) {
		t.Fatal("file differs from the model")
	}
}

// countingFile records the largest number of reads in progress at once.
type countingFile struct {
	core.File
	mu       sync.Mutex
	cur, max int
}

func (c *countingFile) ReadAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	c.cur++
	c.max = max(c.max, c.cur)
	c.mu.Unlock()
	time.Sleep(20 * time.Millisecond)
	c.mu.Lock()
	c.cur--
	c.mu.Unlock()
	return c.File.ReadAt(p, off)
}

// TestInFlightBounds: a connection runs at most MaxInFlight requests and
// buffers at most MaxInFlightBytes at once.
func TestInFlightBounds(t *testing.T) {
	f, _ := newFile(t, 8<<20, true)
	for _, tc := range []struct {
		opts   Options
		length uint32
		want   int
	}{
		{Options{MaxInFlight: 3}, 4096, 3},
		{Options{MaxRequest: 1 << 20, MaxInFlightBytes: 2 << 20}, 1 << 20, 2},
	} {
		cf := &countingFile{File: f}
		_, sock := startServer(t, []Export{{File: cf, ReadOnly: true}}, tc.opts)
		rc := dialRaw(t, sock)
		rc.goExport("", false)
		for i := range 8 {
			rc.request(0, cmdRead, uint64(i), uint64(i)*uint64(tc.length), tc.length, nil)
		}
		for range 8 {
			if errno, _, _ := rc.simpleReply(int(tc.length)); errno != 0 {
				t.Fatal(errno)
			}
		}
		cf.mu.Lock()
		got := cf.max
		cf.mu.Unlock()
		if got != tc.want {
			t.Errorf("%+v: %d reads at once, want %d", tc.opts, got, tc.want)
		}
	}
}
