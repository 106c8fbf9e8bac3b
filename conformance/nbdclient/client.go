// Package nbdclient is a Network Block Device client (fixed newstyle
// negotiation with NBD_OPT_GO, structured replies, the base:allocation
// metadata context) that presents an export as a core.File,
// core.Discarder, core.ZeroWriter and core.BlockStatuser, so that the
// conformance scenarios can drive a device through an NBD server exactly
// as through the file itself.
//
// Requests are pipelined: any number of callers may have requests in
// flight on one connection at once (a large read is also split into pieces
// sent together), and replies are matched to requests by handle in
// whatever order the server sends them. Structured read replies may come
// in several chunks, data and holes, in any order; the client checks that
// the chunks cover the request exactly once.
package nbdclient

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/overlaybd-go/overlaybd/core"
)

// Protocol constants (NBD's proto.md).
const (
	magicNBD        = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpt        = 0x49484156454f5054 // "IHAVEOPT"
	magicOptReply   = 0x3e889045565a9
	magicRequest    = 0x25609513
	magicSimple     = 0x67446698
	magicStructured = 0x668e33ef
	flagFixed       = 1
	flagNoZeroes    = 2
	optGo           = 7
	optStructured   = 8
	optSetMetaCtx   = 10
	repAck          = 1
	repInfo         = 3
	repMetaContext  = 4
	repErrUnsup     = 1<<31 + 1
	infoExport      = 0
	cmdRead         = 0
	cmdWrite        = 1
	cmdDisc         = 2
	cmdFlush        = 3
	cmdTrim         = 4
	cmdWriteZeroes  = 6
	cmdBlockStatus  = 7
	errPerm         = 1
	repFlagError    = 1 << 31

	chunkFlagDone    = 1
	chunkNone        = 0
	chunkOffsetData  = 1
	chunkOffsetHole  = 2
	chunkBlockStatus = 5
	chunkError       = 1<<15 + 1
	chunkErrorOffset = 1<<15 + 2

	// metaAllocation is the metadata context of hole and zero extents.
	metaAllocation = "base:allocation"
)

// ErrNBD wraps the error numbers an NBD server replies with.
var ErrNBD = errors.New("nbd error reply")

// ErrProtocol marks a reply that breaks the protocol (unknown handle, bad
// magic, chunks outside the request); the connection is unusable after
// it.
var ErrProtocol = errors.New("nbd protocol violation")

// Stats are the client's counters.
type Stats struct {
	// Requests counts requests sent; MaxInFlight is the largest number
	// in flight at once.
	Requests, MaxInFlight uint64
	// OutOfOrder counts replies that completed a request while an older
	// request was still waiting.
	OutOfOrder uint64
	// Chunks counts structured reply chunks; HoleChunks the read chunks
	// that were holes.
	Chunks, HoleChunks uint64
	// BlockStatus counts block-status requests answered.
	BlockStatus uint64
}

// Client is one connection to an export. It is safe for concurrent use:
// requests of several goroutines are in flight together.
type Client struct {
	conn net.Conn
	r    *bufio.Reader

	size       int64
	flags      uint16
	structured bool
	metaID     uint32 // base:allocation context id, when metaOK
	metaOK     bool

	wmu sync.Mutex // one request on the wire at a time

	mu      sync.Mutex
	pending map[uint64]*call
	next    uint64 // next handle
	err     error  // set once the connection failed or closed
	closed  bool

	readerDone chan struct{}

	requests, maxInFlight, outOfOrder, chunks, holeChunks, statuses atomic.Uint64
}

// call is one request in flight.
type call struct {
	cmd    uint16
	off    int64
	length uint32
	rdata  []byte // read: the caller's buffer

	covered  uint64        // read: bytes delivered by chunks
	extents  []core.Extent // block status
	gotStats bool
	err      error // error reply
	done     chan struct{}
}

var (
	_ core.File          = (*Client)(nil)
	_ core.Discarder     = (*Client)(nil)
	_ core.ZeroWriter    = (*Client)(nil)
	_ core.BlockStatuser = (*Client)(nil)
)

