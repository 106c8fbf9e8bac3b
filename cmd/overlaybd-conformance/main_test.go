package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/overlaybd-go/overlaybd/conformance/matrix"
	"github.com/overlaybd-go/overlaybd/core/config"
)

// A filtered run prints its table, writes the JSON report and exits 0.
func TestRunFilteredWritesReport(t *testing.T) {
	report := filepath.Join(t.TempDir(), "report.json")
	code := run([]string{"--engine", "psync", "--codec", "none,lz4-go", "--envelope", "tar", "--cache", "local",
		"--layer", "sealed", "--upper", "none,sparse", "--frontend", "inprocess,tcmu", "--quick", "--seed", "7", "--report", report})
	if code != 0 {
		t.Fatalf("exit status %d", code)
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var r matrix.Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Seed != 7 || r.Summary[matrix.Pass] == 0 || r.Summary[matrix.Impossible] == 0 || r.Summary[matrix.Fail] != 0 {
		t.Errorf("report: seed %d, summary %v", r.Seed, r.Summary)
	}
	for _, res := range r.Results {
		if res.Status == matrix.Pass && (res.Engine == nil || res.Engine.Reads == 0) {
			t.Errorf("%s passed without engine counters", res.Name)
		}
	}
}

func TestBadFlagExits2(t *testing.T) {
	if code := run([]string{"--no-such-flag"}); code != 2 {
		t.Errorf("exit status %d, want 2", code)
	}
	if code := run([]string{"--ops", "-1"}); code != 2 {
		t.Errorf("--ops -1: exit status %d, want 2", code)
	}
}

// --check-install fails on a missing configuration and on a plugin that is
// not executable, and names the failing check.
func TestCheckInstall(t *testing.T) {
	dir := t.TempDir()
	if code := run([]string{"--check-install", "--service_config_path", filepath.Join(dir, "missing.json")}); code != 1 {
		t.Errorf("missing config: exit status %d, want 1", code)
	}
	plugin := filepath.Join(dir, "plugin")
	if err := os.WriteFile(plugin, []byte("not a binary"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "overlaybd.json")
	if err := os.WriteFile(cfg, []byte(`{"ioEngine":"psync","codecPlugins":[{"path":"`+plugin+`","algorithms":["zstd"]}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := run([]string{"--check-install", "--service-config-path", cfg}); code != 1 {
		t.Errorf("non-executable plugin: exit status %d, want 1", code)
	}
	if err := checkPlugin(pluginCfg(plugin)); err == nil {
		t.Error("checkPlugin accepted a non-executable file")
	}
	if err := os.Chmod(plugin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := checkPlugin(pluginCfg(plugin)); err != nil {
		t.Errorf("checkPlugin: %v", err)
	}
	c := pluginCfg(plugin)
	c.SHA256 = "00"
	if err := checkPlugin(c); err == nil {
		t.Error("checkPlugin accepted a wrong sha256")
	}
}

func pluginCfg(path string) config.CodecPlugin {
	return config.CodecPlugin{Path: path, Algorithms: []string{"zstd"}}
}
