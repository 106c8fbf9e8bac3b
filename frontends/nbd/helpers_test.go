package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"golang.org/x/sys/unix"
)

// needTool returns the path of an external client, skipping the test when
// it is missing, unless OVERLAYBD_REQUIRE_TOOLS=1 (set by CI after
// installing the packages) makes that a failure.
func needTool(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("OVERLAYBD_REQUIRE_TOOLS") == "1" {
			tb.Fatalf("%s is required: %v", name, err)
		}
		tb.Skipf("%s not installed (apt-get install libnbd-bin qemu-utils fio fuse3)", name)
	}
	return p
}

// run runs a command and returns its combined output, failing the test on
// a non-zero exit.
func run(tb testing.TB, timeout time.Duration, name string, args ...string) string {
	tb.Helper()
	out, err := runErr(timeout, name, args...)
	if err != nil {
		tb.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	return out
}

func runErr(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// sparseFile is a local file that reports holes (SEEK_DATA/SEEK_HOLE),
// discards by punching holes and zeroes with FALLOC_FL_ZERO_RANGE, so that
// the server's optional paths are exercised against the kernel's own
// allocation map.
type sparseFile struct {
	*psync.File
}

func (f sparseFile) Discard(off, n int64) error {
	return unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

func (f sparseFile) WriteZeroes(off, n int64) error {
	return unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

func (f sparseFile) BlockStatus(off, n int64) ([]core.Extent, error) {
	end := off + n
	var out []core.Extent
	for pos := off; pos < end; {
		data, err := unix.Seek(int(f.Fd()), pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			data = end
		} else if err != nil {
			return nil, err
		}
		if data > pos {
			l := min(data, end) - pos
			out = append(out, core.Extent{Offset: pos, Length: l, Flags: core.ExtentHole | core.ExtentZero})
			pos += l
			continue
		}
		hole, err := unix.Seek(int(f.Fd()), pos, unix.SEEK_HOLE)
		if err != nil {
			return nil, err
		}
		l := min(hole, end) - pos
		out = append(out, core.Extent{Offset: pos, Length: l})
		pos += l
	}
	return out, nil
}

// newFile creates a temporary file of size bytes; with fill, random data
// is written in scattered 64 KiB extents (the rest stays holes).
func newFile(tb testing.TB, size int64, fill bool) (*psync.File, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "disk.raw")
	f, err := psync.New(core.EngineConfig{}).Open(path, core.OpenOptions{Flag: os.O_RDWR | os.O_CREATE, Perm: 0o644})
	if err != nil {
		tb.Fatal(err)
	}
	pf := f.(*psync.File)
	if err := pf.Truncate(size); err != nil {
		tb.Fatal(err)
	}
	if fill {
		rng := rand.New(rand.NewPCG(1, 2))
		buf := make([]byte, 64<<10)
		for off := int64(0); off+int64(len(buf)) <= size; off += 256 << 10 {
			for i := range buf {
				buf[i] = byte(rng.Uint32())
			}
			if _, err := pf.WriteAt(buf, off); err != nil {
				tb.Fatal(err)
			}
		}
	}
	tb.Cleanup(func() { pf.Close() })
	return pf, path
}

// startServer serves exports on a unix socket in a temporary directory
// and stops the server (gracefully) when the test ends.
func startServer(tb testing.TB, exports []Export, opts Options) (*Server, string) {
	tb.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		if testing.Verbose() {
			opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}
	s, err := NewServer(exports, opts)
	if err != nil {
		tb.Fatal(err)
	}
	sock := filepath.Join(tb.TempDir(), "nbd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			tb.Errorf("shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			tb.Errorf("serve: %v", err)
		}
	})
	return s, sock
}

// uri is the NBD URI of export name on the unix socket sock.
func uri(sock, name string) string {
	return fmt.Sprintf("nbd+unix:///%s?socket=%s", name, sock)
}

// rawClient speaks the protocol byte by byte, for the tests of malformed
// input that real clients never send.
type rawClient struct {
	tb testing.TB
	c  net.Conn
	mu sync.Mutex
	// flagsSent records that the client flags went out.
	flagsSent bool
}

func dialRaw(tb testing.TB, sock string) *rawClient {
	tb.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		tb.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	tb.Cleanup(func() { c.Close() })
	rc := &rawClient{tb: tb, c: c}
	var hello [18]byte
	rc.readFull(hello[:])
	if binary.BigEndian.Uint64(hello[0:]) != magicNBD || binary.BigEndian.Uint64(hello[8:]) != magicIHaveOpt {
		tb.Fatalf("bad greeting %x", hello)
	}
	if f := binary.BigEndian.Uint16(hello[16:]); f != flagFixedNewstyle|flagNoZeroes {
		tb.Fatalf("handshake flags %#x", f)
	}
	return rc
}

func (rc *rawClient) readFull(b []byte) {
	rc.tb.Helper()
	if _, err := io.ReadFull(rc.c, b); err != nil {
		rc.tb.Fatalf("read: %v", err)
	}
}

func (rc *rawClient) write(b []byte) {
	rc.tb.Helper()
	if _, err := rc.c.Write(b); err != nil {
		rc.tb.Fatalf("write: %v", err)
	}
}

func (rc *rawClient) clientFlags(f uint32) {
	rc.flagsSent = true
	rc.write(binary.BigEndian.AppendUint32(nil, f))
}

func (rc *rawClient) option(opt uint32, data []byte) {
	b := binary.BigEndian.AppendUint64(nil, magicIHaveOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	rc.write(append(b, data...))
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (rc *rawClient) optReply() optReply {
	rc.tb.Helper()
	var h [20]byte
	rc.readFull(h[:])
	if m := binary.BigEndian.Uint64(h[0:]); m != magicOptReply {
		rc.tb.Fatalf("option reply magic %#x", m)
	}
	r := optReply{opt: binary.BigEndian.Uint32(h[8:]), typ: binary.BigEndian.Uint32(h[12:])}
	r.data = make([]byte, binary.BigEndian.Uint32(h[16:]))
	rc.readFull(r.data)
	return r
}

// infoData encodes the data of NBD_OPT_INFO/GO.
func infoData(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, t := range infos {
		b = binary.BigEndian.AppendUint16(b, t)
	}
	return b
}

// metaData encodes the data of NBD_OPT_{LIST,SET}_META_CONTEXT.
func metaData(name string, queries ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

// goExport negotiates structured replies (optional), base:allocation and
// NBD_OPT_GO for name, and returns the export size and flags.
func (rc *rawClient) goExport(name string, structured bool) (uint64, uint16) {
	rc.tb.Helper()
	if !rc.flagsSent {
		rc.clientFlags(flagCFixedNewstyle | flagCNoZeroes)
	}
	if structured {
		rc.option(optStructured, nil)
		if r := rc.optReply(); r.typ != repAck {
			rc.tb.Fatalf("structured reply: %#x", r.typ)
		}
		rc.option(optSetMetaCtx, metaData(name, metaContextAllocation))
		if r := rc.optReply(); r.typ != repMetaContext {
			rc.tb.Fatalf("set meta context: %#x", r.typ)
		}
		if r := rc.optReply(); r.typ != repAck {
			rc.tb.Fatalf("set meta context ack: %#x", r.typ)
		}
	}
	rc.option(optGo, infoData(name, infoBlockSize))
	var size uint64
	var flags uint16
	for {
		r := rc.optReply()
		if r.typ == repAck {
			return size, flags
		}
		if r.typ != repInfo {
			rc.tb.Fatalf("GO reply %#x %q", r.typ, r.data)
		}
		if binary.BigEndian.Uint16(r.data) == infoExport {
			size = binary.BigEndian.Uint64(r.data[2:])
			flags = binary.BigEndian.Uint16(r.data[10:])
		}
	}
}

func (rc *rawClient) request(flags, typ uint16, handle, off uint64, length uint32, payload []byte) {
	b := binary.BigEndian.AppendUint32(nil, magicRequest)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint64(b, off)
	b = binary.BigEndian.AppendUint32(b, length)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.write(append(b, payload...))
}

// simpleReply reads a simple reply with dataLen bytes of data on success.
func (rc *rawClient) simpleReply(dataLen int) (errno uint32, handle uint64, data []byte) {
	rc.tb.Helper()
	var h [16]byte
	rc.readFull(h[:])
	if m := binary.BigEndian.Uint32(h[0:]); m != magicSimpleReply {
		rc.tb.Fatalf("simple reply magic %#x", m)
	}
	errno = binary.BigEndian.Uint32(h[4:])
	handle = binary.BigEndian.Uint64(h[8:])
	if errno == 0 && dataLen > 0 {
		data = make([]byte, dataLen)
		rc.readFull(data)
	}
	return
}

type chunk struct {
	flags, typ uint16
	handle     uint64
	payload    []byte
}

func (rc *rawClient) chunk() chunk {
	rc.tb.Helper()
	var h [20]byte
	rc.readFull(h[:])
	if m := binary.BigEndian.Uint32(h[0:]); m != magicStructReply {
		rc.tb.Fatalf("structured reply magic %#x", m)
	}
	ch := chunk{flags: binary.BigEndian.Uint16(h[4:]), typ: binary.BigEndian.Uint16(h[6:]), handle: binary.BigEndian.Uint64(h[8:])}
	ch.payload = make([]byte, binary.BigEndian.Uint32(h[16:]))
	rc.readFull(ch.payload)
	return ch
}

// chunkErrno is the error value of an error chunk (0 otherwise).
func (ch chunk) errno() uint32 {
	if ch.typ&(1<<15) == 0 || len(ch.payload) < 4 {
		return 0
	}
	return binary.BigEndian.Uint32(ch.payload)
}

// closedByPeer reports whether the server closed the connection.
func (rc *rawClient) closedByPeer() bool {
	rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	_, err := rc.c.Read(b[:])
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

// fileBytes reads a whole file.
func fileBytes(tb testing.TB, f core.File) []byte {
	tb.Helper()
	b := make([]byte, f.Size())
	if _, err := f.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		tb.Fatal(err)
	}
	return b
}

var _ = bytes.Equal
