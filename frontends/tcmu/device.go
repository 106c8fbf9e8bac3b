package tcmu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/overlaybd-go/overlaybd/core"
)

// DeviceInfo identifies a TCMU device, as parsed from its UIO name
// "tcm-user/<hba id>/<device name>/<config>".
type DeviceInfo struct {
	// Minor is the UIO minor: the device node is /dev/uio<Minor>.
	Minor uint32
	// HBA is the configfs HBA directory name, "user_<hba id>".
	HBA string
	// Name is the configfs device directory name.
	Name string
	// Config is the full configuration string (dev_config), for example
	// "overlaybd//var/lib/overlaybd/dev1/config.v1.json;dev1".
	Config string
	// Path is Config without the handler prefix: the text after the first
	// "/" ("/var/lib/.../config.v1.json;dev1").
	Path string
}

// Image is an opened device image.
type Image struct {
	// File serves the data. The device size is File.Size() rounded down to
	// whole 512-byte blocks. The server closes it when the device goes away.
	File core.File
	// ReadOnly sets the write-protect bit and refuses writes.
	ReadOnly bool
}

// OpenFunc opens the image of a device. It may take long (remote layers);
// every other device keeps serving meanwhile.
type OpenFunc func(ctx context.Context, dev DeviceInfo) (Image, error)

// ParseUIOName splits a TCMU UIO name into its parts. handler is the text of
// the configuration string before its first "/".
func ParseUIOName(name string) (info DeviceInfo, handler string, err error) {
	parts := strings.SplitN(name, "/", 4)
	if len(parts) < 4 || parts[0] != "tcm-user" {
		return info, "", fmt.Errorf("tcmu: UIO name %q is not tcm-user/<hba>/<device>/<config>", name)
	}
	info.HBA = "user_" + parts[1]
	info.Name = parts[2]
	info.Config = parts[3]
	if len(info.HBA) >= 16 || info.Name == "" || len(info.Name) >= 128 {
		return info, "", fmt.Errorf("tcmu: UIO name %q has a bad HBA or device name", name)
	}
	handler, info.Path, _ = strings.Cut(info.Config, "/")
	return info, handler, nil
}

// device is one open TCMU device: its UIO file, the mapped shared region,
// the reader goroutine and the in-flight commands.
type device struct {
	info    DeviceInfo
	srv     *Server
	log     *slog.Logger
	f       *os.File
	mem     []byte
	ring    *Ring
	disk    *Disk
	image   Image
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup // the reader and every command handler
	pending atomic.Int32   // coalesced doorbell
	broken  atomic.Bool
	closeMu sync.Once
}

// mapSize reads /sys/class/uio/uio<minor>/maps/map0/size (C strtoull base 0).
func (s *Server) mapSize(minor uint32) (int, error) {
	p := filepath.Join(s.sysfs, "class/uio", "uio"+strconv.FormatUint(uint64(minor), 10), "maps/map0/size")
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 0, 63)
	if err != nil || n == 0 || n > 1<<40 {
		return 0, fmt.Errorf("bad map size %q in %s", strings.TrimSpace(string(b)), p)
	}
	return int(n), nil
}

// openDevice opens /dev/uio<minor>, maps its shared region and opens the
// image. On success the device serves commands until close.
func (s *Server) openDevice(ctx context.Context, info DeviceInfo) (*device, error) {
	size, err := s.mapSize(info.Minor)
	if err != nil {
		return nil, fmt.Errorf("uio%d map size: %w", info.Minor, err)
	}
	node := filepath.Join(s.devDir, "uio"+strconv.FormatUint(uint64(info.Minor), 10))
	f, err := os.OpenFile(node, os.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", node, err)
	}
	// Reads must go through the poller so that close can interrupt them.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s is not pollable: %w", node, err)
	}
	mem, err := mmapFile(f, size)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("mmap %s (%d bytes): %w", node, size, err)
	}
	ring, err := NewRing(mem)
	if err != nil {
		unix.Munmap(mem)
		f.Close()
		return nil, fmt.Errorf("%s: %w", node, err)
	}
	img, err := s.open(ctx, info)
	if err != nil {
		unix.Munmap(mem)
		f.Close()
		return nil, err
	}
	if img.File == nil || img.File.Size() < BlockSize {
		if img.File != nil {
			img.File.Close()
		}
		unix.Munmap(mem)
		f.Close()
		return nil, fmt.Errorf("image of %s/%s is smaller than one block", info.HBA, info.Name)
	}
	d := &device{info: info, srv: s, f: f, mem: mem, ring: ring, image: img,
		log: s.log.With("dev", info.HBA+"/"+info.Name, "uio", info.Minor)}
	d.disk = &Disk{File: img.File, ReadOnly: img.ReadOnly, Config: info.Config, ReadRetry: s.readRetry,
		Serial: func() (string, error) { return s.unitSerial(info) }, Logger: d.log}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.wg.Add(1)
	go d.serve()
	return d, nil
}

