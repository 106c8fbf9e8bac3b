package main

import (
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/internal/clitest"
	"github.com/overlaybd-go/overlaybd/internal/progress/ptytest"
)

// TestMergeProgress: with standard error on a terminal the bytes written
// are shown there; into a pipe (the other tests) no bar is drawn.
func TestMergeProgress(t *testing.T) {
	dir := t.TempDir()
	img := writeImage(t, dir, layers(t, "A.commit", "B.commit", "C.commit"), nil)
	cmd := clitest.Command(dir, "--compress=false", "--service_config_path", svcConfig(t, dir), img, "merged.commit")
	tty, err := ptytest.Run(t, cmd)
	if err != nil {
		t.Fatalf("%v: %s", err, tty)
	}
	if !strings.Contains(tty, "| merge") {
		t.Fatalf("no progress on the terminal: %q", tty)
	}
	code, _, errOut := clitest.Run(t, dir, "--compress=false", "--service_config_path", svcConfig(t, dir), img, "piped.commit")
	if code != 0 || strings.Contains(errOut, "| merge") || strings.Contains(errOut, "\r") {
		t.Fatalf("exit %d, piped stderr %q, want no bar", code, errOut)
	}
}
