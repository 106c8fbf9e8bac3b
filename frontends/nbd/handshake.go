package nbd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

const (
	// maxOptionLen bounds the data of one option the server reads.
	maxOptionLen = 64 << 10
	// maxOptionDiscard bounds the data of an oversized option that the
	// server skips to answer NBD_REP_ERR_TOO_BIG; beyond it the
	// connection is dropped.
	maxOptionDiscard = 16 << 20
	// unixSendBuffer is the send buffer asked for on unix sockets.
	unixSendBuffer = 4 << 20
)

// conn is one client connection.
type conn struct {
	s   *Server
	nc  net.Conn
	log *slog.Logger
	br  *bufio.Reader

	// Negotiated state.
	noZeroes   bool
	structured bool
	meta       bool   // base:allocation selected ...
	metaExport string // ... for this export
	x          *export
	flags      uint16 // transmission flags of the chosen export

	// dlmu orders read-deadline changes with stopReading.
	dlmu     sync.Mutex
	stopping bool

	wq       writeQueue // serialises and batches replies
	broken   atomic.Bool
	sem      chan struct{}
	jobs     chan job            // to idle workers
	nworkers int                 // workers started (reader goroutine only)
	workers  sync.WaitGroup      // running workers
	bytes    *semaphore.Weighted // payload bytes in flight
	inflight sync.WaitGroup
}

func newConn(s *Server, nc net.Conn) *conn {
	if uc, ok := nc.(*net.UnixConn); ok {
		// Let a whole large reply fit in the socket, so that it goes out
		// in one write instead of several polled partial writes (the
		// kernel caps the size at net.core.wmem_max). TCP keeps its
		// autotuning.
		uc.SetWriteBuffer(unixSendBuffer)
	}
	return &conn{
		s:     s,
		nc:    nc,
		log:   s.log.With("remote", nc.RemoteAddr().String()),
		br:    bufio.NewReaderSize(nc, 64<<10),
		sem:   make(chan struct{}, s.opts.MaxInFlight),
		bytes: semaphore.NewWeighted(s.opts.MaxInFlightBytes),
	}
}

// stopReading makes the connection stop reading new requests; requests in
// flight still complete.
func (c *conn) stopReading() {
	c.dlmu.Lock()
	defer c.dlmu.Unlock()
	c.stopping = true
	c.nc.SetReadDeadline(time.Now())
}

// setReadDeadline sets a read deadline unless the connection is stopping.
func (c *conn) setReadDeadline(t time.Time) bool {
	c.dlmu.Lock()
	defer c.dlmu.Unlock()
	if c.stopping {
		return false
	}
	c.nc.SetReadDeadline(t)
	return true
}

func (c *conn) isStopping() bool {
	c.dlmu.Lock()
	defer c.dlmu.Unlock()
	return c.stopping
}

func (c *conn) serve() {
	defer c.nc.Close()
	if c.s.opts.HandshakeTimeout > 0 {
		if !c.setReadDeadline(time.Now().Add(c.s.opts.HandshakeTimeout)) {
			return
		}
		c.nc.SetWriteDeadline(time.Now().Add(c.s.opts.HandshakeTimeout))
	}
	err := c.handshake()
	if err != nil {
		if !errors.Is(err, errAbort) && !c.isStopping() {
			c.log.Debug("negotiation ended", "err", err)
		}
		return
	}
	if !c.setReadDeadline(time.Time{}) {
		return
	}
	c.nc.SetWriteDeadline(time.Time{})
	c.log.Debug("transmission", "export", c.x.Name, "structured", c.structured)
	c.transmit()
}

// errAbort ends negotiation at the client's request.
var errAbort = errors.New("nbd: client aborted negotiation")