// Dial connects to addr on network ("unix" or "tcp") and negotiates
// structured replies, the base:allocation context and the export name
// with NBD_OPT_GO. A server without structured replies is served with
// simple replies (then BlockStatus is not supported).
func Dial(ctx context.Context, network, addr, name string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("nbd: dial %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	c, err := newClient(conn, name)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("nbd: handshake with %s: %w", addr, err)
	}
	conn.SetDeadline(time.Time{})
	c.start()
	return c, nil
}

// newClient negotiates export name on conn; start begins the transmission
// phase.
func newClient(conn net.Conn, name string) (*Client, error) {
	c := &Client{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), pending: map[uint64]*call{}, next: 1,
		readerDone: make(chan struct{})}
	if err := c.handshake(name); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Client) start() { go c.readReplies() }

// option sends one option request.
func (c *Client) option(opt uint32, data []byte) error {
	req := binary.BigEndian.AppendUint64(nil, magicOpt)
	req = binary.BigEndian.AppendUint32(req, opt)
	req = binary.BigEndian.AppendUint32(req, uint32(len(data)))
	req = append(req, data...)
	_, err := c.conn.Write(req)
	return err
}

// optReply reads one option reply to opt.
func (c *Client) optReply(opt uint32) (typ uint32, payload []byte, err error) {
	var h [20]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return 0, nil, err
	}
	if binary.BigEndian.Uint64(h[0:]) != magicOptReply || binary.BigEndian.Uint32(h[8:]) != opt {
		return 0, nil, fmt.Errorf("bad option reply header %x", h)
	}
	typ, n := binary.BigEndian.Uint32(h[12:]), binary.BigEndian.Uint32(h[16:])
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("option reply of %d bytes", n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(c.r, payload); err != nil {
		return 0, nil, err
	}
	return typ, payload, nil
}

func (c *Client) handshake(name string) error {
	var b [18]byte
	if _, err := io.ReadFull(c.r, b[:]); err != nil {
		return err
	}
	if binary.BigEndian.Uint64(b[0:]) != magicNBD || binary.BigEndian.Uint64(b[8:]) != magicOpt {
		return fmt.Errorf("not a fixed-newstyle NBD server")
	}
	hflags := binary.BigEndian.Uint16(b[16:])
	if hflags&flagFixed == 0 {
		return fmt.Errorf("server does not speak fixed newstyle (flags %#x)", hflags)
	}
	cflags := uint32(flagFixed) | uint32(hflags&flagNoZeroes)
	if _, err := c.conn.Write(binary.BigEndian.AppendUint32(nil, cflags)); err != nil {
		return err
	}

	// Structured replies, then the allocation context.
	if err := c.option(optStructured, nil); err != nil {
		return err
	}
	typ, payload, err := c.optReply(optStructured)
	switch {
	case err != nil:
		return err
	case typ == repAck:
		c.structured = true
	case typ&repFlagError == 0:
		return fmt.Errorf("NBD_OPT_STRUCTURED_REPLY answered with reply %#x", typ)
	}
	if c.structured {
		data := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
		data = append(data, name...)
		data = binary.BigEndian.AppendUint32(data, 1)
		data = binary.BigEndian.AppendUint32(data, uint32(len(metaAllocation)))
		data = append(data, metaAllocation...)
		if err := c.option(optSetMetaCtx, data); err != nil {
			return err
		}
		for {
			typ, payload, err = c.optReply(optSetMetaCtx)
			if err != nil {
				return err
			}
			if typ == repMetaContext {
				if len(payload) < 4 || string(payload[4:]) != metaAllocation {
					return fmt.Errorf("NBD_OPT_SET_META_CONTEXT replied with context %q", payload)
				}
				c.metaID, c.metaOK = binary.BigEndian.Uint32(payload), true
				continue
			}
			if typ == repAck || typ&repFlagError != 0 {
				break
			}
			return fmt.Errorf("NBD_OPT_SET_META_CONTEXT answered with reply %#x", typ)
		}
	}

	data := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	data = append(data, name...)
	data = binary.BigEndian.AppendUint16(data, 0)
	if err := c.option(optGo, data); err != nil {
		return err
	}
	gotSize := false
	for {
		typ, payload, err := c.optReply(optGo)
		if err != nil {
			return err
		}
		switch {
		case typ&repFlagError != 0:
			return fmt.Errorf("NBD_OPT_GO refused (reply %#x): %s", typ, payload)
		case typ == repInfo && len(payload) >= 12 && binary.BigEndian.Uint16(payload) == infoExport:
			size := binary.BigEndian.Uint64(payload[2:])
			if size > 1<<62 {
				return fmt.Errorf("export size %d is out of range", size)
			}
			c.size = int64(size)
			c.flags = binary.BigEndian.Uint16(payload[10:])
			gotSize = true
		case typ == repAck:
			if !gotSize {
				return fmt.Errorf("NBD_OPT_GO acknowledged without NBD_INFO_EXPORT")
			}
			return nil
		}
	}
}

