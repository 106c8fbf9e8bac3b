package plugins

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"golang.org/x/sys/unix"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/plugins/internal/wire"
)

// instance is one running process of a plugin with its data plane.
type instance struct {
	cmd    *exec.Cmd
	client *goplugin.Client
	ctrl   *wire.ControlClient
	info   *wire.Info
	pid    int
	start  time.Time

	mem   []byte // the whole memfd mapping
	lanes lanePool
	all   []*lane

	served atomic.Uint64 // batches answered correctly
	// tally is what the host counted of the blocks this process answered,
	// by wire codec number (1 lz4, 2 zstd): Plugin.Stats carries it over
	// once the process is retired and can no longer be asked.
	tally [3]blockTally

	useMu    sync.RWMutex // held shared while mem is in use; exclusively to unmap
	dead     atomic.Bool
	deadCh   chan struct{}
	deadOnce sync.Once
}

// lane is one doorbell socket and its region of the shared memory. A lane
// carries one batch at a time.
//
// The socket is used with blocking system calls, not through the runtime's
// poller: the thread that waits for a reply is then the one the kernel wakes
// when it comes. Through the poller, every reply also woke the poller's
// thread and the runtime handed the goroutine over, which doubled the host's
// CPU time per 64 KiB block (about 16 µs against 8) and is what a busy
// machine makes slow. SO_RCVTIMEO bounds each wait by the call timeout;
// retiring the instance shuts the socket down, which wakes a waiting thread.
type lane struct {
	fd    int // the host's end of the doorbell socketpair
	mem   []byte
	seq   uint64
	msg   []byte
	reply []byte
	descs []wire.Desc
}

// launch starts a plugin process: it creates the data plane, starts the
// binary through go-plugin (handshake, sha256 check), asks the control
// service for the plugin's description and checks it.
func launch(ctx context.Context, p *Plugin) (in *instance, err error) {
	o := &p.opts
	size := o.lanes * o.laneSize
	memfd, err := unix.MemfdCreate("overlaybd-codec-plugin", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	memFile := os.NewFile(uintptr(memfd), "memfd")
	defer memFile.Close() // the mapping and the child's copy outlive it
	if err := unix.Ftruncate(memfd, int64(size)); err != nil {
		return nil, fmt.Errorf("size memfd: %w", err)
	}
	// Seal the size so that a plugin cannot shrink the file under the
	// host's mapping (which would turn the host's reads into SIGBUS).
	if _, err := unix.FcntlInt(uintptr(memfd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		return nil, fmt.Errorf("seal memfd: %w", err)
	}
	mem, err := unix.Mmap(memfd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap memfd: %w", err)
	}
	in = &instance{mem: mem, lanes: newLanePool(o.lanes), deadCh: make(chan struct{}), start: time.Now()}
	var childFiles []*os.File
	defer func() {
		for _, f := range childFiles {
			f.Close()
		}
		if err != nil {
			in.teardown()
		}
	}()

	dp := wire.DataPlane{MemFD: 3, LaneSize: o.laneSize}
	for i := 0; i < o.lanes; i++ {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return in, fmt.Errorf("lane %d socketpair: %w", i, err)
		}
		childFiles = append(childFiles, os.NewFile(uintptr(fds[1]), fmt.Sprintf("lane%d-plugin", i)))
		ln := &lane{
			fd:    fds[0],
			mem:   mem[i*o.laneSize : (i+1)*o.laneSize : (i+1)*o.laneSize],
			msg:   make([]byte, 0, wire.HeaderSize+wire.MaxBatch*wire.DescSize),
			reply: make([]byte, wire.HeaderSize+wire.MaxBatch*wire.ResultSize+1),
		}
		in.all = append(in.all, ln)
		tv := unix.NsecToTimeval(o.callTimeout.Nanoseconds())
		for _, opt := range []int{unix.SO_RCVTIMEO, unix.SO_SNDTIMEO} {
			if err := unix.SetsockoptTimeval(ln.fd, unix.SOL_SOCKET, opt, &tv); err != nil {
				return in, fmt.Errorf("lane %d socket timeout: %w", i, err)
			}
		}
		in.lanes.put(ln)
		dp.Socks = append(dp.Socks, 3+1+i)
	}

	cmd := exec.Command(p.path, p.cfg.Args...)
	cmd.ExtraFiles = append([]*os.File{memFile}, childFiles...)
	cmd.Env = append(pluginEnv(), wire.EnvDataPlane+"="+dp.String())
	cmd.Dir = "/"
	in.cmd = cmd
	var secure *goplugin.SecureConfig
	if p.cfg.SHA256 != "" {
		sum, err := hex.DecodeString(p.cfg.SHA256)
		if err != nil || len(sum) != sha256.Size {
			return in, fmt.Errorf("sha256 %q is not 64 hexadecimal digits", p.cfg.SHA256)
		}
		secure = &goplugin.SecureConfig{Checksum: sum, Hash: sha256.New()}
	}
	in.client = goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  wire.Handshake,
		Plugins:          wire.PluginSet(nil),
		Cmd:              cmd,
		SecureConfig:     secure,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		Logger:           p.hlog,
		StartTimeout:     o.startTimeout,
		AutoMTLS:         true,
		SkipHostEnv:      true,
	})
	proto, err := in.client.Client()
	if err != nil {
		if errors.Is(err, goplugin.ErrChecksumsDoNotMatch) {
			return in, fmt.Errorf("%w: sha256 of %s is %s, configuration pins %s", ErrUntrusted, p.path, fileSHA256(p.path), p.cfg.SHA256)
		}
		return in, fmt.Errorf("start %s: %w", p.path, err)
	}
	if rc := in.client.ReattachConfig(); rc != nil {
		in.pid = rc.Pid
	}
	raw, err := proto.Dispense(wire.PluginName)
	if err != nil {
		return in, fmt.Errorf("%w: dispense control service: %w", ErrProtocol, err)
	}
	ctrl, ok := raw.(*wire.ControlClient)
	if !ok {
		return in, fmt.Errorf("%w: control service of type %T", ErrProtocol, raw)
	}
	in.ctrl = ctrl
	ictx, cancel := context.WithTimeout(ctx, o.callTimeout)
	defer cancel()
	info, err := ctrl.Info(ictx)
	if err != nil {
		return in, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if info.Protocol != wire.ProtocolVersion {
		return in, fmt.Errorf("%w: plugin speaks data plane protocol %d, host %d", ErrProtocol, info.Protocol, wire.ProtocolVersion)
	}
	if info.MaxBatch <= 0 {
		return in, fmt.Errorf("%w: plugin reports a batch limit of %d", ErrProtocol, info.MaxBatch)
	}
	for _, alg := range p.cfg.Algorithms {
		ci, ok := findCodec(info, alg)
		if !ok {
			return in, fmt.Errorf("plugin does not serve %q (it serves %s)", alg, servedNames(info))
		}
		if want := zfileAlgorithms[alg]; ci.ID != want {
			return in, fmt.Errorf("%w: plugin numbers %q as algorithm %d, ZFile uses %d", ErrProtocol, alg, ci.ID, want)
		}
		if ci.MaxBlock <= 0 || ci.BoundOverhead < 0 {
			return in, fmt.Errorf("%w: plugin reports limits maxBlock %d, bound overhead %d for %q", ErrProtocol, ci.MaxBlock, ci.BoundOverhead, alg)
		}
	}
	in.info = info
	return in, nil
}

