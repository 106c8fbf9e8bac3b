package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/internal/clitest"
)

// e2fsTool finds an e2fsprogs program; a missing one skips the test unless
// OVERLAYBD_REQUIRE_TOOLS=1 makes it a failure.
func e2fsTool(t *testing.T, name string) string {
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

// openLayer opens the writable layer the tool created, as a device.
func openLayer(t *testing.T, data, index string) *lsmt.Writable {
	t.Helper()
	open := func(p string) *os.File {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	w, err := lsmt.OpenWritable(psync.NewFile(open(data), nil), psync.NewFile(open(index), nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// deviceImage copies the size bytes of dev into a sparse raw file for the
// e2fsprogs tools.
func deviceImage(t *testing.T, dev io.ReaderAt, size int64) string {
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
		n, err := dev.ReadAt(buf, off)
		if err != nil && err != io.EOF {
			t.Fatalf("read device at %d: %v", off, err)
		}
		if n != len(buf) {
			t.Fatalf("short read of the device at %d: %d bytes", off, n)
		}
		if string(buf) != string(zero) {
			if _, err := f.WriteAt(buf, off); err != nil {
				t.Fatal(err)
			}
		}
	}
	return p
}

// checkExt4 runs e2fsck -fn and debugfs stats on the raw image: a clean
// file system with upstream's parameters.
func checkExt4(t *testing.T, raw string) {
	t.Helper()
	e2fsck, debugfs := e2fsTool(t, "e2fsck"), e2fsTool(t, "debugfs")
	if out, err := exec.Command(e2fsck, "-fn", raw).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}
	out, err := exec.Command(debugfs, "-R", "stats", raw).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs -R stats: %v\n%s", err, out)
	}
	stats := string(out)
	for _, want := range []string{"Block size:               4096", "Inode size:\t          256",
		"Inode count:              65536", "64bit", "sparse_super2", "flex_bg", "extent"} {
		if !strings.Contains(stats, want) {
			t.Errorf("debugfs stats lacks %q:\n%s", want, stats)
		}
	}
	if strings.Contains(stats, "has_journal") {
		t.Errorf("the file system has a journal; upstream's has none:\n%s", stats)
	}
}

// TestCreateMkfs: --mkfs on an append-only, a sparse and a raw layer makes
// a clean ext4 file system with upstream's parameters, written through the
// layer (an LSMT layer holds only the metadata blocks), and no scratch file
// is left next to the data file.
func TestCreateMkfs(t *testing.T) {
	e2fsTool(t, "mkfs.ext4")
	const size = 1 << 30
	for _, c := range []struct {
		name  string
		flags []string
	}{
		{"append-only", nil},
		{"sparse", []string{"-s"}},
		{"raw", []string{"--raw"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			args := append(append([]string{"--mkfs"}, c.flags...), "d", "i", "1")
			code, out, errOut := clitest.Run(t, dir, args...)
			if code != 0 || out != "overlaybd-create has created files SUCCESSFULLY\n" {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 2 {
				t.Errorf("directory holds %d entries after --mkfs, want d and i", len(entries))
			}
			data, index := filepath.Join(dir, "d"), filepath.Join(dir, "i")
			if c.name == "raw" {
				if st, err := os.Stat(data); err != nil || st.Size() != size {
					t.Fatalf("raw image: %v %v", st, err)
				}
				checkExt4(t, data)
				return
			}
			w := openLayer(t, data, index)
			if w.Size() != size || w.Sparse() != (c.name == "sparse") {
				t.Fatalf("layer of %d bytes, sparse %v", w.Size(), w.Sparse())
			}
			var mapped int64
			for _, m := range w.Mappings() {
				mapped += int64(m.Length) * 512
			}
			if mapped == 0 || mapped > 16<<20 {
				t.Errorf("layer maps %d bytes after mkfs: want a few MiB of metadata", mapped)
			}
			checkExt4(t, deviceImage(t, w, size))
		})
	}
}

// TestCreateMkfsFailure: a file system that cannot be made reports
// "mkfs failed, ...", exits 255 and leaves no files behind.
func TestCreateMkfsFailure(t *testing.T) {
	for _, flags := range [][]string{nil, {"-s"}, {"--raw"}} {
		dir := t.TempDir()
		args := append(append([]string{"--mkfs"}, flags...), "d", "i", "0")
		code, out, errOut := clitest.Run(t, dir, args...)
		if code != 255 || out != "" || !strings.HasPrefix(errOut, "mkfs failed, ") || !strings.Contains(errOut, "too small") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", flags, code, out, errOut)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("%v: %d files left behind", flags, len(entries))
		}
	}
	// --mkfs does not make --turboOCI work.
	dir := t.TempDir()
	if code, _, errOut := clitest.Run(t, dir, "--mkfs", "--turboOCI", "d", "i", "1"); code != 255 || !strings.Contains(errOut, "not supported") {
		t.Errorf("--mkfs --turboOCI: exit %d: %s", code, errOut)
	}
}