// Flags are the export's transmission flags.
func (c *Client) Flags() uint16 { return c.flags }

// Structured reports whether structured replies were negotiated.
func (c *Client) Structured() bool { return c.structured }

// Stats returns the counters.
func (c *Client) Stats() Stats {
	return Stats{Requests: c.requests.Load(), MaxInFlight: c.maxInFlight.Load(), OutOfOrder: c.outOfOrder.Load(),
		Chunks: c.chunks.Load(), HoleChunks: c.holeChunks.Load(), BlockStatus: c.statuses.Load()}
}

// send registers cl under a new handle and writes its request (and
// payload). It returns the handle.
func (c *Client) send(cl *call, flags uint16, wdata []byte) (uint64, error) {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	h := c.next
	c.next++
	c.pending[h] = cl
	if n := uint64(len(c.pending)); n > c.maxInFlight.Load() {
		c.maxInFlight.Store(n)
	}
	c.mu.Unlock()
	c.requests.Add(1)

	var hdr [28]byte
	binary.BigEndian.PutUint32(hdr[0:], magicRequest)
	binary.BigEndian.PutUint16(hdr[4:], flags)
	binary.BigEndian.PutUint16(hdr[6:], cl.cmd)
	binary.BigEndian.PutUint64(hdr[8:], h)
	binary.BigEndian.PutUint64(hdr[16:], uint64(cl.off))
	binary.BigEndian.PutUint32(hdr[24:], cl.length)
	bufs := net.Buffers{hdr[:]}
	if len(wdata) > 0 {
		bufs = append(bufs, wdata)
	}
	c.wmu.Lock()
	_, err := bufs.WriteTo(c.conn)
	c.wmu.Unlock()
	if err != nil {
		c.fail(fmt.Errorf("nbd: send request: %w", err))
	}
	return h, nil
}

// wait waits for cl's reply.
func (c *Client) wait(cl *call) error {
	<-cl.done
	return cl.err
}

// do sends one request and waits for its reply.
func (c *Client) do(cmd uint16, off int64, length uint32, wdata, rdata []byte) error {
	cl := &call{cmd: cmd, off: off, length: length, rdata: rdata, done: make(chan struct{})}
	if _, err := c.send(cl, 0, wdata); err != nil {
		return err
	}
	return c.wait(cl)
}

// fail marks the connection failed with err: every request in flight and
// every later one fails with it.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	pend := c.pending
	c.pending = map[uint64]*call{}
	c.mu.Unlock()
	for _, cl := range pend {
		cl.err = err
		close(cl.done)
	}
	c.conn.Close()
}

// lookup finds the request of handle h; when done (the reply completes
// it) the request leaves the table, and a reply that overtook an older
// request is counted as out of order.
func (c *Client) lookup(h uint64, done bool) (*call, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.pending[h]
	if !ok {
		return nil, fmt.Errorf("%w: reply to handle %d, which has no request in flight", ErrProtocol, h)
	}
	if done {
		delete(c.pending, h)
		for older := range c.pending {
			if older < h {
				c.outOfOrder.Add(1)
				break
			}
		}
	}
	return cl, nil
}

// readReplies reads replies until the connection ends, completing the
// requests they answer.
func (c *Client) readReplies() {
	defer close(c.readerDone)
	for {
		if err := c.readReply(); err != nil {
			c.mu.Lock()
			closed := c.closed
			c.mu.Unlock()
			if closed {
				err = core.ErrClosed
			}
			c.fail(err)
			return
		}
	}
}

