package main

import (
	"github.com/overlaybd-go/overlaybd/internal/cli"
	"github.com/overlaybd-go/overlaybd/internal/clitest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadCodecPlugin checks that a codec plugin that cannot start fails the
// merge with upstream's failure code and a message naming it, and writes no
// output.
func TestBadCodecPlugin(t *testing.T) {
	dir := t.TempDir()
	svc := clitest.PluginConfig(t, dir, "no-such-plugin", "lz4")
	img := writeImage(t, dir, layers(t, "A.commit", "B.commit"), nil)
	code, out, errOut := clitest.Run(t, dir, "--service_config_path", svc, img, "merged.zfile")
	if code != cli.ExitFailure || out != "" || !strings.Contains(errOut, "failed to start codec plugins") || !strings.Contains(errOut, filepath.Join(dir, "no-such-plugin")) {
		t.Fatalf("exit %d, stdout %q, stderr %q; want %d and a message naming the plugin", code, out, errOut, cli.ExitFailure)
	}
	if _, err := os.Stat(filepath.Join(dir, "merged.zfile")); !os.IsNotExist(err) {
		t.Fatalf("output exists after a failed start: %v", err)
	}
}
