package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
	"github.com/overlaybd-go/overlaybd/internal/clitest"
	"github.com/overlaybd-go/overlaybd/internal/progress/ptytest"
)

// TestProgressOnlyOnTerminal: with standard error on a terminal a progress
// bar is drawn; into a pipe or file only the messages are written.
func TestProgressOnlyOnTerminal(t *testing.T) {
	dir := t.TempDir()
	src := clitest.WriteFile(t, filepath.Join(dir, "in"), zfiletest.Xorshift(4, 8<<20))

	pts, drawn := ptytest.Capture(t)
	code := run(context.Background(), []string{src, filepath.Join(dir, "a")}, nil, io.Discard, pts)
	tty := drawn()
	if code != 0 {
		t.Fatalf("exit %d: %s", code, tty)
	}
	if !strings.Contains(tty, "%") || !strings.Contains(tty, "compress file done.") {
		t.Fatalf("no progress bar on the terminal: %q", tty)
	}

	var piped bytes.Buffer
	if code := run(context.Background(), []string{src, filepath.Join(dir, "b")}, nil, io.Discard, &piped); code != 0 {
		t.Fatalf("exit %d: %s", code, piped.String())
	}
	if want := fmt.Sprintf("compress file %s as %s\ncompress file done.\n", src, filepath.Join(dir, "b")); piped.String() != want {
		t.Fatalf("piped output %q, want only the messages", piped.String())
	}
}
