package tcmu

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/genetlink/genltest"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// testConn is a genltest connection that also accepts JoinGroup and whose
// SetReadDeadline ends a blocked Receive, as a socket's does.
type testConn struct {
	*genetlink.Conn
	k *fakeNetlink
}

func (c *testConn) JoinGroup(g uint32) error {
	c.k.mu.Lock()
	defer c.k.mu.Unlock()
	c.k.joined = append(c.k.joined, g)
	return nil
}

// Receive stamps multicast messages with the family's id, as the kernel
// does (genltest leaves the netlink type zero).
func (c *testConn) Receive() ([]genetlink.Message, []netlink.Message, error) {
	msgs, nmsgs, err := c.Conn.Receive()
	for i := range nmsgs {
		nmsgs[i].Header.Type = netlink.HeaderType(c.k.fam.ID)
	}
	return msgs, nmsgs, err
}

func (c *testConn) SetReadDeadline(time.Time) error {
	c.k.stopOnce.Do(func() { close(c.k.stop) })
	return nil
}

// fakeNetlink is the kernel's TCM-USER family: it multicasts the queued
// events and records what the daemon sends.
type fakeNetlink struct {
	fam      genetlink.Family
	events   chan genetlink.Message
	stop     chan struct{}
	stopOnce sync.Once
	mu       sync.Mutex
	joined   []uint32
	sent     []genetlink.Message
	flags    []netlink.HeaderFlags
	replies  chan genetlink.Message
}

func newFakeNetlink() *fakeNetlink {
	return &fakeNetlink{
		fam:     genetlink.Family{ID: 0x1d, Version: 2, Name: genlFamily, Groups: []genetlink.MulticastGroup{{ID: 3, Name: "other"}, {ID: 7, Name: genlGroup}}},
		events:  make(chan genetlink.Message, 16),
		stop:    make(chan struct{}),
		replies: make(chan genetlink.Message, 16),
	}
}

func (k *fakeNetlink) dial() (Conn, error) {
	fn := genltest.ServeFamily(k.fam, func(greq genetlink.Message, nreq netlink.Message) ([]genetlink.Message, error) {
		if nreq.Header.Length == 0 { // a Receive: deliver the next multicast event
			select {
			case ev := <-k.events:
				return []genetlink.Message{ev}, nil
			case <-k.stop:
				return nil, os.ErrDeadlineExceeded
			}
		}
		k.mu.Lock()
		k.sent = append(k.sent, greq)
		k.flags = append(k.flags, nreq.Header.Flags)
		k.mu.Unlock()
		if greq.Header.Command != cmdSetFeatures {
			k.replies <- greq
		}
		return []genetlink.Message{{Header: greq.Header}}, nil
	})
	return &testConn{Conn: genltest.Dial(fn), k: k}, nil
}

func eventMsg(t *testing.T, cmd, version uint8, attrs func(ae *netlink.AttributeEncoder)) genetlink.Message {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	attrs(ae)
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return genetlink.Message{Header: genetlink.Header{Command: cmd, Version: version}, Data: b}
}

func deviceAttrs(name string, minor, id uint32, withID bool) func(ae *netlink.AttributeEncoder) {
	return func(ae *netlink.AttributeEncoder) {
		if name != "" {
			ae.String(attrDevice, name)
		}
		ae.Uint32(attrMinor, minor)
		if withID {
			ae.Uint32(attrDeviceID, id)
		}
	}
}

type replyAttrs struct {
	status int32
	id     uint32
}

