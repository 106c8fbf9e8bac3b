package matrix

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/overlaybd-go/overlaybd/conformance"
	"github.com/overlaybd-go/overlaybd/conformance/blockdev"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/frontends/tcmu"
)

// The configfs trees of the target core and of the tcm_loop fabric, and the
// HBA the conformance devices are made under.
const (
	tcmuCore = "/sys/kernel/config/target/core"
	tcmuLoop = "/sys/kernel/config/target/loopback"
	tcmuHBA  = "user_424242"
)

// tcmuNote is recorded on every tcmu cell that runs: what its scenario
// cannot check through a SCSI disk.
const tcmuNote = "block status not checked: the TCMU frontend serves no SCSI command that reports allocation " +
	"(GET LBA STATUS), so a block device has no equivalent of NBD's base:allocation"

// tcmuMissing probes, once, what a process needs to serve TCMU devices:
// root, configfs with the target core, target_core_user and tcm_loop. It
// returns what is missing, or "".
var tcmuMissing = sync.OnceValue(func() string {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if st, err := os.Stat(tcmuCore); err != nil || !st.IsDir() {
		missing = append(missing, "configfs mounted with the target core ("+tcmuCore+")")
	}
	for _, m := range []string{"target_core_user", "tcm_loop"} {
		if _, err := os.Stat("/sys/module/" + m); err != nil {
			missing = append(missing, "the "+m+" module")
		}
	}
	return strings.Join(missing, ", ")
})

// tcmuDeclared says why a TCMU cell is not run ("" when it runs).
func tcmuDeclared(c Cell) (Status, string) {
	if c.Frontend != "tcmu" {
		return "", ""
	}
	if m := tcmuMissing(); m != "" {
		return NotRun, "TCMU needs root, configfs and the target_core_user and tcm_loop kernel modules; this process lacks " + m +
			": the tcmu column runs in the VM tier (make conformance-vm: overlaybd-conformance --frontend tcmu in a guest with Debian's kernel)"
	}
	return "", ""
}

// TCMUCounts are a tcmu cell's counters: the devices attached, the
// requests the block-device client sent, and what reached the image through
// the frontends/tcmu Server (the SCSI commands it served, by what they did
// to the file).
type TCMUCounts struct {
	// Attaches are the LUNs made (a device-wide operation detaches and
	// attaches again).
	Attaches int `json:"attaches"`
	// Client are the block-device client's requests.
	Client blockdev.Stats `json:"client"`
	// Served are the image calls the Server made for the kernel's
	// commands.
	Served ServedCounts `json:"served"`
}

// ServedCounts count the calls the TCMU Server made to an image.
type ServedCounts struct {
	Reads, Writes, Discards, Zeroes, Syncs uint64
}

// tcmuEnv is what the tcmu exports of one cell share: the Server (started
// at the first export, stopped with the cell) and the images it opens by
// their configuration key.
type tcmuEnv struct {
	mu      sync.Mutex
	images  map[string]tcmu.Image
	srv     *tcmu.Server
	cancel  context.CancelFunc
	done    chan error
	counts  TCMUCounts
	reads   atomic.Uint64
	writes  atomic.Uint64
	discard atomic.Uint64
	zeroes  atomic.Uint64
	syncs   atomic.Uint64
}

var tcmuSeq atomic.Uint64

func newTCMUEnv() *tcmuEnv { return &tcmuEnv{images: map[string]tcmu.Image{}} }

func (e *tcmuEnv) open(_ context.Context, dev tcmu.DeviceInfo) (tcmu.Image, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	img, ok := e.images[dev.Path]
	if !ok {
		return tcmu.Image{}, fmt.Errorf("no conformance image %q", dev.Path)
	}
	return img, nil
}

