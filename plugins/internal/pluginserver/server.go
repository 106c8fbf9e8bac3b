// Package pluginserver is the plugin side of the codec plugin protocol: it
// maps the data plane handed over at launch, serves batches of blocks from
// each lane's doorbell, computes the reply checksums, answers the control
// service and runs go-plugin's server. The sdk package is its public face;
// test plugins use its hooks to misbehave on purpose.
package pluginserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"golang.org/x/sys/unix"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/plugins/internal/wire"
)

// Options configure Run.
type Options struct {
	// Version is the plugin's own version string, reported by Info.
	Version string
	// MaxBlock is the largest block served (default 64 KiB, ZFile's limit).
	MaxBlock int
	// Logger receives the server's own log lines (default: Logger()).
	Logger *slog.Logger
	// ProtocolVersion overrides wire.ProtocolVersion (tests of the
	// handshake only).
	ProtocolVersion int
	// BeforeBlock, if set, is called before block i of a batch of count
	// blocks is processed (tests: crash or hang mid-batch).
	BeforeBlock func(i, count int)
	// Tamper, if set, may change a reply message and the lane memory after
	// the replies to request msg are computed, and returns the message to
	// send (tests: short, long and corrupted replies).
	Tamper func(msg, reply, lane []byte) []byte
}

// Logger returns a logger whose records the host receives: JSON lines on
// the plugin's standard error in the form go-plugin forwards to the host's
// log.
func Logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				return slog.String("@timestamp", a.Value.Time().Format("2006-01-02T15:04:05.000000Z07:00"))
			case slog.LevelKey:
				lv := a.Value.Any().(slog.Level)
				name := "info"
				switch {
				case lv < slog.LevelInfo:
					name = "debug"
				case lv >= slog.LevelError:
					name = "error"
				case lv >= slog.LevelWarn:
					name = "warn"
				}
				return slog.String("@level", name)
			case slog.MessageKey:
				return slog.String("@message", a.Value.String())
			}
			return a
		},
	}))
}

// ids are the ZFile algorithm numbers of the codecs a plugin may serve.
var ids = map[string]uint8{"lz4": 1, "zstd": 2}

type served struct {
	codec core.Codec
	name  string
	stats struct {
		decompressed, decompressedBytes, compressed, compressedBytes, errors atomic.Uint64
	}
}

type server struct {
	opts    Options
	log     *slog.Logger
	byID    [256]*served
	list    []*served
	batches atomic.Uint64
	calls   atomic.Uint64
}

// Run serves codecs as a codec plugin until the host stops it. It returns
// only on a start-up error (the binary was not started by a host, the data
// plane is unusable, a codec is not a ZFile codec).
func Run(codecs []core.Codec, opts Options) error {
	if opts.MaxBlock <= 0 {
		opts.MaxBlock = 64 << 10
	}
	if opts.Logger == nil {
		opts.Logger = Logger()
	}
	if opts.ProtocolVersion == 0 {
		opts.ProtocolVersion = wire.ProtocolVersion
	}
	s := &server{opts: opts, log: opts.Logger}
	if len(codecs) == 0 {
		return errors.New("codec plugin serves no codec")
	}
	for _, c := range codecs {
		id, ok := ids[c.Name()]
		if !ok {
			return fmt.Errorf("codec %q is not a ZFile codec (lz4, zstd); a plugin cannot add algorithms", c.Name())
		}
		if s.byID[id] != nil {
			return fmt.Errorf("codec %q given twice", c.Name())
		}
		sv := &served{codec: c, name: c.Name()}
		s.byID[id] = sv
		s.list = append(s.list, sv)
	}
	hs := wire.Handshake
	if os.Getenv(hs.MagicCookieKey) != hs.MagicCookieValue {
		return errors.New("this binary is an overlaybd codec plugin: overlaybd binaries start it when codecPlugins in overlaybd.json names it")
	}
	dp, err := wire.DataPlaneFromEnv()
	if err != nil {
		return err
	}
	if err := s.startDataPlane(dp); err != nil {
		return fmt.Errorf("data plane: %w", err)
	}
	names := make([]string, len(s.list))
	for i, sv := range s.list {
		names[i] = sv.name
	}
	s.log.Info("codec plugin serving", "version", opts.Version, "codecs", names, "lanes", len(dp.Socks), "laneSize", dp.LaneSize)
	hs.ProtocolVersion = uint(opts.ProtocolVersion)
	hl := hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: os.Stderr, JSONFormat: true})
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: hs,
		Plugins:         wire.PluginSet(s),
		GRPCServer:      goplugin.DefaultGRPCServer,
		Logger:          hl,
	})
	return nil
}

