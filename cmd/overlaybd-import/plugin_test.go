package main

import (
	"bytes"
	"context"
	"github.com/overlaybd-go/overlaybd/internal/clitest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadServiceConfig checks that a codec plugin that cannot start, or a
// missing explicit service configuration, fails the import (exit 1) with a
// message naming the cause, and writes no output.
func TestBadServiceConfig(t *testing.T) {
	dir := t.TempDir()
	raw := clitest.WriteFile(t, filepath.Join(dir, "raw.img"), bytes.Repeat([]byte{7}, 64<<10))
	svc := clitest.PluginConfig(t, dir, "no-such-plugin", "zstd")
	for _, c := range []struct{ flag, svc, msg string }{
		{"--service_config_path", svc, filepath.Join(dir, "no-such-plugin")},
		{"--service-config-path", filepath.Join(dir, "absent.json"), "absent.json"},
	} {
		out := filepath.Join(dir, "out.commit")
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), []string{c.flag, c.svc, "-z", "--algorithm", "zstd", raw, out}, &stdout, &stderr)
		if code != exitFailure || !strings.Contains(stderr.String(), c.msg) {
			t.Errorf("%s %s: exit %d, stderr %q; want %d and a message naming %q", c.flag, c.svc, code, stderr.String(), exitFailure, c.msg)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%s: output exists after a failed start: %v", c.svc, err)
		}
	}
}
