//go:build tcmu_kernel

// Tests against a real kernel's target_core_user and tcm_loop. They run as
// root inside the test VM (test/vm, `make test-vm`), built with
// `go test -c -tags tcmu_kernel`; they are not compiled otherwise.

package tcmu

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/engines/psync"
)

const (
	cfgCore = "/sys/kernel/config/target/core"
	cfgLoop = "/sys/kernel/config/target/loopback"
)

func writeAttr(t testing.TB, path, val string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(val), 0); err != nil {
		t.Fatalf("write %q to %s: %v", val, path, err)
	}
}

// images maps configuration paths to the files the test server opens.
type images struct {
	mu    sync.Mutex
	files map[string]Image
	fail  map[string]error
}

func (im *images) open(_ context.Context, dev DeviceInfo) (Image, error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	if err := im.fail[dev.Path]; err != nil {
		return Image{}, err
	}
	img, found := im.files[dev.Path]
	if !found {
		return Image{}, fmt.Errorf("no image %s", dev.Path)
	}
	return img, nil
}

func (im *images) add(path string, img Image) {
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.files == nil {
		im.files = map[string]Image{}
	}
	im.files[path] = img
}

// nopClose keeps the backing file open across device close (restart test).
type nopClose struct{ core.File }

func (nopClose) Close() error { return nil }

func startServer(t testing.TB, im *images) (stop func()) {
	t.Helper()
	if _, err := os.Stat(cfgCore); err != nil {
		t.Fatalf("no TCMU configfs: %v", err)
	}
	srv, err := NewServer(Config{Handler: "overlaybd", Open: im.open, ReadRetry: 0,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("server: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("server not ready in 20s")
	}
	return func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("server did not stop in 60s")
		}
	}
}

func backing(t testing.TB, size int64, seed uint64) (core.File, []byte) {
	t.Helper()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := 0; i < len(data); i += 8 {
		binary.LittleEndian.PutUint64(data[i:], r.Uint64())
	}
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	pf := psync.NewFile(f, nil)
	t.Cleanup(func() { pf.Close() })
	return pf, data
}

type lun struct {
	hba, name, wwn string
	disk           string // sdX
}

