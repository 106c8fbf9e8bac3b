// Package smallfs gives tests a real, small file system to fill up: a tmpfs
// of a chosen size mounted on a temporary directory, a writer that fills it
// as another process would, and its free space.
package smallfs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// Mount mounts a tmpfs of size bytes on a new temporary directory and
// unmounts it when the test ends. Mounting needs root: without it the test
// is skipped, or fails when OVERLAYBD_REQUIRE_TOOLS=1.
func Mount(t testing.TB, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.FormatInt(size, 10)+",mode=0755"); err != nil {
		msg := "a small file system for the full-disk test needs root to mount tmpfs: " + err.Error()
		if os.Getenv("OVERLAYBD_REQUIRE_TOOLS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// Fill plays the other writer on the file system of dir: it appends to the
// file name until the file system is full and returns the bytes written.
func Fill(t testing.TB, dir, name string) int64 {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := bytes.Repeat([]byte{0xee}, 64<<10)
	var total int64
	for {
		n, err := f.Write(buf)
		total += int64(n)
		if err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			break
		}
	}
	// Small writes take the last partial pages.
	for _, err := f.Write(buf[:4096]); err == nil; _, err = f.Write(buf[:4096]) {
		total += 4096
	}
	return total
}

// FreeBytes returns the free bytes of dir's file system.
func FreeBytes(t testing.TB, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}
