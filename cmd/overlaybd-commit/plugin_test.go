package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadServiceConfig checks that a codec plugin that cannot start, or a
// missing explicit service configuration, fails the commit with upstream's
// failure code and a message naming the cause, and writes no output.
func TestBadServiceConfig(t *testing.T) {
	dir := t.TempDir()
	data, index := vec(t, "lsmt/rw-log.data"), vec(t, "lsmt/rw-log.index")
	cfg, _ := json.Marshal(map[string]any{
		"codecPlugins": []map[string]any{{"path": filepath.Join(dir, "no-such-plugin"), "algorithms": []string{"zstd"}}},
	})
	svc := filepath.Join(dir, "overlaybd.json")
	if err := os.WriteFile(svc, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ flag, svc, msg string }{
		{"--service_config_path", svc, "no-such-plugin"},
		{"--service-config-path", filepath.Join(dir, "absent.json"), "absent.json"},
	} {
		code, out, errOut := tool(t, dir, c.flag, c.svc, "-z", "--algorithm", "zstd", data, index, "OUT")
		if code != exitFailure || out != "" || !strings.Contains(errOut, c.msg) || !strings.Contains(errOut, "overlaybd-commit:") {
			t.Errorf("%s %s: exit %d, stdout %q, stderr %q; want %d and a message naming %q", c.flag, c.svc, code, out, errOut, exitFailure, c.msg)
		}
		if _, err := os.Stat(filepath.Join(dir, "OUT")); !os.IsNotExist(err) {
			t.Errorf("%s: output exists after a failed start: %v", c.svc, err)
		}
	}
}
