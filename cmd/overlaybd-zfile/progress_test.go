package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
)

// openPTY returns the controller and the terminal side of a new
// pseudo-terminal.
func openPTY(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	ptm := os.NewFile(uintptr(fd), "/dev/ptmx")
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		ptm.Close()
		t.Skipf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		ptm.Close()
		t.Skipf("ptsname: %v", err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		ptm.Close()
		t.Skipf("open pts: %v", err)
	}
	return ptm, pts
}

// TestProgressOnlyOnTerminal: with standard error on a terminal a progress
// bar is drawn; into a pipe or file only the messages are written.
func TestProgressOnlyOnTerminal(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "in")
	os.WriteFile(src, zfiletest.Xorshift(4, 8<<20), 0o644)

	ptm, pts := openPTY(t)
	defer ptm.Close()
	var tty bytes.Buffer
	done := make(chan struct{})
	go func() {
		io.Copy(&tty, ptm)
		close(done)
	}()
	code := run(context.Background(), []string{src, filepath.Join(dir, "a")}, nil, pts)
	pts.Close()
	<-done
	if code != 0 {
		t.Fatalf("exit %d: %s", code, tty.String())
	}
	if !strings.Contains(tty.String(), "%") || !strings.Contains(tty.String(), "compress file done.") {
		t.Fatalf("no progress bar on the terminal: %q", tty.String())
	}

	var piped bytes.Buffer
	if code := run(context.Background(), []string{src, filepath.Join(dir, "b")}, nil, &piped); code != 0 {
		t.Fatalf("exit %d: %s", code, piped.String())
	}
	if want := fmt.Sprintf("compress file %s as %s\ncompress file done.\n", src, filepath.Join(dir, "b")); piped.String() != want {
		t.Fatalf("piped output %q, want only the messages", piped.String())
	}
}
