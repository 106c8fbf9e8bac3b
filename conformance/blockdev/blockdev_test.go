package blockdev_test

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/conformance"
	"github.com/overlaybd-go/overlaybd/conformance/blockdev"
	"github.com/overlaybd-go/overlaybd/core"
)

// loopDevice attaches a new file of size bytes as a loop device and returns
// its node; the device is detached when the test ends. Loop devices need
// root: the test is skipped without it.
func loopDevice(t *testing.T, path string, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, size); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("losetup", "--find", "--show", path).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device: losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// loopKind is a writable kind whose devices are loop devices over sparse
// files, reached through the client: the conformance scenarios check the
// client's reads (any alignment), writes, discards, write-zeroes, refusals
// and concurrency against a real kernel block device.
type loopKind struct{ t *testing.T }

func (loopKind) Name() string     { return "blockdev/loop" }
func (loopKind) Alignment() int64 { return 512 }

func (k loopKind) Create(dir string, vsize int64) (conformance.Device, error) {
	d := &loopDev{t: k.t, path: filepath.Join(dir, "disk")}
	d.node = loopDevice(k.t, d.path, vsize)
	return d, d.Reopen()
}

type loopDev struct {
	t    *testing.T
	path string
	node string
	f    *blockdev.File
}

func (d *loopDev) File() core.File { return d.f }

func (d *loopDev) Reopen() error {
	if d.f != nil {
		if err := d.f.Close(); err != nil {
			return err
		}
	}
	f, err := blockdev.Open(d.node, false)
	d.f = f
	return err
}

func (d *loopDev) Close() error { return d.f.Close() }

func TestLoopDeviceConformance(t *testing.T) {
	seed, err := conformance.Seed()
	if err != nil {
		t.Fatal(err)
	}
	ops := 2000
	if testing.Short() {
		ops = 500
	}
	c, err := conformance.RunWritable(loopKind{t}, t.TempDir(), conformance.WritableOptions{Seed: seed, Ops: ops,
		VirtualSize: 8 << 20, MaxLayers: -1, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if c.Discards == 0 || c.Zeroes == 0 || c.Rejected == 0 || c.Parallel == 0 {
		t.Errorf("the scenario did not exercise every request kind: %+v", c)
	}
}

func TestReadOnlyRefusesWrites(t *testing.T) {
	dir := t.TempDir()
	node := loopDevice(t, filepath.Join(dir, "disk"), 1<<20)
	w, err := blockdev.Open(node, false)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 4096)
	for i := range p {
		p[i] = byte(i*31 + 1)
	}
	if _, err := w.WriteAt(p, 8192); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	if st := w.Stats(); st.Writes != 1 || st.Syncs != 1 || st.SyncCache != 0 {
		t.Errorf("counters %+v: want one write, one fsync and no SYNCHRONIZE CACHE on a loop device", st)
	}
	w.Close()

	f, err := blockdev.Open(node, true)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, 512), 0); !errors.Is(err, core.ErrReadOnly) {
		t.Errorf("WriteAt on a read-only device: %v, want core.ErrReadOnly", err)
	}
	if err := f.Discard(0, 4096); !errors.Is(err, core.ErrReadOnly) {
		t.Errorf("Discard on a read-only device: %v, want core.ErrReadOnly", err)
	}
	if err := f.WriteZeroes(0, 4096); !errors.Is(err, core.ErrReadOnly) {
		t.Errorf("WriteZeroes on a read-only device: %v, want core.ErrReadOnly", err)
	}
	// An unaligned read in the middle and one across the end.
	got := make([]byte, 1000)
	if n, err := f.ReadAt(got, 8192+7); n != len(got) || err != nil {
		t.Fatalf("ReadAt: %d, %v", n, err)
	}
	for i := range got {
		if got[i] != p[7+i] {
			t.Fatalf("byte %d reads %#x, want %#x", 8192+7+i, got[i], p[7+i])
		}
	}
	if n, err := f.ReadAt(got, f.Size()-300); n != 300 || err != io.EOF {
		t.Errorf("ReadAt across the end: %d, %v; want 300, io.EOF", n, err)
	}
}

func TestOpenRefusesFiles(t *testing.T) {
	p := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(p, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if f, err := blockdev.Open(p, true); err == nil {
		f.Close()
		t.Fatal("Open of a regular file succeeded")
	}
}