func (c *Client) readReply() error {
	var m [4]byte
	if _, err := io.ReadFull(c.r, m[:]); err != nil {
		return fmt.Errorf("nbd: read reply: %w", err)
	}
	switch binary.BigEndian.Uint32(m[:]) {
	case magicSimple:
		return c.readSimple()
	case magicStructured:
		if !c.structured {
			return fmt.Errorf("%w: structured reply without negotiation", ErrProtocol)
		}
		return c.readChunk()
	default:
		return fmt.Errorf("%w: reply magic %x", ErrProtocol, m)
	}
}

func (c *Client) readSimple() error {
	var rep [12]byte
	if _, err := io.ReadFull(c.r, rep[:]); err != nil {
		return fmt.Errorf("nbd: read reply: %w", err)
	}
	cl, err := c.lookup(binary.BigEndian.Uint64(rep[4:]), true)
	if err != nil {
		return err
	}
	if e := binary.BigEndian.Uint32(rep[0:]); e != 0 {
		cl.err = errorReply(cl, e, "")
	} else if cl.cmd == cmdRead {
		if c.structured {
			// With structured replies a successful read must come as
			// chunks: its data would otherwise be ambiguous.
			close(cl.done)
			return fmt.Errorf("%w: simple reply to a read with structured replies", ErrProtocol)
		}
		if _, err := io.ReadFull(c.r, cl.rdata); err != nil {
			cl.err = err
			close(cl.done)
			return fmt.Errorf("nbd: read reply data: %w", err)
		}
	}
	close(cl.done)
	return nil
}

func errorReply(cl *call, e uint32, msg string) error {
	if msg != "" {
		msg = " (" + msg + ")"
	}
	if e == errPerm {
		return fmt.Errorf("nbd: command %d at %d+%d: %w (EPERM)%s", cl.cmd, cl.off, cl.length, core.ErrReadOnly, msg)
	}
	return fmt.Errorf("nbd: command %d at %d+%d: %w %d%s", cl.cmd, cl.off, cl.length, ErrNBD, e, msg)
}

