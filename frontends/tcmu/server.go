package tcmu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Config configures a Server.
type Config struct {
	// Handler is the handler name that configuration strings must start
	// with ("overlaybd" for "overlaybd/<path>").
	Handler string
	// Open opens the image of a new device.
	Open OpenFunc
	// Logger receives the server's logs; nil uses slog.Default.
	Logger *slog.Logger
	// ReadRetry is how long failing reads are retried (see Disk.ReadRetry).
	ReadRetry time.Duration
	// Dial opens a generic netlink connection; nil uses genetlink.Dial.
	// Tests substitute genltest connections.
	Dial func() (Conn, error)
	// Root prefixes the /sys and /dev paths (tests); empty is "/".
	Root string
}

// Conn is the part of a *genetlink.Conn the server uses. Two are opened:
// one joins the multicast group and receives the kernel's events, the
// other carries SET_FEATURES and the replies.
type Conn interface {
	GetFamily(name string) (genetlink.Family, error)
	JoinGroup(group uint32) error
	Receive() ([]genetlink.Message, []netlink.Message, error)
	Execute(m genetlink.Message, family uint16, flags netlink.HeaderFlags) ([]genetlink.Message, error)
	SetReadDeadline(t time.Time) error
	Close() error
}

// Server is the TCMU handler process side: it registers with the kernel's
// TCM-USER netlink family, re-attaches existing devices, and opens, serves
// and closes devices as the kernel announces them.
type Server struct {
	handler   string
	open      OpenFunc
	log       *slog.Logger
	readRetry time.Duration
	dial      func() (Conn, error)
	sysfs     string
	devDir    string
	configfs  string
	params    string

	mu      sync.Mutex
	devices map[uint32]*device
	locks   map[uint32]*sync.Mutex // serialises the events of one minor
	family  genetlink.Family
	cmds    Conn
	wg      sync.WaitGroup
	ready   chan struct{}
}

// Ready is closed once the server has registered with the kernel and
// re-attached the existing devices: from then on new devices are served.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// NewServer returns a Server; Run starts it.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Handler == "" || strings.Contains(cfg.Handler, "/") {
		return nil, fmt.Errorf("tcmu: bad handler name %q", cfg.Handler)
	}
	if cfg.Open == nil {
		return nil, errors.New("tcmu: no Open function")
	}
	s := &Server{handler: cfg.Handler, open: cfg.Open, log: cfg.Logger, readRetry: cfg.ReadRetry, dial: cfg.Dial,
		devices: map[uint32]*device{}, locks: map[uint32]*sync.Mutex{}, ready: make(chan struct{})}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.dial == nil {
		s.dial = func() (Conn, error) { return genetlink.Dial(nil) }
	}
	root := cfg.Root
	if root == "" {
		root = "/"
	}
	s.sysfs = filepath.Join(root, "sys")
	s.devDir = filepath.Join(root, "dev")
	s.configfs = filepath.Join(root, "sys/kernel/config/target/core")
	s.params = filepath.Join(root, "sys/module/target_core_user/parameters")
	return s, nil
}

// Devices returns the number of open devices.
func (s *Server) Devices() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.devices)
}

// Run registers with the kernel and serves until ctx is cancelled, then
// drains and closes every device and returns nil; it returns an error if
// the registration fails.
func (s *Server) Run(ctx context.Context) error {
	// Block new netlink events while existing devices are re-attached, and
	// abort events still waiting for a reply from a previous instance.
	blockable := true
	if err := os.WriteFile(filepath.Join(s.params, "block_netlink"), []byte("1"), 0); err != nil {
		blockable = false
		s.log.Info("kernel without netlink blocking support", "err", err)
	} else {
		_ = os.WriteFile(filepath.Join(s.params, "reset_netlink"), []byte("1"), 0)
	}
	unblock := func() {
		if blockable {
			if err := os.WriteFile(filepath.Join(s.params, "block_netlink"), []byte("0"), 0); err != nil {
				s.log.Error("unblocking netlink failed", "err", err)
			}
			blockable = false
		}
	}
	defer unblock()

	events, err := s.dial()
	if err != nil {
		return fmt.Errorf("tcmu: netlink: %w", err)
	}
	defer events.Close()
	fam, err := events.GetFamily(genlFamily)
	if err != nil {
		return fmt.Errorf("tcmu: netlink family %s (is target_core_user loaded?): %w", genlFamily, err)
	}
	var group uint32
	for _, g := range fam.Groups {
		if g.Name == genlGroup {
			group = g.ID
		}
	}
	if group == 0 {
		return fmt.Errorf("tcmu: netlink family %s has no group %q", genlFamily, genlGroup)
	}
	if err := events.JoinGroup(group); err != nil {
		return fmt.Errorf("tcmu: join netlink group %s/%s: %w", genlFamily, genlGroup, err)
	}
	cmds, err := s.dial()
	if err != nil {
		return fmt.Errorf("tcmu: netlink: %w", err)
	}
	defer cmds.Close()
	s.family, s.cmds = fam, cmds
	if err := s.setFeatures(); err != nil {
		return err
	}

	s.reattach(ctx)
	unblock()

	tuneEvents(events, s.log)

	stop := context.AfterFunc(ctx, func() { events.SetReadDeadline(time.Now()) })
	defer stop()
	s.log.Info("serving TCMU devices", "handler", s.handler, "devices", s.Devices())
	close(s.ready)
	for ctx.Err() == nil {
		msgs, nmsgs, err := events.Receive()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			var ne *netlink.OpError
			if errors.As(err, &ne) && errors.Is(ne.Err, unix.ENOBUFS) {
				s.log.Error("netlink events were lost", "err", err)
				continue
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			s.wg.Wait()
			s.shutdown()
			return fmt.Errorf("tcmu: receiving netlink events: %w", err)
		}
		for i, m := range msgs {
			if nmsgs[i].Header.Type != netlink.HeaderType(fam.ID) {
				continue
			}
			s.dispatch(ctx, m)
		}
	}
	s.wg.Wait()
	s.shutdown()
	return nil
}

