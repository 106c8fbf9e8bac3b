// Package mkfstest checks ext4 file systems made for overlaybd devices with
// the real e2fsprogs tools, for the tests of internal/mkfs and of
// overlaybd-create --mkfs.
package mkfstest

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/core/lsmt"
)

// MetadataOnly fails the test unless the layer, after mkfs, stores some data
// and at most limit bytes of it (its mappings that are not zeroed): the file
// system's metadata, never its whole device. It returns the bytes stored.
func MetadataOnly(t testing.TB, layer interface{ Mappings() []lsmt.Mapping }, limit int64) int64 {
	t.Helper()
	var stored int64
	for _, m := range layer.Mappings() {
		if !m.Zeroed {
			stored += int64(m.Length) * lsmt.SectorSize
		}
	}
	if stored == 0 || stored > limit {
		t.Errorf("the layer stores %d bytes after mkfs: want some metadata, at most %d bytes", stored, limit)
	}
	return stored
}

// Tool returns the path of the e2fsprogs program name (mkfs.ext4, e2fsck,
// debugfs), from PATH, /sbin or /usr/sbin. A missing one skips the test,
// or fails it when OVERLAYBD_REQUIRE_TOOLS=1.
func Tool(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/sbin/", "/usr/sbin/"} {
		if _, err := os.Stat(d + name); err == nil {
			return d + name
		}
	}
	if os.Getenv("OVERLAYBD_REQUIRE_TOOLS") == "1" {
		t.Fatalf("%s is required (apt-get install e2fsprogs)", name)
	}
	t.Skipf("%s not installed (apt-get install e2fsprogs)", name)
	return ""
}

// DeviceImage copies the first size bytes of dev into a sparse raw file in
// a temporary directory, for the e2fsprogs tools, and returns its path. A
// short read fails the test.
func DeviceImage(t testing.TB, dev io.ReaderAt, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "device.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	for off := int64(0); off < size; off += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), size-off)]
		n, err := dev.ReadAt(b, off)
		if n != len(b) {
			t.Fatalf("read the device at %d: %d of %d bytes: %v", off, n, len(b), err)
		}
		if !bytes.Equal(b, zero[:len(b)]) {
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
		}
	}
	return p
}

// CheckExt4 checks the ext4 file system of size bytes in the raw file raw
// against upstream's make_extfs: e2fsck -fn finds it clean, and debugfs
// stats shows 4096-byte blocks, 256-byte inodes, one inode per 16 KiB,
// upstream's features, no journal, and a lost+found in the root directory.
func CheckExt4(t testing.TB, raw string, size int64) {
	t.Helper()
	e2fsck, debugfs := Tool(t, "e2fsck"), Tool(t, "debugfs")
	if out, err := exec.Command(e2fsck, "-fn", raw).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}
	out, err := exec.Command(debugfs, "-R", "stats", raw).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs -R stats: %v\n%s", err, out)
	}
	stats := string(out)
	for _, want := range []string{"Block size:               4096", "Inode size:\t          256",
		fmt.Sprintf("Inode count:              %d\n", size/16384),
		"64bit", "sparse_super2", "flex_bg", "extent", "dir_index", "huge_file", "extra_isize"} {
		if !strings.Contains(stats, want) {
			t.Errorf("debugfs stats lacks %q:\n%s", want, stats)
		}
	}
	if strings.Contains(stats, "has_journal") {
		t.Errorf("the file system has a journal; upstream's has none:\n%s", stats)
	}
	ls, err := exec.Command(debugfs, "-R", "ls -l /", raw).CombinedOutput()
	if err != nil || !bytes.Contains(ls, []byte("lost+found")) {
		t.Errorf("no lost+found in the root directory: %v\n%s", err, ls)
	}
}