// readChunk reads one structured reply chunk.
func (c *Client) readChunk() error {
	var h [16]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return fmt.Errorf("nbd: read reply: %w", err)
	}
	flags, typ := binary.BigEndian.Uint16(h[0:]), binary.BigEndian.Uint16(h[2:])
	handle, n := binary.BigEndian.Uint64(h[4:]), binary.BigEndian.Uint32(h[12:])
	done := flags&chunkFlagDone != 0
	c.chunks.Add(1)
	cl, err := c.lookup(handle, done)
	if err != nil {
		return err
	}
	bad := func(format string, a ...any) error {
		err := fmt.Errorf("%w: handle %d (command %d at %d+%d): %s", ErrProtocol, handle, cl.cmd, cl.off, cl.length, fmt.Sprintf(format, a...))
		cl.err = err
		if done {
			close(cl.done)
		}
		return err
	}
	if n > 64<<20 {
		return bad("chunk of %d bytes", n)
	}
	switch typ {
	case chunkNone:
		if n != 0 {
			return bad("NBD_REPLY_TYPE_NONE with %d bytes", n)
		}
		if !done {
			return bad("NBD_REPLY_TYPE_NONE without NBD_REPLY_FLAG_DONE")
		}
	case chunkOffsetData, chunkOffsetHole:
		if cl.cmd != cmdRead {
			return bad("read chunk type %d to a command %d", typ, cl.cmd)
		}
		var ob [8]byte
		if n < 8 {
			return bad("read chunk of %d bytes", n)
		}
		if _, err := io.ReadFull(c.r, ob[:]); err != nil {
			return err
		}
		off := binary.BigEndian.Uint64(ob[:])
		var k uint64
		if typ == chunkOffsetHole {
			if n != 12 {
				return bad("hole chunk of %d bytes", n)
			}
			var hb [4]byte
			if _, err := io.ReadFull(c.r, hb[:]); err != nil {
				return err
			}
			k = uint64(binary.BigEndian.Uint32(hb[:]))
		} else {
			k = uint64(n - 8)
		}
		start := uint64(cl.off)
		if k == 0 || off < start || off+k > start+uint64(cl.length) {
			return bad("chunk [%d, +%d) outside the request", off, k)
		}
		dst := cl.rdata[off-start : off-start+k]
		if typ == chunkOffsetHole {
			clear(dst)
			c.holeChunks.Add(1)
		} else if _, err := io.ReadFull(c.r, dst); err != nil {
			return err
		}
		cl.covered += k
	case chunkBlockStatus:
		if cl.cmd != cmdBlockStatus {
			return bad("block-status chunk to a command %d", cl.cmd)
		}
		if n < 12 || (n-4)%8 != 0 {
			return bad("block-status chunk of %d bytes", n)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(c.r, b); err != nil {
			return err
		}
		if id := binary.BigEndian.Uint32(b); id != c.metaID {
			return bad("block status for context %d, negotiated %d", id, c.metaID)
		}
		if cl.gotStats {
			return bad("second block-status chunk for the same context")
		}
		cl.gotStats = true
		pos, end := cl.off, cl.off+int64(cl.length)
		for i := 4; i < len(b); i += 8 {
			l, fl := int64(binary.BigEndian.Uint32(b[i:])), binary.BigEndian.Uint32(b[i+4:])
			if l == 0 {
				return bad("block-status extent of length 0")
			}
			if pos >= end {
				return bad("block-status extents beyond the request")
			}
			// Only the last extent may reach past the request.
			if pos+l > end {
				if i+8 != len(b) {
					return bad("block-status extent %d reaches past the request", (i-4)/8)
				}
				l = end - pos
			}
			cl.extents = append(cl.extents, core.Extent{Offset: pos, Length: l, Flags: core.ExtentFlags(fl) & (core.ExtentHole | core.ExtentZero)})
			pos += l
		}
	case chunkError, chunkErrorOffset:
		if n < 6 {
			return bad("error chunk of %d bytes", n)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(c.r, b); err != nil {
			return err
		}
		ml := int(binary.BigEndian.Uint16(b[4:]))
		if 6+ml > len(b) || (typ == chunkErrorOffset && 6+ml+8 != len(b)) {
			return bad("error chunk with a message of %d bytes in %d", ml, n)
		}
		e := binary.BigEndian.Uint32(b)
		if e == 0 {
			return bad("error chunk with error 0")
		}
		if cl.err == nil {
			cl.err = errorReply(cl, e, string(b[6:6+ml]))
		}
	default:
		if typ&(1<<15) != 0 {
			// An unknown error type is still an error.
			if _, err := io.CopyN(io.Discard, c.r, int64(n)); err != nil {
				return err
			}
			if cl.err == nil {
				cl.err = fmt.Errorf("nbd: command %d at %d+%d: %w (reply type %#x)", cl.cmd, cl.off, cl.length, ErrNBD, typ)
			}
		} else {
			return bad("unknown reply type %d", typ)
		}
	}
	if !done {
		return nil
	}
	if cl.err == nil {
		switch {
		case cl.cmd == cmdRead && cl.covered != uint64(cl.length):
			return bad("read chunks cover %d of %d bytes", cl.covered, cl.length)
		case cl.cmd == cmdBlockStatus && !cl.gotStats:
			return bad("block status without extents")
		}
	}
	if cl.cmd == cmdBlockStatus && cl.err == nil {
		c.statuses.Add(1)
	}
	close(cl.done)
	return nil
}

// maxChunk bounds the payload of one request (servers accept 32 MiB).
const maxChunk = 8 << 20

// Size implements core.File.
func (c *Client) Size() int64 { return c.size }

// pieces sends one request per piece of at most maxChunk bytes of
// [off, off+n), all in flight together, and waits for every reply. It
// returns the bytes of the leading pieces that succeeded and the first
// error.
func (c *Client) pieces(cmd uint16, off int64, n int, chunk int, wdata, rdata []byte) (int, error) {
	var calls []*call
	var sendErr error
	for done := 0; done < n; done += chunk {
		k := min(n-done, chunk)
		cl := &call{cmd: cmd, off: off + int64(done), length: uint32(k), done: make(chan struct{})}
		var w []byte
		if rdata != nil {
			cl.rdata = rdata[done : done+k]
		}
		if wdata != nil {
			w = wdata[done : done+k]
		}
		if _, err := c.send(cl, 0, w); err != nil {
			sendErr = err
			break
		}
		calls = append(calls, cl)
	}
	good := 0
	var first error
	for _, cl := range calls {
		err := c.wait(cl)
		if err == nil && first == nil {
			good += int(cl.length)
		} else if first == nil {
			first = err
		}
	}
	if first == nil {
		first = sendErr
	}
	return good, first
}

// ReadAt implements core.File: reads past the end return what exists and
// io.EOF.
func (c *Client) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("nbd: read at %d: %w", off, core.ErrOutOfRange)
	}
	if off >= c.size {
		return 0, io.EOF
	}
	n := len(p)
	var eof error
	if int64(n) > c.size-off {
		n, eof = int(c.size-off), io.EOF
	}
	got, err := c.pieces(cmdRead, off, n, maxChunk, nil, p[:n])
	if err != nil {
		return got, err
	}
	return n, eof
}