// handshake runs fixed-newstyle negotiation until the client picks an
// export (nil), aborts, or breaks the protocol (non-nil).
func (c *conn) handshake() error {
	var hello [18]byte
	binary.BigEndian.PutUint64(hello[0:], magicNBD)
	binary.BigEndian.PutUint64(hello[8:], magicIHaveOpt)
	binary.BigEndian.PutUint16(hello[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := c.nc.Write(hello[:]); err != nil {
		return fmt.Errorf("send greeting: %w", err)
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.br, cf[:]); err != nil {
		return fmt.Errorf("read client flags: %w", err)
	}
	flags := binary.BigEndian.Uint32(cf[:])
	if flags&^(flagCFixedNewstyle|flagCNoZeroes) != 0 {
		return fmt.Errorf("%w: unknown client flags %#x", errMalformed, flags)
	}
	c.noZeroes = flags&flagCNoZeroes != 0

	var hdr [16]byte
	for {
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			return fmt.Errorf("read option: %w", err)
		}
		if m := binary.BigEndian.Uint64(hdr[0:]); m != magicIHaveOpt {
			return fmt.Errorf("%w: option magic %#x", errMalformed, m)
		}
		opt := binary.BigEndian.Uint32(hdr[8:])
		n := binary.BigEndian.Uint32(hdr[12:])
		if n > maxOptionLen {
			if opt == optExportName || n > maxOptionDiscard {
				return fmt.Errorf("%w: option %d with %d bytes of data", errMalformed, opt, n)
			}
			if _, err := io.CopyN(io.Discard, c.br, int64(n)); err != nil {
				return fmt.Errorf("skip option data: %w", err)
			}
			if err := c.optReply(opt, repErrTooBig, []byte("option data too large")); err != nil {
				return err
			}
			continue
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(c.br, data); err != nil {
			return fmt.Errorf("read option data: %w", err)
		}
		done, err := c.option(opt, data)
		if err != nil || done {
			return err
		}
	}
}

// option handles one option; done reports that transmission begins.
func (c *conn) option(opt uint32, data []byte) (done bool, err error) {
	switch opt {
	case optExportName:
		x, ok := c.s.exports[string(data)]
		if !ok {
			return false, fmt.Errorf("NBD_OPT_EXPORT_NAME: no export %q", data)
		}
		c.choose(x)
		reply := make([]byte, 10, 10+124)
		binary.BigEndian.PutUint64(reply[0:], x.size)
		binary.BigEndian.PutUint16(reply[8:], c.flags)
		if !c.noZeroes {
			reply = reply[:10+124]
		}
		if _, err := c.nc.Write(reply); err != nil {
			return false, fmt.Errorf("reply to NBD_OPT_EXPORT_NAME: %w", err)
		}
		return true, nil

	case optAbort:
		c.optReply(opt, repAck, nil) // the client may already be gone
		return false, errAbort

	case optList:
		if len(data) != 0 {
			return false, c.optReply(opt, repErrInvalid, []byte("NBD_OPT_LIST takes no data"))
		}
		for _, name := range c.s.order {
			b := make([]byte, 4+len(name))
			binary.BigEndian.PutUint32(b, uint32(len(name)))
			copy(b[4:], name)
			if err := c.optReply(opt, repServer, b); err != nil {
				return false, err
			}
		}
		return false, c.optReply(opt, repAck, nil)

	case optInfo, optGo:
		req, err := parseInfoRequest(data)
		if err != nil {
			return false, c.optReply(opt, repErrInvalid, []byte(err.Error()))
		}
		x, ok := c.s.exports[req.name]
		if !ok {
			return false, c.optReply(opt, repErrUnknown, fmt.Appendf(nil, "no export named %q", req.name))
		}
		flags := c.transmissionFlags(x)
		b := make([]byte, 12)
		binary.BigEndian.PutUint16(b[0:], infoExport)
		binary.BigEndian.PutUint64(b[2:], x.size)
		binary.BigEndian.PutUint16(b[10:], flags)
		if err := c.optReply(opt, repInfo, b); err != nil {
			return false, err
		}
		for _, t := range req.infos {
			switch t {
			case infoName:
				if err := c.optReply(opt, repInfo, append([]byte{0, byte(infoName)}, x.Name...)); err != nil {
					return false, err
				}
			case infoDescription:
				if x.Description != "" {
					if err := c.optReply(opt, repInfo, append([]byte{0, byte(infoDescription)}, x.Description...)); err != nil {
						return false, err
					}
				}
			}
		}
		// Block sizes are always sent (clients that did not ask ignore
		// them). Any alignment is accepted; the preferred size avoids
		// read-modify-write.
		b = make([]byte, 14)
		binary.BigEndian.PutUint16(b[0:], infoBlockSize)
		binary.BigEndian.PutUint32(b[2:], 1)
		binary.BigEndian.PutUint32(b[6:], max(4096, x.Alignment))
		binary.BigEndian.PutUint32(b[10:], c.s.opts.MaxRequest)
		if err := c.optReply(opt, repInfo, b); err != nil {
			return false, err
		}
		if err := c.optReply(opt, repAck, nil); err != nil {
			return false, err
		}
		if opt == optGo {
			c.choose(x)
			return true, nil
		}
		return false, nil

	case optStructured:
		if len(data) != 0 {
			return false, c.optReply(opt, repErrInvalid, []byte("NBD_OPT_STRUCTURED_REPLY takes no data"))
		}
		c.structured = true
		return false, c.optReply(opt, repAck, nil)

	case optListMetaCtx, optSetMetaCtx:
		if !c.structured {
			return false, c.optReply(opt, repErrInvalid, []byte("structured replies must be negotiated first"))
		}
		req, err := parseMetaRequest(data)
		if err != nil {
			return false, c.optReply(opt, repErrInvalid, []byte(err.Error()))
		}
		if _, ok := c.s.exports[req.name]; !ok {
			return false, c.optReply(opt, repErrUnknown, fmt.Appendf(nil, "no export named %q", req.name))
		}
		selected := false
		if opt == optListMetaCtx && len(req.queries) == 0 {
			selected = true
		}
		for _, q := range req.queries {
			if matchMetaQuery(q) {
				selected = true
			}
		}
		if opt == optSetMetaCtx {
			c.meta, c.metaExport = selected, req.name
		}
		if selected {
			id := uint32(0)
			if opt == optSetMetaCtx {
				id = metaContextAllocationID
			}
			b := binary.BigEndian.AppendUint32(nil, id)
			if err := c.optReply(opt, repMetaContext, append(b, metaContextAllocation...)); err != nil {
				return false, err
			}
		}
		return false, c.optReply(opt, repAck, nil)

	case optStartTLS:
		return false, c.optReply(opt, repErrPolicy, []byte("TLS is not offered by this server"))

	default:
		return false, c.optReply(opt, repErrUnsup, fmt.Appendf(nil, "option %d is not supported", opt))
	}
}

// transmissionFlags are the flags of x as seen by this connection.
func (c *conn) transmissionFlags(x *export) uint16 {
	f := x.flags
	if c.structured {
		f |= flagSendDF
	}
	return f
}

// choose makes x the connection's export.
func (c *conn) choose(x *export) {
	c.x = x
	c.flags = c.transmissionFlags(x)
	if c.metaExport != x.Name {
		c.meta = false
	}
	if !c.structured {
		c.meta = false
	}
}

// optReply sends one option reply.
func (c *conn) optReply(opt, typ uint32, data []byte) error {
	b := make([]byte, 20, 20+len(data))
	binary.BigEndian.PutUint64(b[0:], magicOptReply)
	binary.BigEndian.PutUint32(b[8:], opt)
	binary.BigEndian.PutUint32(b[12:], typ)
	binary.BigEndian.PutUint32(b[16:], uint32(len(data)))
	b = append(b, data...)
	if _, err := c.nc.Write(b); err != nil {
		return fmt.Errorf("reply to option %d: %w", opt, err)
	}
	return nil
}
