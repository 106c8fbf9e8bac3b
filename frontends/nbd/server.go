// Package nbd serves core.File values as block devices over the Network
// Block Device protocol, so that qemu, libnbd (nbdinfo, nbdcopy, nbdfuse),
// nbd-client and fio can use an image without any kernel module.
//
// The server speaks fixed-newstyle negotiation only (NBD_OPT_GO, INFO, LIST,
// EXPORT_NAME, ABORT, STRUCTURED_REPLY, LIST/SET_META_CONTEXT with
// base:allocation, NO_ZEROES) and serves READ, WRITE (with FUA), FLUSH,
// TRIM, WRITE_ZEROES, CACHE, BLOCK_STATUS and DISC. Requests of one
// connection are served concurrently (bounded by [Options.MaxInFlight]) and
// replied to as they complete. All connections to one export share its
// File, so a FLUSH on one connection covers writes completed on every
// connection and exports advertise NBD_FLAG_CAN_MULTI_CONN.
//
// Malformed input gets the protocol's error replies; a connection whose
// stream cannot be resynchronised (wrong magic) is dropped alone. The
// server never panics on input.
package nbd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/overlaybd-go/overlaybd/core"
)

// Export is one block device offered by a Server.
type Export struct {
	// Name is what clients ask for; "" is the default export.
	Name string
	// Description is shown by clients that ask for it (nbdinfo).
	Description string
	// File is the content. Writes, discards and zeroing go to it unless
	// ReadOnly is set. Its size is read once, when the export is added.
	File core.File
	// ReadOnly refuses writes with EPERM and advertises the export as
	// read-only.
	ReadOnly bool
	// Alignment is the granularity the File requires of offsets and
	// lengths (0 or 1: none; at most 64 KiB, a power of two). The server
	// still accepts requests of any alignment: it widens unaligned reads
	// and performs unaligned writes by read-modify-write, serialised
	// against the export's other writes.
	Alignment uint32
	// FastReads says that reads of File complete quickly (local storage,
	// page cache): a small read that arrives while no further request is
	// waiting is served on the connection's reader goroutine instead of
	// being handed to a worker, which saves a goroutine wake-up per
	// request. Leave it false when reads may block for long (remote
	// layers): the connection reads no new request meanwhile.
	FastReads bool
}

// Options tune a Server.
type Options struct {
	// MaxRequest bounds the payload of one READ or WRITE (default 32 MiB).
	MaxRequest uint32
	// MaxInFlight bounds the requests one connection has in progress at
	// once (default 64).
	MaxInFlight int
	// MaxInFlightBytes bounds the data buffers (read and write payloads)
	// one connection holds at once (default 64 MiB, at least MaxRequest),
	// so that a client cannot make the server buffer MaxInFlight maximal
	// requests.
	MaxInFlightBytes int64
	// HandshakeTimeout bounds the option negotiation of a connection
	// (default 30 s; negative: none).
	HandshakeTimeout time.Duration
	// Logger receives the server's log lines (nil: slog.Default()).
	Logger *slog.Logger
}

// Default values of Options.
const (
	DefaultMaxRequest       = 32 << 20
	DefaultMaxInFlight      = 64
	DefaultMaxInFlightBytes = 64 << 20
	DefaultHandshakeTimeout = 30 * time.Second
	// DefaultPort is the IANA port of NBD.
	DefaultPort = 10809
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("nbd: server closed")

// export is an Export with its derived, immutable state.
type export struct {
	Export
	size     uint64
	flags    uint16 // transmission flags before per-connection additions
	discard  core.Discarder
	zeroer   core.ZeroWriter
	statuser core.BlockStatuser
	// rmw is held exclusively by unaligned writes (read-modify-write) and
	// shared by every other write, so that no write lands between the
	// read and the write of a read-modify-write.
	rmw sync.RWMutex
}

// Stats are a server's counters since it was created.
type Stats struct {
	// Connections counts accepted connections; Active those open now.
	Connections, Active int64
	// Requests counts requests by command name ("read", "write", "flush",
	// "trim", "cache", "write_zeroes", "block_status").
	Requests map[string]uint64
	// ReadBytes and WriteBytes count the data of successful reads and
	// writes.
	ReadBytes, WriteBytes uint64
	// Errors counts requests answered with an error.
	Errors uint64
}

// counters are the server's live counters.
type counters struct {
	conns, active         atomic.Int64
	byCmd                 [cmdBlockStatus + 1]atomic.Uint64
	readBytes, writeBytes atomic.Uint64
	errors                atomic.Uint64
}

var cmdNames = [...]string{cmdRead: "read", cmdWrite: "write", cmdDisc: "disc", cmdFlush: "flush",
	cmdTrim: "trim", cmdCache: "cache", cmdWriteZeroes: "write_zeroes", cmdBlockStatus: "block_status"}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Connections: s.stats.conns.Load(), Active: s.stats.active.Load(),
		Requests:  map[string]uint64{},
		ReadBytes: s.stats.readBytes.Load(), WriteBytes: s.stats.writeBytes.Load(),
		Errors: s.stats.errors.Load(),
	}
	for i := range s.stats.byCmd {
		if n := s.stats.byCmd[i].Load(); n > 0 {
			st.Requests[cmdNames[i]] = n
		}
	}
	return st
}