// tuneEvents enlarges the event socket's receive buffer to 4 MiB and stops
// it from reporting overruns, as upstream does; failures are only logged.
func tuneEvents(c Conn, log *slog.Logger) {
	if t, isTunable := c.(interface{ SetReadBuffer(int) error }); isTunable {
		if err := t.SetReadBuffer(4 << 20); err != nil {
			log.Warn("enlarging the netlink receive buffer failed", "err", err)
		}
	}
	if t, isTunable := c.(interface {
		SyscallConn() (syscall.RawConn, error)
	}); isTunable {
		if rc, err := t.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) {
				if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20); err != nil {
					log.Debug("SO_RCVBUFFORCE failed", "err", err)
				}
			})
		}
	}
	if t, isTunable := c.(interface {
		SetOption(netlink.ConnOption, bool) error
	}); isTunable {
		if err := t.SetOption(netlink.NoENOBUFS, true); err != nil {
			log.Warn("setting NETLINK_NO_ENOBUFS failed", "err", err)
		}
	}
}

func (s *Server) setFeatures() error {
	ae := netlink.NewAttributeEncoder()
	ae.Uint8(attrSuppKernCmdReply, 1)
	b, err := ae.Encode()
	if err != nil {
		return err
	}
	_, err = s.cmds.Execute(genetlink.Message{Header: genetlink.Header{Command: cmdSetFeatures, Version: genlVersion}, Data: b},
		s.family.ID, netlink.Request|netlink.Acknowledge)
	if err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("tcmu: netlink SET_FEATURES: %w", err)
	}
	return nil
}

// event is a parsed kernel netlink message.
type event struct {
	cmd      uint8
	version  uint8
	name     string
	minor    uint32
	deviceID uint32
	hasID    bool
}

func parseEvent(m genetlink.Message) (ev event, ok bool) {
	ev.cmd, ev.version = m.Header.Command, m.Header.Version
	ad, err := netlink.NewAttributeDecoder(m.Data)
	if err != nil {
		return ev, false
	}
	var hasName, hasMinor bool
	for ad.Next() {
		switch ad.Type() {
		case attrDevice:
			ev.name, hasName = ad.String(), true
		case attrMinor:
			ev.minor, hasMinor = ad.Uint32(), true
		case attrDeviceID:
			ev.deviceID, ev.hasID = ad.Uint32(), true
		}
	}
	if ad.Err() != nil || !hasName || !hasMinor || (ev.version > 1 && !ev.hasID) {
		return ev, false
	}
	return ev, true
}

// dispatch handles one kernel message. Events of different devices run
// concurrently (a slow image open does not hold up other devices); events
// of one device run in order.
func (s *Server) dispatch(ctx context.Context, m genetlink.Message) {
	ev, valid := parseEvent(m)
	if !valid {
		s.log.Warn("dropping malformed TCM-USER message", "cmd", m.Header.Command)
		return
	}
	s.mu.Lock()
	l := s.locks[ev.minor]
	if l == nil {
		l = &sync.Mutex{}
		s.locks[ev.minor] = l
	}
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		l.Lock()
		defer l.Unlock()
		var status int32
		var done uint8
		switch ev.cmd {
		case cmdAddedDevice:
			done = cmdAddedDeviceDone
			status = s.add(ctx, ev.minor, ev.name, false)
		case cmdRemovedDevice:
			done = cmdRemovedDeviceDone
			s.remove(ev.minor)
		case cmdReconfigDevice:
			done = cmdReconfigDeviceDone
			status = -int32(unix.EOPNOTSUPP)
			s.log.Warn("device reconfiguration is not supported", "uio", ev.minor, "name", ev.name)
		default:
			s.log.Warn("ignoring unknown TCM-USER command", "cmd", ev.cmd)
			return
		}
		if ev.version > 1 {
			s.reply(done, status, ev.deviceID)
		}
	}()
}

