package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/internal/clitest"
	"github.com/overlaybd-go/overlaybd/internal/progress/ptytest"
)

// TestImportProgress: with standard error on a terminal the bytes written
// are shown there; into a pipe standard error stays empty.
func TestImportProgress(t *testing.T) {
	dir := t.TempDir()
	raw := bytes.Repeat([]byte("overlaybd progress "), 4<<20/19+1)
	img := clitest.WriteFile(t, filepath.Join(dir, "raw.img"), raw[:4<<20])
	pts, drawn := ptytest.Capture(t)
	var stdout bytes.Buffer
	code := run(context.Background(), []string{img, filepath.Join(dir, "a")}, &stdout, pts)
	tty := drawn()
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, tty)
	}
	if !strings.Contains(tty, "| import") {
		t.Fatalf("no progress on the terminal: %q", tty)
	}
	var piped bytes.Buffer
	if code := run(context.Background(), []string{img, filepath.Join(dir, "b")}, &stdout, &piped); code != exitOK || piped.Len() != 0 {
		t.Fatalf("exit %d, stderr %q, want nothing", code, piped.String())
	}
}