func decodeReply(t *testing.T, m genetlink.Message) replyAttrs {
	t.Helper()
	ad, err := netlink.NewAttributeDecoder(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	var r replyAttrs
	for ad.Next() {
		switch ad.Type() {
		case attrCmdStatus:
			r.status = ad.Int32()
		case attrDeviceID:
			r.id = ad.Uint32()
		}
	}
	return r
}

func mkfile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestNetlinkProtocol(t *testing.T) {
	root := t.TempDir()
	params := filepath.Join(root, "sys/module/target_core_user/parameters")
	mkfile(t, filepath.Join(params, "block_netlink"), "")
	mkfile(t, filepath.Join(params, "reset_netlink"), "")
	// A device left by a previous instance: re-attach blocks it, resets its
	// ring and unblocks it (here its UIO mapping is missing, so it fails).
	mkfile(t, filepath.Join(root, "dev/uio0"), "")
	mkfile(t, filepath.Join(root, "dev/uio1"), "")
	mkfile(t, filepath.Join(root, "sys/class/uio/uio0/name"), "tcm-user/5/vol/overlaybd//x.json\n")
	mkfile(t, filepath.Join(root, "sys/class/uio/uio1/name"), "uio_pci_generic\n")
	action := filepath.Join(root, "sys/kernel/config/target/core/user_5/vol/action")
	mkfile(t, filepath.Join(action, "block_dev"), "")
	mkfile(t, filepath.Join(action, "reset_ring"), "")

	k := newFakeNetlink()
	opened := 0
	srv, err := NewServer(Config{Handler: "overlaybd", Root: root, Dial: k.dial,
		Logger: slog.New(slog.DiscardHandler),
		Open: func(context.Context, DeviceInfo) (Image, error) {
			opened++
			return Image{}, errors.New("unreachable")
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(params, "block_netlink")); got != "0" {
		t.Errorf("block_netlink after start-up: %q", got)
	}
	if got := readFile(t, filepath.Join(params, "reset_netlink")); got != "1" {
		t.Errorf("reset_netlink: %q", got)
	}
	if got := readFile(t, filepath.Join(action, "reset_ring")); got != "1" {
		t.Errorf("re-attach did not reset the ring: %q", got)
	}
	if got := readFile(t, filepath.Join(action, "block_dev")); got != "0" {
		t.Errorf("re-attach left the device blocked: %q", got)
	}

	const eno, eop = -int32(unix.ENOENT), -int32(unix.EOPNOTSUPP)
	for _, ev := range []genetlink.Message{
		eventMsg(t, cmdAddedDevice, 2, deviceAttrs("tcm-user/1/d1/other//x.json", 3, 11, true)),     // another handler
		eventMsg(t, cmdAddedDevice, 2, deviceAttrs("tcm-user/1/d2/overlaybd//x.json", 4, 12, true)), // no UIO device
		eventMsg(t, cmdAddedDevice, 2, deviceAttrs("tcm-user/1/d3", 5, 13, true)),                   // no config
		eventMsg(t, cmdAddedDevice, 2, deviceAttrs("tcm-user/1/d4/overlay//x.json", 6, 14, true)),   // prefix of the handler
		eventMsg(t, cmdReconfigDevice, 2, deviceAttrs("tcm-user/1/d5/overlaybd//x.json", 7, 15, true)),
		eventMsg(t, cmdRemovedDevice, 2, deviceAttrs("tcm-user/1/d6/overlaybd//x.json", 8, 16, true)), // unknown device
		eventMsg(t, cmdAddedDevice, 2, deviceAttrs("tcm-user/1/d7/overlaybd//x.json", 9, 0, false)),   // v2 without id: dropped
		eventMsg(t, cmdAddedDevice, 2, deviceAttrs("", 10, 18, true)),                                 // no name: dropped
		eventMsg(t, cmdAddedDevice, 1, deviceAttrs("tcm-user/1/d9/other//x.json", 11, 0, false)),      // v1: no reply
		eventMsg(t, cmdReconfigDevice, 2, deviceAttrs("tcm-user/1/d10/overlaybd//x.json", 12, 99, true)),
	} {
		k.events <- ev
	}
	want := map[uint32]replyAttrs{11: {eno, 11}, 12: {eno, 12}, 13: {eno, 13}, 14: {eno, 14}, 15: {eop, 15}, 16: {0, 16}, 99: {eop, 99}}
	wantCmd := map[uint32]uint8{11: cmdAddedDeviceDone, 12: cmdAddedDeviceDone, 13: cmdAddedDeviceDone, 14: cmdAddedDeviceDone,
		15: cmdReconfigDeviceDone, 16: cmdRemovedDeviceDone, 99: cmdReconfigDeviceDone}
	got := map[uint32]replyAttrs{}
	for len(got) < len(want) {
		select {
		case m := <-k.replies:
			r := decodeReply(t, m)
			if m.Header.Version != genlVersion || m.Header.Command != wantCmd[r.id] {
				t.Errorf("reply for %d: command %d version %d", r.id, m.Header.Command, m.Header.Version)
			}
			got[r.id] = r
		case <-time.After(10 * time.Second):
			t.Fatalf("replies so far %v, want %v", got, want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	close(k.replies)
	for m := range k.replies {
		t.Errorf("unexpected reply %+v", decodeReply(t, m))
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("reply for %d: %+v, want %+v", id, got[id], w)
		}
	}
	if opened != 0 {
		t.Errorf("Open called %d times for devices that cannot open", opened)
	}
	if len(k.joined) != 1 || k.joined[0] != 7 {
		t.Errorf("joined groups %v, want [7]", k.joined)
	}
	sf := k.sent[0]
	if sf.Header.Command != cmdSetFeatures || sf.Header.Version != 2 || k.flags[0]&netlink.Acknowledge == 0 {
		t.Errorf("first message %+v flags %v, want SET_FEATURES v2 with ACK", sf.Header, k.flags[0])
	}
	ad, _ := netlink.NewAttributeDecoder(sf.Data)
	if !ad.Next() || ad.Type() != attrSuppKernCmdReply || ad.Uint8() != 1 {
		t.Errorf("SET_FEATURES attributes % x", sf.Data)
	}
}

func TestNetlinkMissingFamily(t *testing.T) {
	dial := func() (Conn, error) {
		return &testConn{Conn: genltest.Dial(func(genetlink.Message, netlink.Message) ([]genetlink.Message, error) {
			return nil, genltest.Error(int(unix.ENOENT))
		}), k: newFakeNetlink()}, nil
	}
	srv, err := NewServer(Config{Handler: "overlaybd", Root: t.TempDir(), Dial: dial, Logger: slog.New(slog.DiscardHandler),
		Open: func(context.Context, DeviceInfo) (Image, error) { return Image{}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Run(context.Background()); err == nil {
		t.Fatal("Run without the TCM-USER family succeeded")
	}
}

func TestParseUIOName(t *testing.T) {
	info, h, err := ParseUIOName("tcm-user/999999999/dev_12/overlaybd//var/lib/a/config.v1.json;12")
	if err != nil || h != "overlaybd" || info.HBA != "user_999999999" || info.Name != "dev_12" ||
		info.Config != "overlaybd//var/lib/a/config.v1.json;12" || info.Path != "/var/lib/a/config.v1.json;12" {
		t.Fatalf("%+v %q %v", info, h, err)
	}
	for _, bad := range []string{"", "tcm-user/1/d", "uio/1/d/overlaybd/x", "tcm-user/1234567890123/d/overlaybd/x", "tcm-user/1//overlaybd/x"} {
		if _, _, err := ParseUIOName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestNewServerChecks(t *testing.T) {
	if _, err := NewServer(Config{Handler: "a/b", Open: func(context.Context, DeviceInfo) (Image, error) { return Image{}, nil }}); err == nil {
		t.Error("handler with a slash accepted")
	}
	if _, err := NewServer(Config{Handler: "overlaybd"}); err == nil {
		t.Error("no Open accepted")
	}
}