// Server serves a fixed set of exports on any number of listeners.
type Server struct {
	stats   counters
	opts    Options
	log     *slog.Logger
	exports map[string]*export
	order   []string // export names in the order given, for NBD_OPT_LIST

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	shutdown  bool
	synced    bool           // the exports were synced by a completed stop
	syncErr   error          // ... with this result
	wg        sync.WaitGroup // connections and Serve loops
	bufs      bufferPool
}

// NewServer returns a server of exports. Export names must be unique.
func NewServer(exports []Export, opts Options) (*Server, error) {
	if opts.MaxRequest == 0 {
		opts.MaxRequest = DefaultMaxRequest
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	if opts.MaxInFlightBytes <= 0 {
		opts.MaxInFlightBytes = DefaultMaxInFlightBytes
	}
	opts.MaxInFlightBytes = max(opts.MaxInFlightBytes, int64(opts.MaxRequest))
	if opts.HandshakeTimeout == 0 {
		opts.HandshakeTimeout = DefaultHandshakeTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{
		opts:      opts,
		log:       log.With("frontend", "nbd"),
		exports:   map[string]*export{},
		listeners: map[net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
	}
	if len(exports) == 0 {
		return nil, errors.New("nbd: no exports")
	}
	for _, e := range exports {
		if e.File == nil {
			return nil, fmt.Errorf("nbd: export %q has no file", e.Name)
		}
		if len(e.Name) > maxStringLen {
			return nil, fmt.Errorf("nbd: export name of %d bytes (max %d)", len(e.Name), maxStringLen)
		}
		if _, dup := s.exports[e.Name]; dup {
			return nil, fmt.Errorf("nbd: export %q given twice", e.Name)
		}
		size := e.File.Size()
		if size < 0 {
			return nil, fmt.Errorf("nbd: export %q: negative size %d", e.Name, size)
		}
		if e.Alignment == 0 {
			e.Alignment = 1
		}
		if e.Alignment&(e.Alignment-1) != 0 || e.Alignment > 64<<10 {
			return nil, fmt.Errorf("nbd: export %q: alignment %d is not a power of two ≤ 64 KiB", e.Name, e.Alignment)
		}
		x := &export{Export: e, size: uint64(size)}
		x.flags = flagHasFlags | flagCanMultiConn | flagSendCache
		if e.ReadOnly {
			x.flags |= flagReadOnly
		} else {
			x.flags |= flagSendFlush | flagSendFUA | flagSendWriteZeroes
			if d, ok := e.File.(core.Discarder); ok {
				x.discard = d
				x.flags |= flagSendTrim
			}
			if z, ok := e.File.(core.ZeroWriter); ok {
				x.zeroer = z
			}
		}
		if b, ok := e.File.(core.BlockStatuser); ok {
			x.statuser = b
		}
		s.exports[e.Name] = x
		s.order = append(s.order, e.Name)
	}
	return s, nil
}

// Serve accepts connections on l until Shutdown or Close, serving each on
// its own goroutine. It returns ErrServerClosed after Shutdown or Close,
// or the listener's error.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			down := s.shutdown
			s.mu.Unlock()
			if down {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed, retrying", "err", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("nbd: accept: %w", err)
		}
		backoff = 0
		c := newConn(s, nc)
		if !s.track(c) {
			return ErrServerClosed
		}
		go s.run(c)
	}
}

// ServeConn serves one already-accepted connection and returns when it ends.
func (s *Server) ServeConn(nc net.Conn) {
	c := newConn(s, nc)
	if s.track(c) {
		s.run(c)
	}
}

// track registers c with the server, or closes it if the server is shutting
// down.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		c.nc.Close()
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.stats.conns.Add(1)
	s.stats.active.Add(1)
	return true
}

// run serves a tracked connection to its end.
func (s *Server) run(c *conn) {
	defer s.wg.Done()
	defer s.stats.active.Add(-1)
	c.serve()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Shutdown stops the server gracefully: listeners close, connections stop
// reading new requests, requests in flight complete and are replied to,
// connections close, and every writable export is synced. If ctx ends
// first, the remaining connections are closed at once (their requests in
// flight still finish before Shutdown returns). Shutdown does not close the
// exports' files: they belong to the caller.
func (s *Server) Shutdown(ctx context.Context) error {
	ctxErr, syncErr := s.stop(ctx)
	return errors.Join(ctxErr, syncErr)
}

// Close closes listeners and connections at once, waits for requests in
// flight to finish, and syncs writable exports.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, syncErr := s.stop(ctx)
	return syncErr
}

// Shutdown's work: it returns ctx's error if connections had to be closed
// early, and the error of syncing the exports.
func (s *Server) stop(ctx context.Context) (ctxErr, syncErr error) {
	s.mu.Lock()
	s.shutdown = true
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.stopReading()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		ctxErr = ctx.Err()
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		<-done
	}
	// Sync once: a later Shutdown or Close (the files may be closed by
	// then) reports the first result.
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.synced {
		s.synced = true
		s.syncErr = s.syncAll()
	}
	return ctxErr, s.syncErr
}

func (s *Server) syncAll() error {
	var errs []error
	for _, name := range s.order {
		x := s.exports[name]
		if x.ReadOnly {
			continue
		}
		if err := x.File.Sync(); err != nil {
			errs = append(errs, fmt.Errorf("nbd: sync export %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