func findCodec(info *wire.Info, name string) (wire.CodecInfo, bool) {
	for _, c := range info.Codecs {
		if c.Name == name {
			return c, true
		}
	}
	return wire.CodecInfo{}, false
}

func servedNames(info *wire.Info) string {
	s := ""
	for i, c := range info.Codecs {
		if i > 0 {
			s += ", "
		}
		s += c.Name
	}
	if s == "" {
		return "nothing"
	}
	return s
}

// errGone reports an instance retired before the request could use it.
var errGone = errors.New("plugin instance retired")

// teardown stops the process and releases the data plane once no request
// uses it. It is idempotent.
func (in *instance) teardown() {
	in.deadOnce.Do(func() {
		in.dead.Store(true)
		close(in.deadCh)
		// Shutting the sockets down wakes threads waiting for replies
		// and tells the plugin to exit; they are closed once no request
		// uses them.
		for _, ln := range in.all {
			_ = unix.Shutdown(ln.fd, unix.SHUT_RDWR)
		}
		if in.client != nil {
			// A plugin exits when its doorbells close. One that does not
			// (hung, stopped) is killed: go-plugin's own Kill first asks
			// over gRPC, which a stopped process never answers.
			for deadline := time.Now().Add(500 * time.Millisecond); !in.client.Exited() && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
			if !in.client.Exited() && in.cmd.Process != nil {
				_ = in.cmd.Process.Kill()
				for deadline := time.Now().Add(2 * time.Second); !in.client.Exited() && time.Now().Before(deadline); {
					time.Sleep(5 * time.Millisecond)
				}
			}
			in.client.Kill()
		}
		in.useMu.Lock()
		if in.mem != nil {
			_ = unix.Munmap(in.mem)
			in.mem = nil
		}
		for _, ln := range in.all {
			if ln.fd >= 0 {
				_ = unix.Close(ln.fd)
				ln.fd = -1
			}
		}
		in.useMu.Unlock()
	})
}

