package mkfs

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
)

// needTool finds an e2fsprogs program; a missing one skips the test unless
// OVERLAYBD_REQUIRE_TOOLS=1 makes it a failure.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := findTool("")
	if name != "mkfs.ext4" {
		p, err = exec.LookPath(name)
		if err != nil {
			for _, d := range []string{"/sbin/", "/usr/sbin/"} {
				if _, e := os.Stat(d + name); e == nil {
					p, err = d+name, nil
				}
			}
		}
	}
	if err != nil {
		if os.Getenv("OVERLAYBD_REQUIRE_TOOLS") == "1" {
			t.Fatalf("%s is required: %v", name, err)
		}
		t.Skipf("%s not installed (apt-get install e2fsprogs)", name)
	}
	return p
}

func newLayer(t *testing.T, vsize int64) *lsmt.Writable {
	t.Helper()
	dir := t.TempDir()
	open := func(name string) *os.File {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	w, err := lsmt.Create(psync.NewFile(open("data"), nil), psync.NewFile(open("index"), nil), lsmt.CreateOptions{VirtualSize: vsize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// dump copies the device into a sparse raw file for the e2fsprogs tools.
func dump(t *testing.T, r io.ReaderAt, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "dev.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		if _, err := r.ReadAt(buf, off); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !allZero(buf) {
			if _, err := f.WriteAt(buf, off); err != nil {
				t.Fatal(err)
			}
		}
	}
	return p
}

// TestExt4OnLayer makes a file system on a new LSMT layer and checks it
// with e2fsck and debugfs: upstream's parameters, a clean file system, and
// a layer holding metadata only.
func TestExt4OnLayer(t *testing.T) {
	needTool(t, "mkfs.ext4")
	e2fsck := needTool(t, "e2fsck")
	debugfs := needTool(t, "debugfs")
	const size = 1 << 30
	w := newLayer(t, size)
	if err := Ext4(context.Background(), w, size, Options{TempDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	var mapped int64
	for _, m := range w.Mappings() {
		mapped += int64(m.Length) * 512
	}
	if mapped == 0 || mapped > 16<<20 {
		t.Errorf("layer maps %d bytes after mkfs of %d bytes: want a few MB of metadata", mapped, size)
	}
	raw := dump(t, w, size)
	if out, err := exec.Command(e2fsck, "-fn", raw).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}
	out, err := exec.Command(debugfs, "-R", "stats", raw).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs stats: %v\n%s", err, out)
	}
	stats := string(out)
	for _, want := range []string{"Block size:               4096", "Inode size:	          256",
		"64bit", "sparse_super2", "flex_bg", "extent", "dir_index", "huge_file", "extra_isize"} {
		if !strings.Contains(stats, want) {
			t.Errorf("debugfs stats lacks %q", want)
		}
	}
	if strings.Contains(stats, "has_journal") {
		t.Error("the file system has a journal; upstream's has none")
	}
	// One inode per 16 KiB.
	if !strings.Contains(stats, "Inode count:              65536") {
		t.Errorf("inode count is not size/16384:\n%s", stats)
	}
	ls, err := exec.Command(debugfs, "-R", "ls -l /", raw).CombinedOutput()
	if err != nil || !bytes.Contains(ls, []byte("lost+found")) {
		t.Errorf("no lost+found in the root directory: %v\n%s", err, ls)
	}
}

// TestExt4Large checks that a 64 GiB device costs megabytes, not gigabytes.
func TestExt4Large(t *testing.T) {
	needTool(t, "mkfs.ext4")
	const size = 64 << 30
	w := newLayer(t, size)
	if err := Ext4(context.Background(), w, size, Options{TempDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	var mapped int64
	for _, m := range w.Mappings() {
		mapped += int64(m.Length) * 512
	}
	if mapped == 0 || mapped > 64<<20 {
		t.Errorf("64 GiB device: layer maps %d bytes", mapped)
	}
	t.Logf("64 GiB ext4: %d bytes of metadata in the layer", mapped)
}

func TestExt4Errors(t *testing.T) {
	w := newLayer(t, 1<<30)
	ctx := context.Background()
	if err := Ext4(ctx, w, 4096, Options{}); err == nil || !strings.Contains(err.Error(), "too small") {
		t.Errorf("tiny device: %v", err)
	}
	if err := Ext4(ctx, w, MinSize+512, Options{}); err == nil || !strings.Contains(err.Error(), "multiple") {
		t.Errorf("odd size: %v", err)
	}
	if err := Ext4(ctx, w, 1<<30, Options{Tool: "/bin/false"}); err == nil || !strings.Contains(err.Error(), "/bin/false") {
		t.Errorf("failing tool: %v", err)
	}
	if err := Ext4(ctx, w, 1<<30, Options{TempDir: "/nonexistent/dir"}); err == nil || !strings.Contains(err.Error(), "scratch") {
		t.Errorf("bad temp dir: %v", err)
	}
	if len(w.Mappings()) != 0 {
		t.Error("a failed mkfs wrote into the layer")
	}
}

func TestWriteNonZero(t *testing.T) {
	b := make([]byte, 5*BlockSize)
	b[BlockSize+7] = 1
	b[2*BlockSize] = 2
	b[4*BlockSize+BlockSize-1] = 3
	var rec recorder
	if err := writeNonZero(&rec, b, 1<<20); err != nil {
		t.Fatal(err)
	}
	want := []write{{1<<20 + BlockSize, 2 * BlockSize}, {1<<20 + 4*BlockSize, BlockSize}}
	if len(rec.w) != len(want) {
		t.Fatalf("writes %v, want %v", rec.w, want)
	}
	for i := range want {
		if rec.w[i] != want[i] {
			t.Fatalf("writes %v, want %v", rec.w, want)
		}
	}
}

type write struct{ off, n int64 }

type recorder struct{ w []write }

func (r *recorder) WriteAt(p []byte, off int64) (int, error) {
	r.w = append(r.w, write{off, int64(len(p))})
	return len(p), nil
}