func (s *Server) reply(cmd uint8, status int32, id uint32) {
	ae := netlink.NewAttributeEncoder()
	ae.Int32(attrCmdStatus, status)
	ae.Uint32(attrDeviceID, id)
	b, err := ae.Encode()
	if err == nil {
		_, err = s.cmds.Execute(genetlink.Message{Header: genetlink.Header{Command: cmd, Version: genlVersion}, Data: b},
			s.family.ID, netlink.Request|netlink.Acknowledge)
	}
	if err != nil {
		s.log.Error("netlink reply failed", "cmd", cmd, "status", status, "device_id", id, "err", err)
	}
}

// add opens a device. reopen is the start-up re-attach of a device that
// already existed (its ring is reset first). It returns the netlink status.
func (s *Server) add(ctx context.Context, minor uint32, name string, reopen bool) int32 {
	log := s.log.With("uio", minor, "name", name)
	info, handler, err := ParseUIOName(name)
	if err != nil {
		log.Error("bad device", "err", err)
		return -int32(unix.ENOENT)
	}
	info.Minor = minor
	if handler != s.handler {
		log.Error("device has no handler here", "handler", handler, "want", s.handler)
		return -int32(unix.ENOENT)
	}
	s.mu.Lock()
	_, exists := s.devices[minor]
	s.mu.Unlock()
	if exists {
		log.Error("device is already open")
		return -int32(unix.EEXIST)
	}
	action := filepath.Join(s.configfs, info.HBA, info.Name, "action")
	if reopen {
		if err := os.WriteFile(filepath.Join(action, "block_dev"), []byte("1"), 0); err != nil {
			log.Warn("blocking the device failed", "err", err)
		} else if err := os.WriteFile(filepath.Join(action, "reset_ring"), []byte("1"), 0); err != nil {
			log.Warn("resetting the ring failed", "err", err)
		}
	}
	start := time.Now()
	d, err := s.openDevice(ctx, info)
	if reopen {
		_ = os.WriteFile(filepath.Join(action, "block_dev"), []byte("0"), 0)
	}
	if err != nil {
		log.Error("opening device failed", "config", info.Config, "err", err)
		return -int32(unix.ENOENT)
	}
	s.mu.Lock()
	s.devices[minor] = d
	s.mu.Unlock()
	log.Info("device opened", "config", info.Config, "size", d.image.File.Size(), "read_only", d.image.ReadOnly,
		"reopen", reopen, "elapsed", time.Since(start).Round(time.Millisecond))
	return 0
}

func (s *Server) remove(minor uint32) {
	s.mu.Lock()
	d := s.devices[minor]
	delete(s.devices, minor)
	s.mu.Unlock()
	if d == nil {
		s.log.Warn("removal of an unknown device", "uio", minor)
		return
	}
	if err := d.close(); err != nil {
		d.log.Error("closing device failed", "err", err)
	} else {
		d.log.Info("device closed")
	}
}

// reattach opens the tcm-user UIO devices that exist already (left by a
// previous instance), in the order of their /dev names.
func (s *Server) reattach(ctx context.Context) {
	entries, err := os.ReadDir(s.devDir)
	if err != nil {
		s.log.Error("listing devices failed", "err", err)
		return
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "uio") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for _, n := range names {
		minor, err := strconv.ParseUint(strings.TrimPrefix(n, "uio"), 10, 32)
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.sysfs, "class/uio", n, "name"))
		if err != nil || !strings.HasPrefix(string(b), "tcm-user") {
			continue
		}
		name := strings.TrimRight(string(b), "\n")
		if st := s.add(ctx, uint32(minor), name, true); st != 0 {
			s.log.Error("re-attaching device failed", "uio", minor, "name", name, "status", syscall.Errno(-st))
		}
	}
}

// shutdown drains and closes every device: block it, wait (bounded) for the
// kernel's outstanding commands, close, unblock.
func (s *Server) shutdown() {
	s.mu.Lock()
	devs := make([]*device, 0, len(s.devices))
	for m, d := range s.devices {
		devs = append(devs, d)
		delete(s.devices, m)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			action := filepath.Join(s.configfs, d.info.HBA, d.info.Name, "action", "block_dev")
			blocked := os.WriteFile(action, []byte("1"), 0) == nil
			deadline := time.Now().Add(30 * time.Second)
			for !d.idle() && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if err := d.close(); err != nil {
				d.log.Error("closing device failed", "err", err)
			}
			if blocked {
				_ = os.WriteFile(action, []byte("0"), 0)
			}
		}()
	}
	wg.Wait()
}