// run serves blocks on one lane of the instance, in as many batches as the
// lane needs.
func (in *instance) run(op, id uint8, blocks []core.CodecBlock) error {
	if in.dead.Load() {
		return errGone
	}
	in.useMu.RLock()
	defer in.useMu.RUnlock()
	if in.dead.Load() {
		return errGone
	}
	ln := in.lanes.get(in.deadCh)
	if ln == nil {
		return errGone
	}
	maxBatch := min(in.info.MaxBatch, wire.MaxBatch)
	for len(blocks) > 0 {
		n, err := ln.fit(blocks, maxBatch)
		if err != nil {
			in.lanes.put(ln)
			return err
		}
		if err := ln.exchange(op, id, blocks[:n]); err != nil {
			// A failed exchange leaves the lane out of step with the
			// plugin; the instance is retired with it.
			return err
		}
		in.served.Add(1)
		if int(id) < len(in.tally) {
			in.tally[id].add(op, blocks[:n])
		}
		blocks = blocks[n:]
	}
	in.lanes.put(ln)
	return nil
}

// lanePool hands out the free lanes of an instance, the most recently
// returned first: the plugin's server of that lane is then likely still
// polling its doorbell (see pluginserver), so a request that follows
// another one wakes no sleeping thread.
type lanePool struct {
	free  chan struct{} // one token per lane in stack
	mu    sync.Mutex
	stack []*lane
}

func newLanePool(n int) lanePool {
	return lanePool{free: make(chan struct{}, n), stack: make([]*lane, 0, n)}
}

// get takes a lane, waiting for one to be free; it returns nil once dead
// is closed.
func (p *lanePool) get(dead <-chan struct{}) *lane {
	select {
	case <-p.free:
	case <-dead:
		return nil
	}
	p.mu.Lock()
	ln := p.stack[len(p.stack)-1]
	p.stack = p.stack[:len(p.stack)-1]
	p.mu.Unlock()
	return ln
}

// put returns a lane taken with get (or adds a new one).
func (p *lanePool) put(ln *lane) {
	p.mu.Lock()
	p.stack = append(p.stack, ln)
	p.mu.Unlock()
	p.free <- struct{}{}
}

const align = 64

func alignUp(n int) int { return (n + align - 1) &^ (align - 1) }

// fit returns how many of blocks, from the first, one batch on the lane
// holds.
func (ln *lane) fit(blocks []core.CodecBlock, maxBatch int) (int, error) {
	off := 0
	for i, b := range blocks {
		next := alignUp(off+len(b.Src)) + alignUp(len(b.Dst))
		if next > len(ln.mem) || i == maxBatch {
			if i == 0 {
				return 0, fmt.Errorf("block of %d bytes into %d does not fit the data plane lane of %d bytes: %w", len(b.Src), len(b.Dst), len(ln.mem), core.ErrUnsupported)
			}
			return i, nil
		}
		off = next
	}
	return len(blocks), nil
}

// exchange sends one batch and checks and copies out its reply. Blocks
// must fit the lane (see fit).
func (ln *lane) exchange(op, id uint8, blocks []core.CodecBlock) error {
	ln.seq++
	seq := ln.seq
	msg := wire.AppendHeader(ln.msg[:0], wire.Header{Op: op, Codec: id, Seq: seq, Count: uint32(len(blocks))})
	ln.descs = ln.descs[:0]
	off := 0
	for _, b := range blocks {
		d := wire.Desc{SrcOff: uint32(off), SrcLen: uint32(len(b.Src))}
		copy(ln.mem[off:], b.Src)
		off = alignUp(off + len(b.Src))
		d.DstOff, d.DstCap = uint32(off), uint32(len(b.Dst))
		off = alignUp(off + len(b.Dst))
		msg = wire.AppendDesc(msg, d)
		ln.descs = append(ln.descs, d)
	}
	ln.msg = msg
	n, err := ln.call(msg)
	if err != nil {
		return err
	}
	return collect(ln.reply[:n], wire.Header{Op: op, Codec: id, Seq: seq, Count: uint32(len(blocks))}, ln.descs, ln.mem, blocks)
}