// attach replays the snapshotter's configfs sequence and returns the disk.
func attach(t testing.TB, id int, cfg string) (*lun, error) {
	t.Helper()
	l := &lun{hba: "user_999999999", name: fmt.Sprintf("dev_%d", id), wwn: fmt.Sprintf("naa.199%013d", id)}
	dir := filepath.Join(cfgCore, l.hba, l.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	writeAttr(t, filepath.Join(dir, "control"), "dev_config=overlaybd/"+cfg)
	writeAttr(t, filepath.Join(dir, "control"), "max_data_area_mb=4")
	if err := os.WriteFile(filepath.Join(dir, "enable"), []byte("1"), 0); err != nil {
		os.Remove(dir)
		return nil, fmt.Errorf("enable: %w", err)
	}
	writeAttr(t, filepath.Join(dir, "attrib/cmd_time_out"), "60")
	tpg := filepath.Join(cfgLoop, l.wwn, "tpgt_1")
	if err := os.MkdirAll(filepath.Join(tpg, "lun/lun_0"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeAttr(t, filepath.Join(tpg, "nexus"), l.wwn)
	if err := os.Symlink(dir, filepath.Join(tpg, "lun/lun_0", l.name)); err != nil {
		t.Fatalf("link LUN: %v", err)
	}
	addr, err := os.ReadFile(filepath.Join(tpg, "address"))
	if err != nil {
		t.Fatal(err)
	}
	blk := "/sys/class/scsi_device/" + strings.TrimSpace(string(addr)) + ":0/device/block"
	for i := 0; i < 500 && l.disk == ""; i++ {
		if es, err := os.ReadDir(blk); err == nil && len(es) > 0 {
			l.disk = es[0].Name()
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if l.disk == "" {
		t.Fatalf("no block device under %s", blk)
	}
	// The disk is usable once the kernel has read its capacity and
	// registered it: until then opening the node fails with ENXIO.
	for i := 0; ; i++ {
		f, err := os.Open("/dev/" + l.disk)
		if err == nil {
			f.Close()
			break
		}
		if i == 1000 {
			t.Fatalf("disk %s not usable: %v", l.disk, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return l, nil
}

func (l *lun) detach(t testing.TB) {
	t.Helper()
	tpg := filepath.Join(cfgLoop, l.wwn, "tpgt_1")
	for _, step := range []func() error{
		func() error { return os.Remove(filepath.Join(tpg, "lun/lun_0", l.name)) },
		func() error { return os.Remove(filepath.Join(tpg, "lun/lun_0")) },
		func() error { return os.Remove(tpg) },
		func() error { return os.Remove(filepath.Join(cfgLoop, l.wwn)) },
		func() error { return os.Remove(filepath.Join(cfgCore, l.hba, l.name)) },
	} {
		if err := step(); err != nil {
			t.Errorf("detach %s: %v", l.name, err)
		}
	}
}

func alignedBuf(n int) []byte {
	b := make([]byte, n+4096)
	off := 4096 - int(uintptr(unsafe.Pointer(&b[0]))%4096)
	return b[off : off+n]
}

func openDisk(t testing.TB, l *lun, flag int) *os.File {
	t.Helper()
	f, err := os.OpenFile("/dev/"+l.disk, flag|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestKernelReadWriteDiscard(t *testing.T) {
	im := &images{}
	const size = 32 << 20
	file, data := backing(t, size, 1)
	im.add("/img/rw.json", Image{File: file})
	defer startServer(t, im)()
	l, err := attach(t, 1, "/img/rw.json")
	if err != nil {
		t.Fatal(err)
	}
	defer l.detach(t)

	f := openDisk(t, l, os.O_RDWR)
	buf := alignedBuf(1 << 20)
	for off := 0; off < size; off += len(buf) {
		if _, err := f.ReadAt(buf, int64(off)); err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		if !bytes.Equal(buf, data[off:off+len(buf)]) {
			t.Fatalf("data at %d differs from the image", off)
		}
	}
	// Write 3 MiB at an unaligned-to-MiB offset, then read it back from the
	// image file.
	w := alignedBuf(3 << 20)
	for i := range w {
		w[i] = byte(i*7 + 3)
	}
	if _, err := f.WriteAt(w, 5<<20+4096); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(w))
	if _, err := file.ReadAt(got, 5<<20+4096); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, w) {
		t.Fatal("written data did not reach the image")
	}
	// BLKDISCARD: sd sends WRITE SAME(16) with UNMAP; the range reads zeros.
	rng := [2]uint64{9 << 20, 2 << 20}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKDISCARD, uintptr(unsafe.Pointer(&rng))); e != 0 {
		t.Fatalf("BLKDISCARD: %v", e)
	}
	if _, err := file.ReadAt(got[:2<<20], 9<<20); err != nil {
		t.Fatal(err)
	}
	if !allZero(got[:2<<20]) {
		t.Fatal("discarded range of the image is not zero")
	}
	if _, err := f.ReadAt(buf, 9<<20); err != nil {
		t.Fatal(err)
	}
	if !allZero(buf) {
		t.Fatal("discarded range does not read as zeros through the disk")
	}
	if mode, _ := os.ReadFile("/sys/block/" + l.disk + "/queue/discard_max_bytes"); strings.TrimSpace(string(mode)) == "0" {
		t.Error("the kernel did not enable discard on the disk")
	}
}

// sgio sends one CDB through SG_IO and returns the SCSI status and sense.
func sgio(t testing.TB, f *os.File, cdb []byte, dir int32, data []byte) (status byte, sense []byte) {
	t.Helper()
	type sgIOHdr struct {
		InterfaceID    int32
		DxferDirection int32
		CmdLen         uint8
		MxSbLen        uint8
		IovecCount     uint16
		DxferLen       uint32
		Dxferp         uintptr
		Cmdp           uintptr
		Sbp            uintptr
		Timeout        uint32
		Flags          uint32
		PackID         int32
		UsrPtr         uintptr
		Status         uint8
		MaskedStatus   uint8
		MsgStatus      uint8
		SbLenWr        uint8
		HostStatus     uint16
		DriverStatus   uint16
		Resid          int32
		Duration       uint32
		Info           uint32
	}
	sb := make([]byte, 96)
	h := &sgIOHdr{InterfaceID: 'S', DxferDirection: dir, CmdLen: uint8(len(cdb)), MxSbLen: uint8(len(sb)),
		DxferLen: uint32(len(data)), Cmdp: uintptr(unsafe.Pointer(&cdb[0])), Sbp: uintptr(unsafe.Pointer(&sb[0])),
		Timeout: 30000}
	if len(data) > 0 {
		h.Dxferp = uintptr(unsafe.Pointer(&data[0]))
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), 0x2285, uintptr(unsafe.Pointer(h))); e != 0 {
		t.Fatalf("SG_IO % x: %v", cdb, e)
	}
	return h.Status, sb[:h.SbLenWr]
}

const (
	sgNone    = -1
	sgToDev   = -2
	sgFromDev = -3
)

func TestKernelSCSI(t *testing.T) {
	im := &images{}
	const size = 8 << 20
	file, data := backing(t, size, 2)
	im.add("/img/scsi.json;dev2", Image{File: file})
	defer startServer(t, im)()
	l, err := attach(t, 2, "/img/scsi.json;dev2")
	if err != nil {
		t.Fatal(err)
	}
	defer l.detach(t)
	f := openDisk(t, l, os.O_RDWR)

	in := make([]byte, 255)
	if st, sn := sgio(t, f, []byte{0x12, 0, 0, 0, 255, 0}, sgFromDev, in); st != 0 {
		t.Fatalf("INQUIRY: status %#x sense % x", st, sn)
	}
	if string(in[8:16]) != "LIO-ORG " || in[2] != 5 {
		t.Errorf("INQUIRY data % x", in[:36])
	}
	if st, sn := sgio(t, f, []byte{0x12, 1, 0x83, 0, 255, 0}, sgFromDev, in); st != 0 {
		t.Fatalf("INQUIRY 0x83: status %#x sense % x", st, sn)
	}
	if !bytes.Contains(in, []byte("overlaybd//img/scsi.json;dev2\x00")) {
		t.Errorf("VPD 0x83 lacks the configuration string: % x", in)
	}
	rc := make([]byte, 32)
	if st, _ := sgio(t, f, []byte{0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}, sgFromDev, rc); st != 0 ||
		binary.BigEndian.Uint64(rc) != size/512-1 || binary.BigEndian.Uint32(rc[8:]) != 512 || rc[14] != 0xc0 {
		t.Errorf("READ CAPACITY(16): status %d data % x", st, rc)
	}
	// UNMAP of blocks 100..119 and 4000..4007.
	p := make([]byte, 8+32)
	binary.BigEndian.PutUint16(p[0:], 6+32)
	binary.BigEndian.PutUint16(p[2:], 32)
	binary.BigEndian.PutUint64(p[8:], 100)
	binary.BigEndian.PutUint32(p[16:], 20)
	binary.BigEndian.PutUint64(p[24:], 4000)
	binary.BigEndian.PutUint32(p[32:], 8)
	if st, sn := sgio(t, f, []byte{0x42, 0, 0, 0, 0, 0, 0, 0, byte(len(p)), 0}, sgToDev, p); st != 0 {
		t.Fatalf("UNMAP: status %#x sense % x", st, sn)
	}
	got := make([]byte, 20*512)
	file.ReadAt(got, 100*512)
	if !allZero(got) {
		t.Error("UNMAP did not zero blocks 100..119")
	}
	file.ReadAt(got[:512], 99*512)
	if !bytes.Equal(got[:512], data[99*512:100*512]) {
		t.Error("UNMAP touched block 99")
	}
	// WRITE SAME(16) without UNMAP, a pattern over 16 blocks at 200.
	blk := bytes.Repeat([]byte{0xa5, 0x5a}, 256)
	if st, sn := sgio(t, f, []byte{0x93, 0, 0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 0, 16, 0, 0}, sgToDev, blk); st != 0 {
		t.Fatalf("WRITE SAME(16): status %#x sense % x", st, sn)
	}
	got = make([]byte, 16*512)
	file.ReadAt(got, 200*512)
	if !bytes.Equal(got, bytes.Repeat(blk, 16)) {
		t.Error("WRITE SAME pattern not in the image")
	}
	// READ(16) past the end: ILLEGAL REQUEST, LBA OUT OF RANGE.
	rd := make([]byte, 512)
	cdb := []byte{0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0}
	binary.BigEndian.PutUint64(cdb[2:], size/512)
	if st, sn := sgio(t, f, cdb, sgFromDev, rd); st != StatusCheckCondition || len(sn) < 14 || sn[2]&0xf != 5 || sn[12] != 0x21 {
		t.Errorf("READ past the end: status %#x sense % x", st, sn)
	}
	// An opcode nobody handles: INVALID COMMAND OPERATION CODE.
	if st, sn := sgio(t, f, []byte{0x1b, 0, 0, 0, 1, 0}, sgNone, nil); st != StatusCheckCondition || len(sn) < 14 || sn[12] != 0x20 {
		t.Errorf("START STOP UNIT: status %#x sense % x", st, sn)
	}
}

// badFile fails reads of its second MiB with a checksum error.
type badFile struct{ core.File }

func (b badFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 2<<20 && off+int64(len(p)) > 1<<20 {
		return 0, fmt.Errorf("block at %d: %w", off, core.ErrChecksum)
	}
	return b.File.ReadAt(p, off)
}

func TestKernelReadOnlyAndCorrupt(t *testing.T) {
	im := &images{}
	file, data := backing(t, 4<<20, 3)
	im.add("/img/ro.json", Image{File: badFile{file}, ReadOnly: true})
	defer startServer(t, im)()
	l, err := attach(t, 3, "/img/ro.json")
	if err != nil {
		t.Fatal(err)
	}
	defer l.detach(t)
	if ro, _ := os.ReadFile("/sys/block/" + l.disk + "/ro"); strings.TrimSpace(string(ro)) != "1" {
		t.Errorf("disk of a read-only image has ro=%q", ro)
	}
	if _, err := os.OpenFile("/dev/"+l.disk, os.O_RDWR, 0); err == nil {
		t.Error("read-write open of a write-protected disk succeeded")
	}
	f := openDisk(t, l, os.O_RDONLY)
	buf := alignedBuf(1 << 20)
	if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data[:1<<20]) {
		t.Fatalf("read of the good range: %v", err)
	}
	if _, err := f.ReadAt(buf[:4096], 1<<20); err == nil {
		t.Fatal("read of a range failing its checksum returned data")
	}
	st, sn := sgio(t, f, []byte{0x28, 0, 0, 0, 0x08, 0, 0, 0, 1, 0}, sgFromDev, make([]byte, 512))
	if st != StatusCheckCondition || len(sn) < 14 || sn[2]&0xf != 3 || sn[12] != 0x11 {
		t.Errorf("READ of a corrupt block: status %#x sense % x, want MEDIUM ERROR 11 00", st, sn)
	}
	st, sn = sgio(t, f, []byte{0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0}, sgToDev, make([]byte, 512))
	if st != StatusCheckCondition || len(sn) < 14 || sn[2]&0xf != 5 {
		t.Errorf("WRITE to a read-only image: status %#x sense % x", st, sn)
	}
}

func TestKernelOpenFailure(t *testing.T) {
	im := &images{fail: map[string]error{"/img/missing.json": errors.New("layer missing")}}
	good, _ := backing(t, 4<<20, 4)
	im.add("/img/good.json", Image{File: good})
	defer startServer(t, im)()
	_, err := attach(t, 4, "/img/missing.json")
	if !errors.Is(err, unix.ENOENT) {
		t.Fatalf("enable of a device whose image fails: %v, want ENOENT", err)
	}
	l, err := attach(t, 5, "/img/good.json")
	if err != nil {
		t.Fatalf("a good device after a bad one: %v", err)
	}
	defer l.detach(t)
	f := openDisk(t, l, os.O_RDONLY)
	if _, err := f.ReadAt(alignedBuf(4096), 0); err != nil {
		t.Fatal(err)
	}
}

func TestKernelManyDevices(t *testing.T) {
	const n = 32
	im := &images{}
	datas := make([][]byte, n)
	for i := range n {
		var file core.File
		file, datas[i] = backing(t, 2<<20, uint64(100+i))
		im.add(fmt.Sprintf("/img/many%d.json", i), Image{File: file})
	}
	defer startServer(t, im)()
	luns := make([]*lun, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := attach(t, 100+i, fmt.Sprintf("/img/many%d.json", i))
			if err != nil {
				errs <- fmt.Errorf("device %d: %w", i, err)
				return
			}
			luns[i] = l
			f, err := os.OpenFile("/dev/"+l.disk, os.O_RDWR|unix.O_DIRECT, 0)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			buf := alignedBuf(64 << 10)
			for j := range buf {
				buf[j] = byte(i + j)
			}
			if _, err := f.WriteAt(buf, int64(i)*4096); err != nil {
				errs <- err
				return
			}
			copy(datas[i][i*4096:], buf)
			got := alignedBuf(2 << 20)
			if _, err := f.ReadAt(got, 0); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, datas[i]) {
				errs <- fmt.Errorf("device %d: data differs", i)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, l := range luns {
		if l != nil {
			l.detach(t)
		}
	}
}

func TestKernelRestart(t *testing.T) {
	im := &images{}
	file, data := backing(t, 4<<20, 5)
	im.add("/img/restart.json", Image{File: nopClose{file}})
	stop := startServer(t, im)
	l, err := attach(t, 6, "/img/restart.json")
	if err != nil {
		t.Fatal(err)
	}
	// A reader keeps going while the server is stopped and started again.
	ctx, cancel := context.WithCancel(context.Background())
	readErr := make(chan error, 1)
	go func() {
		f, err := os.OpenFile("/dev/"+l.disk, os.O_RDONLY|unix.O_DIRECT, 0)
		if err != nil {
			readErr <- err
			return
		}
		defer f.Close()
		buf := alignedBuf(64 << 10)
		for i := 0; ctx.Err() == nil; i++ {
			off := int64(i%64) * int64(len(buf))
			if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
				readErr <- fmt.Errorf("read %d at %d: %w", i, off, err)
				return
			}
			if !bytes.Equal(buf, data[off:off+int64(len(buf))]) {
				readErr <- fmt.Errorf("read %d at %d: wrong data", i, off)
				return
			}
		}
		readErr <- nil
	}()
	time.Sleep(300 * time.Millisecond)
	stop()
	time.Sleep(500 * time.Millisecond)
	stop = startServer(t, im)
	time.Sleep(500 * time.Millisecond)
	cancel()
	if err := <-readErr; err != nil {
		t.Error(err)
	}
	l.detach(t)
	stop()
}
