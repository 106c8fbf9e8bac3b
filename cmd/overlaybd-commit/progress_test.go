package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/internal/clitest"
	"github.com/overlaybd-go/overlaybd/internal/progress/ptytest"
)

// TestCommitProgress: with standard error on a terminal the bytes written
// are shown there and the output is unchanged; into a pipe stderr is empty.
func TestCommitProgress(t *testing.T) {
	dir := t.TempDir()
	args := append(append([]string{}, rwlogArgs...), vec(t, "lsmt/rw-log.data"), vec(t, "lsmt/rw-log.index"))
	cmd := clitest.Command(dir, append(args, "TTY")...)
	tty, err := ptytest.Run(t, cmd)
	if err != nil {
		t.Fatalf("%v: %s", err, tty)
	}
	if !strings.Contains(tty, "| commit") {
		t.Fatalf("no progress on the terminal: %q", tty)
	}
	clitest.SameFile(t, filepath.Join(dir, "TTY"), vec(t, "lsmt/rw-log.commit"))
	if code, out, errOut := clitest.Run(t, dir, append(args, "PIPE")...); code != 0 || out != success || errOut != "" {
		t.Fatalf("exit %d, stdout %q, piped stderr %q, want nothing", code, out, errOut)
	}
}