func (s *server) startDataPlane(dp wire.DataPlane) error {
	var st unix.Stat_t
	if err := unix.Fstat(dp.MemFD, &st); err != nil {
		return fmt.Errorf("memfd %d: %w", dp.MemFD, err)
	}
	size := dp.LaneSize * len(dp.Socks)
	if st.Size < int64(size) {
		return fmt.Errorf("memfd of %d bytes is smaller than %d lanes of %d", st.Size, len(dp.Socks), dp.LaneSize)
	}
	mem, err := unix.Mmap(dp.MemFD, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap memfd: %w", err)
	}
	_ = unix.Close(dp.MemFD)
	for i, fd := range dp.Socks {
		f := os.NewFile(uintptr(fd), fmt.Sprintf("lane%d", i))
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("lane %d socket: %w", i, err)
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			return fmt.Errorf("lane %d: not a unix socket", i)
		}
		lane := mem[i*dp.LaneSize : (i+1)*dp.LaneSize : (i+1)*dp.LaneSize]
		go s.serveLane(uc, lane)
	}
	return nil
}

// serveLane answers the doorbells of one lane. The host closing or shutting
// down its end means the host is gone (or retired this process): the plugin
// exits.
//
// The plugin waits for requests through the runtime's poller, unlike the
// host, which waits for replies in a blocking read: measured interleaved
// with the other peers, a blocking read here made 4 KiB batches of 64 about
// 0.45 of in-process throughput against 0.72–0.77 through the poller, with
// no clear difference at 64 KiB (docs/plugins.md).
func (s *server) serveLane(conn *net.UnixConn, lane []byte) {
	msg := make([]byte, wire.HeaderSize+wire.MaxBatch*wire.DescSize+1)
	reply := make([]byte, 0, wire.HeaderSize+wire.MaxBatch*wire.ResultSize)
	for {
		n, err := conn.Read(msg)
		if err != nil || n == 0 {
			if err != nil && !errors.Is(err, io.EOF) {
				s.log.Error("doorbell read", "err", err)
			}
			os.Exit(0)
		}
		reply = s.batch(msg[:n], reply[:0], lane)
		if s.opts.Tamper != nil {
			reply = s.opts.Tamper(msg[:n], reply, lane)
		}
		if _, err := conn.Write(reply); err != nil {
			s.log.Error("doorbell reply", "err", err)
			os.Exit(0)
		}
	}
}

// batch serves one request message and appends its reply to reply.
func (s *server) batch(msg, reply, lane []byte) []byte {
	h, err := wire.ParseHeader(msg)
	if err != nil || h.Count > wire.MaxBatch || len(msg) != wire.HeaderSize+int(h.Count)*wire.DescSize {
		s.log.Error("malformed doorbell message", "len", len(msg), "err", err)
		h.Count = 0
		return wire.AppendHeader(reply, h)
	}
	s.batches.Add(1)
	reply = wire.AppendHeader(reply, h)
	sv := s.byID[h.Codec]
	for i := 0; i < int(h.Count); i++ {
		if s.opts.BeforeBlock != nil {
			s.opts.BeforeBlock(i, int(h.Count))
		}
		d := wire.ParseDesc(msg, i)
		status, out := uint32(wire.StatusBadRequest), []byte(nil)
		if sv != nil && uint64(d.SrcOff)+uint64(d.SrcLen) <= uint64(len(lane)) && uint64(d.DstOff)+uint64(d.DstCap) <= uint64(len(lane)) {
			src := lane[d.SrcOff : d.SrcOff+d.SrcLen]
			dst := lane[d.DstOff : d.DstOff+d.DstCap : d.DstOff+d.DstCap]
			status, out = s.process(sv, h.Op, dst, src)
		}
		reply = wire.AppendResult(reply, wire.Result{Status: status, N: uint32(len(out)), Sum: wire.Sum(h.Seq, uint32(i), status, out)})
	}
	return reply
}