// WriteAt implements core.File.
func (c *Client) WriteAt(p []byte, off int64) (int, error) {
	return c.pieces(cmdWrite, off, len(p), maxChunk, p, nil)
}

func (c *Client) ranged(cmd uint16, off, length int64) error {
	for length > 0 {
		k := min(length, 1<<30)
		if err := c.do(cmd, off, uint32(k), nil, nil); err != nil {
			return err
		}
		off, length = off+k, length-k
	}
	return nil
}

// Discard implements core.Discarder with NBD_CMD_TRIM.
func (c *Client) Discard(off, length int64) error { return c.ranged(cmdTrim, off, length) }

// WriteZeroes implements core.ZeroWriter with NBD_CMD_WRITE_ZEROES.
func (c *Client) WriteZeroes(off, length int64) error {
	return c.ranged(cmdWriteZeroes, off, length)
}

// BlockStatus implements core.BlockStatuser with NBD_CMD_BLOCK_STATUS in
// the base:allocation context: NBD_STATE_HOLE and NBD_STATE_ZERO become
// core.ExtentHole and core.ExtentZero. The answer may describe less than
// asked.
func (c *Client) BlockStatus(off, length int64) ([]core.Extent, error) {
	if !c.metaOK {
		return nil, fmt.Errorf("nbd: block status: the server did not agree to %s: %w", metaAllocation, core.ErrUnsupported)
	}
	if off < 0 || length <= 0 || off+length > c.size {
		return nil, fmt.Errorf("nbd: block status [%d, +%d) of a %d-byte export: %w", off, length, c.size, core.ErrOutOfRange)
	}
	cl := &call{cmd: cmdBlockStatus, off: off, length: uint32(min(length, 1<<31)), done: make(chan struct{})}
	if _, err := c.send(cl, 0, nil); err != nil {
		return nil, err
	}
	if err := c.wait(cl); err != nil {
		return nil, err
	}
	return cl.extents, nil
}

// Sync implements core.File with NBD_CMD_FLUSH.
func (c *Client) Sync() error { return c.do(cmdFlush, 0, 0, nil, nil) }

// Close sends NBD_CMD_DISC once the requests in flight are answered, closes
// the connection and waits for the reply reader.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	calls := make([]*call, 0, len(c.pending))
	for _, cl := range c.pending {
		calls = append(calls, cl)
	}
	c.mu.Unlock()
	for _, cl := range calls {
		<-cl.done
	}
	var werr error
	c.mu.Lock()
	alive := c.err == nil
	c.err = core.ErrClosed
	c.mu.Unlock()
	if alive {
		var h [28]byte
		binary.BigEndian.PutUint32(h[0:], magicRequest)
		binary.BigEndian.PutUint16(h[6:], cmdDisc)
		binary.BigEndian.PutUint64(h[8:], ^uint64(0))
		c.wmu.Lock()
		_, werr = c.conn.Write(h[:])
		c.wmu.Unlock()
	}
	cerr := c.conn.Close()
	<-c.readerDone
	if errors.Is(cerr, net.ErrClosed) {
		cerr = nil
	}
	return errors.Join(werr, cerr)
}
