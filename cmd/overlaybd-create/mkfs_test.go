package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/internal/clitest"
	"github.com/overlaybd-go/overlaybd/internal/mkfs/mkfstest"
)

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

// TestCreateMkfs: --mkfs on an append-only, a sparse and a raw layer makes
// a clean ext4 file system with upstream's parameters, written through the
// layer (an LSMT layer holds only the metadata blocks), and no scratch file
// is left next to the data file.
func TestCreateMkfs(t *testing.T) {
	mkfstest.Tool(t, "mkfs.ext4")
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
				mkfstest.CheckExt4(t, data, size)
				return
			}
			w := openLayer(t, data, index)
			if w.Size() != size || w.Sparse() != (c.name == "sparse") {
				t.Fatalf("layer of %d bytes, sparse %v", w.Size(), w.Sparse())
			}
			mkfstest.MetadataOnly(t, w, 16<<20)
			mkfstest.CheckExt4(t, mkfstest.DeviceImage(t, w, size), size)
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
	// mkfs.ext4 itself fails (the first on PATH): its message is passed on,
	// and neither the layer nor the scratch file is left.
	bin := t.TempDir()
	clitest.WriteFile(t, filepath.Join(bin, "mkfs.ext4"), []byte("#!/bin/sh\necho 'mkfs.ext4: Could not allocate block in ext2 filesystem' >&2\nexit 1\n"))
	if err := os.Chmod(filepath.Join(bin, "mkfs.ext4"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, flags := range [][]string{nil, {"-s"}, {"--raw"}} {
		dir := t.TempDir()
		cmd := clitest.Command(dir, append(append([]string{"--mkfs"}, flags...), "d", "i", "1")...)
		cmd.Env = append(cmd.Env, "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
		var out, errOut strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 255 || out.Len() != 0 ||
			!strings.HasPrefix(errOut.String(), "mkfs failed, ") || !strings.Contains(errOut.String(), "Could not allocate block") {
			t.Errorf("%v with a failing mkfs.ext4: %v, stdout %q, stderr %q", flags, err, out.String(), errOut.String())
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("%v: %d files left behind after mkfs.ext4 failed", flags, len(entries))
		}
	}
	// --mkfs does not make --turboOCI work.
	dir := t.TempDir()
	if code, _, errOut := clitest.Run(t, dir, "--mkfs", "--turboOCI", "d", "i", "1"); code != 255 || !strings.Contains(errOut, "not supported") {
		t.Errorf("--mkfs --turboOCI: exit %d: %s", code, errOut)
	}
}