// process runs one block through a codec and returns its status and output.
func (s *server) process(sv *served, op uint8, dst, src []byte) (status uint32, out []byte) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("codec panicked", "codec", sv.name, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			sv.stats.errors.Add(1)
			status, out = wire.StatusFailed, nil
		}
	}()
	var n int
	var err error
	switch op {
	case wire.OpDecompress:
		n, err = sv.codec.Decompress(dst, src)
	case wire.OpCompress:
		if len(src) > s.opts.MaxBlock {
			err = fmt.Errorf("block of %d bytes exceeds %d: %w", len(src), s.opts.MaxBlock, core.ErrUnsupported)
		} else {
			n, err = sv.codec.Compress(dst, src)
		}
	default:
		return wire.StatusBadRequest, nil
	}
	if err == nil && (n < 0 || n > len(dst)) {
		err = fmt.Errorf("codec returned length %d for a destination of %d", n, len(dst))
	}
	if err != nil {
		sv.stats.errors.Add(1)
		if errors.Is(err, core.ErrCorrupt) {
			return wire.StatusCorrupt, nil
		}
		s.log.Warn("codec failed", "codec", sv.name, "op", op, "err", err)
		return wire.StatusFailed, nil
	}
	if op == wire.OpDecompress {
		sv.stats.decompressed.Add(1)
		sv.stats.decompressedBytes.Add(uint64(n))
	} else {
		sv.stats.compressed.Add(1)
		sv.stats.compressedBytes.Add(uint64(len(src)))
	}
	return wire.StatusOK, dst[:n]
}

// Info implements wire.ControlServer.
func (s *server) Info(context.Context) (*wire.Info, error) {
	info := &wire.Info{Protocol: wire.ProtocolVersion, Version: s.opts.Version, MaxBatch: wire.MaxBatch}
	for _, sv := range s.list {
		info.Codecs = append(info.Codecs, wire.CodecInfo{
			Name: sv.name, ID: int(ids[sv.name]), MaxBlock: s.opts.MaxBlock,
			BoundOverhead: sv.codec.CompressBound(s.opts.MaxBlock) - s.opts.MaxBlock,
		})
	}
	return info, nil
}

// Stats implements wire.ControlServer.
func (s *server) Stats(context.Context) (*wire.Stats, error) {
	st := &wire.Stats{Batches: s.batches.Load(), Calls: s.calls.Load(), Codecs: map[string]wire.CodecStats{}}
	for _, sv := range s.list {
		st.Codecs[sv.name] = wire.CodecStats{
			Decompressed: sv.stats.decompressed.Load(), DecompressedBytes: sv.stats.decompressedBytes.Load(),
			Compressed: sv.stats.compressed.Load(), CompressedBytes: sv.stats.compressedBytes.Load(),
			Errors: sv.stats.errors.Load(),
		}
	}
	return st, nil
}

// Call implements wire.ControlServer: one block per gRPC call.
func (s *server) Call(_ context.Context, r *wire.CallRequest) (*wire.CallReply, error) {
	s.calls.Add(1)
	sv := s.byID[r.Codec]
	if sv == nil || r.DstCap > uint32(4*s.opts.MaxBlock) {
		return &wire.CallReply{Status: wire.StatusBadRequest, Sum: wire.Sum(0, 0, wire.StatusBadRequest, nil)}, nil
	}
	dst := make([]byte, r.DstCap)
	status, out := s.process(sv, r.Op, dst, r.Src)
	return &wire.CallReply{Status: status, Sum: wire.Sum(0, 0, status, out), Data: out}, nil
}