// collect checks the reply to request req, whose blocks had descriptors
// descs on lane memory mem, and copies each block's output into its Dst.
// Nothing is copied out unless its reply checksum matches; a reply that
// breaks the protocol is an error for the whole batch.
func collect(reply []byte, req wire.Header, descs []wire.Desc, mem []byte, blocks []core.CodecBlock) error {
	want := wire.HeaderSize + len(blocks)*wire.ResultSize
	if len(reply) != want {
		return violated(nil, "reply of %d bytes to a batch of %d blocks, want %d", len(reply), len(blocks), want)
	}
	h, err := wire.ParseHeader(reply)
	if err != nil {
		return violated(nil, "reply: %v", err)
	}
	if h != req {
		return violated(nil, "reply header (op %d codec %d seq %d count %d) does not answer (op %d codec %d seq %d count %d)",
			h.Op, h.Codec, h.Seq, h.Count, req.Op, req.Codec, req.Seq, req.Count)
	}
	for i := range blocks {
		b := &blocks[i]
		r := wire.ParseResult(reply, i)
		d := descs[i]
		b.N, b.Err = 0, nil
		switch r.Status {
		case wire.StatusOK:
			if r.N > d.DstCap || int(r.N) > len(b.Dst) {
				return violated(nil, "block %d: reply of %d bytes for a destination of %d", i, r.N, d.DstCap)
			}
			// Copy first, then check the private copy: the plugin can
			// still write the shared memory.
			out := b.Dst[:r.N]
			copy(out, mem[d.DstOff:d.DstOff+r.N])
			if wire.Sum(req.Seq, uint32(i), r.Status, out) != r.Sum {
				clear(out)
				return violated(core.ErrChecksum, "block %d: reply checksum mismatch", i)
			}
			b.N = int(r.N)
		case wire.StatusCorrupt, wire.StatusFailed, wire.StatusBadRequest:
			if r.N != 0 || wire.Sum(req.Seq, uint32(i), r.Status, nil) != r.Sum {
				return violated(core.ErrChecksum, "block %d: error reply with length %d or bad checksum", i, r.N)
			}
			switch r.Status {
			case wire.StatusCorrupt:
				b.Err = fmt.Errorf("codec plugin: block does not decode or does not fit %d bytes: %w", d.DstCap, core.ErrCorrupt)
			case wire.StatusFailed:
				b.Err = fmt.Errorf("%w: codec error (see the plugin's log): %w", ErrPluginFailed, core.ErrCorrupt)
			default:
				b.Err = fmt.Errorf("%w: plugin refused the request: %w", ErrProtocol, core.ErrUnsupported)
			}
		default:
			return violated(nil, "block %d: unknown status %d", i, r.Status)
		}
	}
	return nil
}

// call sends msg on the doorbell and waits for the reply message, which it
// reads into ln.reply.
func (ln *lane) call(msg []byte) (int, error) {
	for {
		_, err := unix.Write(ln.fd, msg)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, ln.ioFailure("ring doorbell", err)
		}
		break
	}
	for {
		n, err := unix.Read(ln.fd, ln.reply)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, ln.ioFailure("wait for reply", err)
		case n == 0:
			return 0, crashed("plugin closed the doorbell")
		}
		return n, nil
	}
}

func (ln *lane) ioFailure(what string, err error) error {
	if errors.Is(err, unix.EAGAIN) { // SO_RCVTIMEO or SO_SNDTIMEO expired
		return &failure{err: fmt.Errorf("%w: %w: %w: %s", ErrPluginFailed, core.ErrCorrupt, ErrTimeout, what)}
	}
	if errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE) {
		return crashed("%s: plugin process went away: %v", what, err)
	}
	return crashed("%s: %v", what, err)
}

// pluginEnv is the part of the host's environment a plugin inherits: what a
// process needs to find its libraries and temporary files, and variables
// meant for plugins (OVERLAYBD_PLUGIN_*), never the rest (a daemon's
// environment may hold credentials).
func pluginEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "PATH", k == "LD_LIBRARY_PATH", k == "TMPDIR", k == "TZ", k == "LANG", strings.HasPrefix(k, "LC_"),
			strings.HasPrefix(k, "OVERLAYBD_PLUGIN_"):
			env = append(env, kv)
		}
	}
	return env
}

// blockTally counts the blocks of one codec a process answered, as the
// plugin's own CodecStats do.
type blockTally struct {
	decompressed, decompressedBytes, compressed, compressedBytes, errors atomic.Uint64
}

func (t *blockTally) add(op uint8, blocks []core.CodecBlock) {
	for _, b := range blocks {
		switch {
		case b.Err != nil:
			t.errors.Add(1)
		case op == wire.OpDecompress:
			t.decompressed.Add(1)
			t.decompressedBytes.Add(uint64(b.N))
		default:
			t.compressed.Add(1)
			t.compressedBytes.Add(uint64(len(b.Src)))
		}
	}
}

// addTo adds the tally to st.
func (t *blockTally) addTo(st *CodecStats) {
	st.Decompressed += t.decompressed.Load()
	st.DecompressedBytes += t.decompressedBytes.Load()
	st.Compressed += t.compressed.Load()
	st.CompressedBytes += t.compressedBytes.Load()
	st.Errors += t.errors.Load()
}