func mmapFile(f *os.File, size int) (mem []byte, err error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	cerr := rc.Control(func(fd uintptr) {
		mem, err = unix.Mmap(int(fd), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	})
	if cerr != nil {
		return nil, cerr
	}
	return mem, err
}

// unitSerial reads the unit serial number from configfs.
func (s *Server) unitSerial(info DeviceInfo) (string, error) {
	b, err := os.ReadFile(filepath.Join(s.configfs, info.HBA, info.Name, "wwn/vpd_unit_serial"))
	if err != nil {
		return "", err
	}
	v := strings.TrimRight(string(b), "\n")
	const prefix = "T10 VPD Unit Serial Number: "
	if len(v) < len(prefix) {
		return "", nil
	}
	return v[len(prefix):], nil
}

// serve is the device's reader: it takes every command from the ring (once
// right away, because commands queued before open raise no event) and then
// again after every UIO event.
func (d *device) serve() {
	defer d.wg.Done()
	var ev [4]byte
	for {
		d.drain()
		if d.ctx.Err() != nil || d.broken.Load() {
			return
		}
		if _, err := d.f.Read(ev[:]); err != nil {
			if d.ctx.Err() != nil {
				return
			}
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			d.log.Error("reading UIO events failed; device stops serving", "err", err)
			return
		}
	}
}

func (d *device) drain() {
	for d.ctx.Err() == nil {
		cmd, ok, err := d.ring.Next()
		if err != nil {
			d.log.Error("command ring is broken; device stops serving", "err", err)
			d.broken.Store(true)
			return
		}
		if !ok {
			return
		}
		d.wg.Add(1)
		go d.handle(cmd)
	}
}

func (d *device) handle(cmd Command) {
	defer d.wg.Done()
	status, sense := d.disk.Execute(d.ctx, cmd.CDB, cmd.Iov)
	if status != StatusGood && d.log.Enabled(d.ctx, slog.LevelDebug) {
		d.log.Debug("command failed", "cdb", fmt.Sprintf("% x", cmd.CDB), "status", status, "sense", fmt.Sprintf("% x", sense))
	}
	if err := d.ring.Complete(cmd.ID, status, sense); err != nil {
		d.log.Error("completing a command failed", "id", cmd.ID, "err", err)
		d.broken.Store(true)
		return
	}
	d.doorbell()
}

// doorbell tells the kernel to reap completions. Concurrent completions are
// coalesced: one write after the last completion covers all of them.
func (d *device) doorbell() {
	if d.pending.Add(1) != 1 {
		return
	}
	var zero [4]byte
	for {
		n := d.pending.Load()
		if _, err := d.f.Write(zero[:]); err != nil && d.ctx.Err() == nil {
			d.log.Warn("UIO doorbell write failed", "err", err)
		}
		if d.pending.CompareAndSwap(n, 0) {
			return
		}
	}
}

// idle reports whether the kernel has no command outstanding in the ring.
func (d *device) idle() bool { return d.ring.Idle() }

// close stops the reader, waits for the commands in flight, closes the
// image and releases the UIO device.
func (d *device) close() error {
	var err error
	d.closeMu.Do(func() {
		d.cancel()
		d.f.SetReadDeadline(time.Now())
		d.wg.Wait()
		err = d.image.File.Close()
		if uerr := unix.Munmap(d.mem); uerr != nil && err == nil {
			err = uerr
		}
		if cerr := d.f.Close(); cerr != nil && err == nil {
			err = cerr
		}
	})
	return err
}