// start runs the Server until close.
func (e *tcmuEnv) start() error {
	if e.srv != nil {
		return nil
	}
	srv, err := tcmu.NewServer(tcmu.Config{Handler: "overlaybd", Open: e.open,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		cancel()
		return fmt.Errorf("tcmu server: %w", err)
	case <-time.After(30 * time.Second):
		cancel()
		<-done
		return errors.New("tcmu server not ready in 30 s")
	}
	e.srv, e.cancel, e.done = srv, cancel, done
	return nil
}

// close stops the Server (every export is detached by then) and removes
// the HBA directory when no device is left in it.
func (e *tcmuEnv) close() error {
	if e.srv == nil {
		return nil
	}
	e.cancel()
	var err error
	select {
	case err = <-e.done:
	case <-time.After(60 * time.Second):
		return errors.New("tcmu server did not stop in 60 s")
	}
	_ = os.Remove(filepath.Join(tcmuCore, tcmuHBA)) // fails while another process has devices there
	return err
}

// snapshot returns the cell's counters.
func (e *tcmuEnv) snapshot() TCMUCounts {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.counts
	c.Served = ServedCounts{Reads: e.reads.Load(), Writes: e.writes.Load(), Discards: e.discard.Load(),
		Zeroes: e.zeroes.Load(), Syncs: e.syncs.Load()}
	return c
}

func (e *tcmuEnv) addClient(s blockdev.Stats) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := &e.counts.Client
	t.Reads += s.Reads
	t.Writes += s.Writes
	t.Discards += s.Discards
	t.Zeroes += s.Zeroes
	t.Syncs += s.Syncs
	t.SyncCache += s.SyncCache
	t.ReadBytes += s.ReadBytes
	t.WriteBytes += s.WriteBytes
}

// check fails a cell whose IO did not go through the kernel and the
// Server.
func (e *tcmuEnv) check(name string, writable bool) error {
	c := e.snapshot()
	s := c.Served
	switch {
	case c.Attaches == 0 || c.Client.Reads == 0 || s.Reads == 0:
		return fmt.Errorf("cell %s: no reads reached the image through the TCMU server (counters %+v)", name, c)
	case writable && (c.Client.Writes == 0 || s.Writes == 0):
		return fmt.Errorf("cell %s: no writes reached the image through the TCMU server (counters %+v)", name, c)
	case c.Client.SyncCache > 0 && s.Syncs == 0:
		return fmt.Errorf("cell %s: SYNCHRONIZE CACHE did not reach the image (counters %+v)", name, c)
	case c.Client.Discards > 0 && s.Discards+s.Zeroes+s.Writes == 0:
		return fmt.Errorf("cell %s: discards did not reach the image (counters %+v)", name, c)
	}
	return nil
}

// servedFile is the image handed to the Server: it counts the calls the
// Server makes, and its Close does nothing (the cell owns the file; the
// Server closes images when their device goes away).
type servedFile struct {
	core.File
	env *tcmuEnv
}

func (f servedFile) ReadAt(p []byte, off int64) (int, error) {
	f.env.reads.Add(1)
	return f.File.ReadAt(p, off)
}

func (f servedFile) WriteAt(p []byte, off int64) (int, error) {
	f.env.writes.Add(1)
	return f.File.WriteAt(p, off)
}

func (f servedFile) Sync() error {
	f.env.syncs.Add(1)
	return f.File.Sync()
}

// Discard passes the discard on; a file that cannot discard gets zeros
// written (what tcmu.Disk does for such files).
func (f servedFile) Discard(off, n int64) error {
	f.env.discard.Add(1)
	if d, ok := f.File.(core.Discarder); ok {
		return d.Discard(off, n)
	}
	return f.WriteZeroes(off, n)
}

// WriteZeroes passes the write-zeroes on, or writes zeros.
func (f servedFile) WriteZeroes(off, n int64) error {
	f.env.zeroes.Add(1)
	if z, ok := f.File.(core.ZeroWriter); ok {
		return z.WriteZeroes(off, n)
	}
	zero := make([]byte, min(n, 1<<20))
	for n > 0 {
		c := min(n, int64(len(zero)))
		if _, err := f.File.WriteAt(zero[:c], off); err != nil {
			return err
		}
		off, n = off+c, n-c
	}
	return nil
}

