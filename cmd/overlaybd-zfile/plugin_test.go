package main

import (
	"bytes"
	"github.com/overlaybd-go/overlaybd/internal/cli"
	"github.com/overlaybd-go/overlaybd/internal/clitest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// buildZstdPlugin builds the zstd-cgo example plugin into a private folder
// (mode 0700, the binary 0755: neither writable by others, as the plugin
// host demands) and returns a service configuration listing it for zstd.
func buildZstdPlugin(t *testing.T) string {
	t.Helper()
	bin := clitest.BuildPlugin(t, clitest.ZstdPlugin, filepath.Join(t.TempDir(), "plugin"))
	return clitest.PluginConfig(t, t.TempDir(), bin, "zstd")
}

// statsLine matches the debug line the tool logs when it closes the plugin
// host, with the plugin's own counters of zstd blocks.
var statsLine = regexp.MustCompile(`msg="codec plugin stats" .*pid=(\d+) .*zstd\.compressed=(\d+) .*zstd\.decompressed=(\d+) `)

// pluginCounters returns the zstd counters the plugin reported, and checks
// that the pid is the one the host logged at start.
func pluginCounters(t *testing.T, stderr string) (compressed, decompressed int) {
	t.Helper()
	started := regexp.MustCompile(`msg="codec plugin started" .*pid=(\d+) `).FindStringSubmatch(stderr)
	m := statsLine.FindStringSubmatch(stderr)
	if started == nil || m == nil {
		t.Fatalf("no plugin start/stats lines in stderr:\n%s", stderr)
	}
	if started[1] != m[1] {
		t.Fatalf("stats from pid %s, started pid %s", m[1], started[1])
	}
	c, _ := strconv.Atoi(m[2])
	d, _ := strconv.Atoi(m[3])
	return c, d
}

// TestPluginServesZstd compresses and extracts with the zstd codec served by
// the zstd-cgo example plugin, and checks from the plugin's own counters
// that it coded every block.
func TestPluginServesZstd(t *testing.T) {
	svc := buildZstdPlugin(t)
	src, plain := writePlain(t)
	dir := t.TempDir()
	zf, back := filepath.Join(dir, "plain.zfile"), filepath.Join(dir, "plain.back")
	blocks := (len(plain) + 4095) / 4096

	code, stderr := runTool(t, nil, "--service-config-path", svc, "--verbose", "--algorithm", "zstd", src, zf)
	if code != cli.ExitOK {
		t.Fatalf("compress: exit %d\n%s", code, stderr)
	}
	if c, d := pluginCounters(t, stderr); c != blocks || d != 0 {
		t.Fatalf("plugin compressed %d, decompressed %d blocks; want %d, 0", c, d, blocks)
	}

	code, stderr = runTool(t, nil, "--service_config_path", svc, "--verbose", "-x", zf, back)
	if code != cli.ExitOK {
		t.Fatalf("extract: exit %d\n%s", code, stderr)
	}
	if c, d := pluginCounters(t, stderr); c != 0 || d < blocks {
		t.Fatalf("plugin compressed %d, decompressed %d blocks; want 0, at least %d", c, d, blocks)
	}
	got, err := os.ReadFile(back)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, plain) {
		t.Fatal("extracted bytes differ from the original")
	}

	// Without the plugin the built-in codec reads the plugin's output.
	back2 := filepath.Join(dir, "plain.back2")
	if code, stderr := runTool(t, nil, "-x", zf, back2); code != cli.ExitOK {
		t.Fatalf("extract without plugin: exit %d\n%s", code, stderr)
	}
	if got, _ := os.ReadFile(back2); !bytes.Equal(got, plain) {
		t.Fatal("built-in codec: extracted bytes differ from the original")
	}
}

// TestBadServiceConfig checks that a plugin that cannot start, or a missing
// explicit service configuration, fails with upstream's failure code and a
// message naming the cause, before any output is written.
func TestBadServiceConfig(t *testing.T) {
	src, _ := writePlain(t)
	missing := filepath.Join(t.TempDir(), "no-such-plugin")
	for name, tc := range map[string]struct{ svc, want string }{
		"plugin path":    {clitest.PluginConfig(t, t.TempDir(), missing, "zstd"), "no-such-plugin"},
		"missing config": {filepath.Join(t.TempDir(), "absent.json"), "absent.json"},
	} {
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.zfile")
			code, stderr := runTool(t, nil, "--service_config_path", tc.svc, "--algorithm", "zstd", src, out)
			if code != cli.ExitFailure {
				t.Fatalf("exit %d, want %d\n%s", code, cli.ExitFailure, stderr)
			}
			if !bytes.Contains([]byte(stderr), []byte(tc.want)) {
				t.Fatalf("stderr does not name %q:\n%s", tc.want, stderr)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Fatalf("output exists after a failed start: %v", err)
			}
		})
	}
}
