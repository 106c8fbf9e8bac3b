// Package ptytest opens pseudo-terminals for tests of output that differs
// on a terminal, such as progress bars.
package ptytest

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

// Open returns the controller and the terminal side of a new
// pseudo-terminal, skipping the test where none can be made.
func Open(t testing.TB) (ptm, pts *os.File) {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	ptm = os.NewFile(uintptr(fd), "/dev/ptmx")
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		ptm.Close()
		t.Skipf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		ptm.Close()
		t.Skipf("ptsname: %v", err)
	}
	pts, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		ptm.Close()
		t.Skipf("open pts: %v", err)
	}
	return ptm, pts
}

// Capture opens a pseudo-terminal and collects what is written to its
// terminal side. The returned function closes the terminal side (the caller
// must not close it) and returns everything drawn on it.
func Capture(t testing.TB) (pts *os.File, drawn func() string) {
	t.Helper()
	ptm, pts := Open(t)
	var tty bytes.Buffer
	done := make(chan struct{})
	go func() {
		io.Copy(&tty, ptm)
		close(done)
	}()
	return pts, func() string {
		pts.Close()
		<-done
		ptm.Close()
		return tty.String()
	}
}

// Run runs cmd with its standard error on a new pseudo-terminal and returns
// what was drawn there with the error of cmd.Run.
func Run(t testing.TB, cmd *exec.Cmd) (string, error) {
	t.Helper()
	pts, drawn := Capture(t)
	cmd.Stderr = pts
	err := cmd.Run()
	return drawn(), err
}
