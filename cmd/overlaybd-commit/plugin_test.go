package main

import (
	"github.com/overlaybd-go/overlaybd/internal/cli"
	"github.com/overlaybd-go/overlaybd/internal/clitest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestBadServiceConfig checks that a codec plugin that cannot start, or a
// missing explicit service configuration, fails the commit with upstream's
// failure code and a message naming the cause, and writes no output.
func TestBadServiceConfig(t *testing.T) {
	dir := t.TempDir()
	data, index := vec(t, "lsmt/rw-log.data"), vec(t, "lsmt/rw-log.index")
	svc := clitest.PluginConfig(t, dir, filepath.Join(dir, "no-such-plugin"), "zstd")
	for _, c := range []struct{ flag, svc, msg string }{
		{"--service_config_path", svc, "no-such-plugin"},
		{"--service-config-path", filepath.Join(dir, "absent.json"), "absent.json"},
	} {
		code, out, errOut := clitest.Run(t, dir, c.flag, c.svc, "-z", "--algorithm", "zstd", data, index, "OUT")
		if code != cli.ExitFailure || out != "" || !strings.Contains(errOut, c.msg) || !strings.Contains(errOut, "overlaybd-commit:") {
			t.Errorf("%s %s: exit %d, stdout %q, stderr %q; want %d and a message naming %q", c.flag, c.svc, code, out, errOut, cli.ExitFailure, c.msg)
		}
		if _, err := os.Stat(filepath.Join(dir, "OUT")); !os.IsNotExist(err) {
			t.Errorf("%s: output exists after a failed start: %v", c.svc, err)
		}
	}
}

// TestCommitZstdPlugin commits the rw-log vector with zstd served by the
// zstd-cgo example plugin (libzstd, as upstream): the output is the
// vector's ZFile byte for byte, and the plugin's own counters show that it
// compressed the blocks.
func TestCommitZstdPlugin(t *testing.T) {
	dir := t.TempDir()
	bin := clitest.BuildPlugin(t, clitest.ZstdPlugin, filepath.Join(dir, "plugins"))
	svc := clitest.PluginConfig(t, dir, bin, "zstd")
	args := append([]string{"--service_config_path", svc, "--verbose", "-z", "--algorithm", "zstd", "--bs", "4"}, rwlogArgs...)
	args = append(args, vec(t, "lsmt/rw-log.data"), vec(t, "lsmt/rw-log.index"), "OUT")
	code, out, errOut := clitest.Run(t, dir, args...)
	if code != 0 || out != success {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	m := regexp.MustCompile(`msg="codec plugin stats" .*zstd\.compressed=(\d+) `).FindStringSubmatch(errOut)
	if m == nil || m[1] == "0" {
		t.Fatalf("the plugin compressed no block:\n%s", errOut)
	}
	clitest.SameFile(t, filepath.Join(dir, "OUT"), vec(t, "lsmt/rw-log.zstd-bs4.zcommit"))
}