func (servedFile) Close() error { return nil }

// tcmuExport is one file served as a SCSI disk: a TCMU user backstore
// whose image is the file, a tcm_loop LUN over it, and the block-device
// client of the disk the kernel made.
type tcmuExport struct {
	env    *tcmuEnv
	key    string
	dev    string // configfs backstore directory
	wwn    string
	client *blockdev.File
}

func writeAttr(path, val string) error {
	if err := os.WriteFile(path, []byte(val), 0); err != nil {
		return fmt.Errorf("write %q to %s: %w", val, path, err)
	}
	return nil
}

// exportTCMU attaches f as a disk, the way the snapshotter attaches an
// image: backstore, control, enable, tcm_loop target, nexus, LUN link.
func exportTCMU(env *tcmuEnv, f core.File, readOnly bool) (*tcmuExport, error) {
	if err := env.start(); err != nil {
		return nil, err
	}
	seq := tcmuSeq.Add(1)
	x := &tcmuExport{env: env, key: fmt.Sprintf("/conformance/%d/%d", os.Getpid(), seq),
		dev: filepath.Join(tcmuCore, tcmuHBA, fmt.Sprintf("conf_%d_%d", os.Getpid(), seq)),
		wwn: fmt.Sprintf("naa.6%03x%012x", os.Getpid()&0xfff, seq)}
	env.mu.Lock()
	env.images[x.key] = tcmu.Image{File: servedFile{File: f, env: env}, ReadOnly: readOnly}
	env.mu.Unlock()
	if err := x.attach(readOnly); err != nil {
		return nil, errors.Join(fmt.Errorf("attach %s: %w", x.key, err), x.detach())
	}
	env.mu.Lock()
	env.counts.Attaches++
	env.mu.Unlock()
	return x, nil
}

