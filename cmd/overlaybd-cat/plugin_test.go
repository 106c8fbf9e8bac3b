package main

import (
	"github.com/overlaybd-go/overlaybd/internal/cli"
	"github.com/overlaybd-go/overlaybd/internal/clitest"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadCodecPlugin checks that a codec plugin that cannot start fails
// overlaybd-cat with its failure code and a message naming the plugin, and
// writes nothing to standard output.
func TestBadCodecPlugin(t *testing.T) {
	dir := t.TempDir()
	svc := clitest.PluginConfig(t, dir, "no-such-plugin", "zstd")
	got, code, stderr := cat(t, "--service_config_path", svc, v(t, "lsmt/rw-log.zstd-bs4.zcommit"))
	if code != cli.ExitFailure || !strings.Contains(stderr, "start codec plugins") || !strings.Contains(stderr, filepath.Join(dir, "no-such-plugin")) {
		t.Fatalf("exit %d, stderr %q; want %d and a message naming the plugin", code, stderr, cli.ExitFailure)
	}
	if got != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" { // sha256 of nothing
		t.Fatalf("wrote data (sha256 %s) after a failed start", got)
	}
}
