// Package nbdclient is a small Network Block Device client (fixed newstyle
// negotiation with NBD_OPT_GO, simple replies) that presents an export as a
// core.File, core.Discarder and core.ZeroWriter, so that the conformance
// scenarios can drive a device through an NBD server exactly as through the
// file itself.
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
	"time"

	"github.com/overlaybd-go/overlaybd/core"
)

// Protocol constants (NBD's proto.md).
const (
	magicNBD       = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpt       = 0x49484156454f5054 // "IHAVEOPT"
	magicOptReply  = 0x3e889045565a9
	magicRequest   = 0x25609513
	magicSimple    = 0x67446698
	flagFixed      = 1
	flagNoZeroes   = 2
	optGo          = 7
	repAck         = 1
	repInfo        = 3
	infoExport     = 0
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdWriteZeroes = 6
	errPerm        = 1
	repFlagError   = 1 << 31
)

// ErrNBD wraps the error numbers an NBD server replies with.
var ErrNBD = errors.New("nbd error reply")

// Client is one connection to an export. Requests are serialised: each
// waits for its reply before the next is sent. It is safe for concurrent
// use.
type Client struct {
	mu     sync.Mutex
	conn   net.Conn
	r      *bufio.Reader
	size   int64
	flags  uint16
	handle uint64
	closed bool
	hdr    [28]byte
}

var (
	_ core.File       = (*Client)(nil)
	_ core.Discarder  = (*Client)(nil)
	_ core.ZeroWriter = (*Client)(nil)
)

// Dial connects to addr on network ("unix" or "tcp") and negotiates the
// export name with NBD_OPT_GO.
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
	return c, nil
}

// newClient negotiates export name on conn.
func newClient(conn net.Conn, name string) (*Client, error) {
	c := &Client{conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}
	if err := c.handshake(name); err != nil {
		return nil, err
	}
	return c, nil
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
	req := binary.BigEndian.AppendUint32(nil, cflags)
	data := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	data = append(data, name...)
	data = binary.BigEndian.AppendUint16(data, 0)
	req = binary.BigEndian.AppendUint64(req, magicOpt)
	req = binary.BigEndian.AppendUint32(req, optGo)
	req = binary.BigEndian.AppendUint32(req, uint32(len(data)))
	req = append(req, data...)
	if _, err := c.conn.Write(req); err != nil {
		return err
	}
	gotSize := false
	for {
		var h [20]byte
		if _, err := io.ReadFull(c.r, h[:]); err != nil {
			return err
		}
		if binary.BigEndian.Uint64(h[0:]) != magicOptReply || binary.BigEndian.Uint32(h[8:]) != optGo {
			return fmt.Errorf("bad option reply header %x", h)
		}
		typ, n := binary.BigEndian.Uint32(h[12:]), binary.BigEndian.Uint32(h[16:])
		if n > 1<<20 {
			return fmt.Errorf("option reply of %d bytes", n)
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(c.r, payload); err != nil {
			return err
		}
		switch {
		case typ&repFlagError != 0:
			return fmt.Errorf("NBD_OPT_GO refused (reply %#x): %s", typ, payload)
		case typ == repInfo && n >= 12 && binary.BigEndian.Uint16(payload) == infoExport:
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

// do sends one request and reads its simple reply, reading the reply's
// payload into rdata.
func (c *Client) do(cmd uint16, off int64, length uint32, wdata, rdata []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return core.ErrClosed
	}
	c.handle++
	h := c.hdr[:]
	binary.BigEndian.PutUint32(h[0:], magicRequest)
	binary.BigEndian.PutUint16(h[4:], 0)
	binary.BigEndian.PutUint16(h[6:], cmd)
	binary.BigEndian.PutUint64(h[8:], c.handle)
	binary.BigEndian.PutUint64(h[16:], uint64(off))
	binary.BigEndian.PutUint32(h[24:], length)
	bufs := net.Buffers{h}
	if len(wdata) > 0 {
		bufs = append(bufs, wdata)
	}
	if _, err := bufs.WriteTo(c.conn); err != nil {
		return fmt.Errorf("nbd: send request: %w", err)
	}
	var rep [16]byte
	if _, err := io.ReadFull(c.r, rep[:]); err != nil {
		return fmt.Errorf("nbd: read reply: %w", err)
	}
	if binary.BigEndian.Uint32(rep[0:]) != magicSimple || binary.BigEndian.Uint64(rep[8:]) != c.handle {
		return fmt.Errorf("nbd: bad reply %x to handle %d", rep, c.handle)
	}
	if e := binary.BigEndian.Uint32(rep[4:]); e != 0 {
		if e == errPerm {
			return fmt.Errorf("nbd: command %d at %d+%d: %w (EPERM)", cmd, off, length, core.ErrReadOnly)
		}
		return fmt.Errorf("nbd: command %d at %d+%d: %w %d", cmd, off, length, ErrNBD, e)
	}
	if rdata != nil {
		if _, err := io.ReadFull(c.r, rdata); err != nil {
			return fmt.Errorf("nbd: read reply data: %w", err)
		}
	}
	return nil
}

// maxChunk bounds the payload of one request (servers accept 32 MiB).
const maxChunk = 8 << 20

// Size implements core.File.
func (c *Client) Size() int64 { return c.size }

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
	for done := 0; done < n; {
		k := min(n-done, maxChunk)
		if err := c.do(cmdRead, off+int64(done), uint32(k), nil, p[done:done+k]); err != nil {
			return done, err
		}
		done += k
	}
	return n, eof
}

// WriteAt implements core.File.
func (c *Client) WriteAt(p []byte, off int64) (int, error) {
	for done := 0; done < len(p); {
		k := min(len(p)-done, maxChunk)
		if err := c.do(cmdWrite, off+int64(done), uint32(k), p[done:done+k], nil); err != nil {
			return done, err
		}
		done += k
	}
	return len(p), nil
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

// Sync implements core.File with NBD_CMD_FLUSH.
func (c *Client) Sync() error { return c.do(cmdFlush, 0, 0, nil, nil) }

// Close sends NBD_CMD_DISC and closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var h [28]byte
	binary.BigEndian.PutUint32(h[0:], magicRequest)
	binary.BigEndian.PutUint16(h[6:], cmdDisc)
	_, werr := c.conn.Write(h[:])
	return errors.Join(werr, c.conn.Close())
}