func (x *tcmuExport) attach(readOnly bool) error {
	if err := os.MkdirAll(x.dev, 0o755); err != nil {
		return err
	}
	if err := writeAttr(filepath.Join(x.dev, "control"), "dev_config=overlaybd/"+x.key); err != nil {
		return err
	}
	if err := writeAttr(filepath.Join(x.dev, "control"), "max_data_area_mb=4"); err != nil {
		return err
	}
	// The kernel asks the Server to open the image before enable returns.
	if err := writeAttr(filepath.Join(x.dev, "enable"), "1"); err != nil {
		return err
	}
	if err := writeAttr(filepath.Join(x.dev, "attrib/cmd_time_out"), "60"); err != nil {
		return err
	}
	tpg := filepath.Join(tcmuLoop, x.wwn, "tpgt_1")
	if err := os.MkdirAll(filepath.Join(tpg, "lun/lun_0"), 0o755); err != nil {
		return err
	}
	if err := writeAttr(filepath.Join(tpg, "nexus"), x.wwn); err != nil {
		return err
	}
	if err := os.Symlink(x.dev, filepath.Join(tpg, "lun/lun_0", filepath.Base(x.dev))); err != nil {
		return fmt.Errorf("link the LUN: %w", err)
	}
	addr, err := os.ReadFile(filepath.Join(tpg, "address"))
	if err != nil {
		return err
	}
	blk := "/sys/class/scsi_device/" + strings.TrimSpace(string(addr)) + ":0/device/block"
	disk := ""
	deadline := time.Now().Add(60 * time.Second)
	for disk == "" {
		if es, err := os.ReadDir(blk); err == nil && len(es) > 0 {
			disk = es[0].Name()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no disk appeared under %s in 60 s", blk)
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = writeAttr("/sys/block/"+disk+"/device/timeout", "60")
	// The node refuses to open (ENXIO) until the kernel has read the
	// capacity and registered the disk.
	for {
		c, err := blockdev.Open("/dev/"+disk, readOnly)
		if err == nil {
			x.client = c
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("disk %s not usable in 60 s: %w", disk, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	x.env.mu.Lock()
	size := x.env.images[x.key].File.Size() / tcmu.BlockSize * tcmu.BlockSize
	x.env.mu.Unlock()
	if x.client.Size() != size {
		return fmt.Errorf("disk %s has %d bytes, the image %d", disk, x.client.Size(), size)
	}
	ro, err := os.ReadFile("/sys/block/" + disk + "/ro")
	if err != nil {
		return err
	}
	if want := map[bool]string{true: "1", false: "0"}[readOnly]; strings.TrimSpace(string(ro)) != want {
		return fmt.Errorf("disk %s: /sys/block/%s/ro is %s, want %s (the write-protect bit of the image)", disk, disk,
			strings.TrimSpace(string(ro)), want)
	}
	return nil
}

// detach closes the client and tears the LUN and the backstore down in the
// snapshotter's order (the Server answers the removal and lets go of the
// image); steps whose object does not exist are skipped.
func (x *tcmuExport) detach() error {
	var errs []error
	if x.client != nil {
		x.env.addClient(x.client.Stats())
		errs = append(errs, x.client.Close())
		x.client = nil
	}
	tpg := filepath.Join(tcmuLoop, x.wwn, "tpgt_1")
	for _, p := range []string{filepath.Join(tpg, "lun/lun_0", filepath.Base(x.dev)), filepath.Join(tpg, "lun/lun_0"), tpg,
		filepath.Join(tcmuLoop, x.wwn), x.dev} {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := os.Remove(p); err != nil {
			errs = append(errs, fmt.Errorf("detach: %w", err))
		}
	}
	x.env.mu.Lock()
	delete(x.env.images, x.key)
	x.env.mu.Unlock()
	return errors.Join(errs...)
}

// tcmuReadOnly serves the files of a read-only kind as write-protected
// disks.
type tcmuReadOnly struct {
	conformance.ReadOnlyKind
	env *tcmuEnv
}

func (k tcmuReadOnly) Build(dir string, m *conformance.Model) (core.File, error) {
	f, err := k.ReadOnlyKind.Build(dir, m)
	if err != nil {
		return nil, err
	}
	x, err := exportTCMU(k.env, f, true)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &tcmuFile{File: x.client, export: x, inner: f}, nil
}

// tcmuFile is the disk of an export whose Close also detaches it and
// closes the exported file.
type tcmuFile struct {
	*blockdev.File
	export *tcmuExport
	inner  core.File
}

func (f *tcmuFile) Close() error { return errors.Join(f.export.detach(), f.inner.Close()) }

// tcmuWritable serves the devices of a writable kind as disks.
type tcmuWritable struct {
	conformance.WritableKind
	env *tcmuEnv
}

func (k tcmuWritable) Create(dir string, vsize int64) (conformance.Device, error) {
	d, err := k.WritableKind.Create(dir, vsize)
	if err != nil {
		return nil, err
	}
	return k.export(d)
}

// CreateOver implements conformance.BaseCreator when the wrapped kind does.
func (k tcmuWritable) CreateOver(dir string, m *conformance.Model) (conformance.Device, error) {
	bc, ok := k.WritableKind.(conformance.BaseCreator)
	if !ok {
		return nil, fmt.Errorf("%s: create over lowers: %w", k.Name(), core.ErrUnsupported)
	}
	d, err := bc.CreateOver(dir, m)
	if err != nil {
		return nil, err
	}
	return k.export(d)
}

func (k tcmuWritable) export(d conformance.Device) (conformance.Device, error) {
	// A device that simulates power losses keeps doing so through the
	// disk: the client's Sync reaches its files as SYNCHRONIZE CACHE.
	return reexport(d, "detach the disk", func(f core.File) (view, error) {
		return exportTCMU(k.env, f, false)
	}, true)
}

// File is the client of the disk.
func (x *tcmuExport) File() core.File { return x.client }

func (x *tcmuExport) stop() error { return x.detach() }
