package main

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/internal/progress/ptytest"
)

// TestCatProgress: with standard error on a terminal a bar is drawn there
// (for -o and for standard output alike); into a pipe standard error stays
// empty.
func TestCatProgress(t *testing.T) {
	layers := []string{v(t, "stack/A.commit"), v(t, "stack/B.commit"), v(t, "stack/C.commit")}
	out := filepath.Join(t.TempDir(), "disk.raw")
	for _, args := range [][]string{append([]string{"-o", out}, layers...), layers} {
		pts, drawn := ptytest.Capture(t)
		code := run(context.Background(), args, io.Discard, pts)
		tty := drawn()
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, tty)
		}
		if !strings.Contains(tty, "cat") || !strings.Contains(tty, "%") {
			t.Fatalf("%v: no progress bar on the terminal: %q", args, tty)
		}
		var piped bytes.Buffer
		if code := run(context.Background(), args, io.Discard, &piped); code != 0 || piped.Len() != 0 {
			t.Fatalf("%v: exit %d, stderr %q, want nothing", args, code, piped.String())
		}
	}
}
