package main

import (
	"encoding/json"
	"os"
	"os/exec"
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

// TestCommitZstdPlugin commits the rw-log vector with zstd served by the
// zstd-cgo example plugin (libzstd, as upstream): the output is the
// vector's ZFile byte for byte, and the plugin's own counters show that it
// compressed the blocks.
func TestCommitZstdPlugin(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a plugin binary")
	}
	dir := t.TempDir()
	pdir := filepath.Join(dir, "plugins")
	if err := os.Mkdir(pdir, 0o700); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(pdir, "zstd-cgo")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/overlaybd-go/overlaybd/plugins/examples/zstd-cgo").CombinedOutput(); err != nil {
		t.Fatalf("go build zstd-cgo: %v\n%s", err, out)
	}
	cfg, _ := json.Marshal(map[string]any{"codecPlugins": []map[string]any{{"path": bin, "algorithms": []string{"zstd"}}}})
	svc := filepath.Join(dir, "overlaybd.json")
	if err := os.WriteFile(svc, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--service_config_path", svc, "--verbose", "-z", "--algorithm", "zstd", "--bs", "4"}, rwlogArgs...)
	args = append(args, vec(t, "lsmt/rw-log.data"), vec(t, "lsmt/rw-log.index"), "OUT")
	code, out, errOut := tool(t, dir, args...)
	if code != 0 || out != success {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	m := regexp.MustCompile(`msg="codec plugin stats" .*zstd\.compressed=(\d+) `).FindStringSubmatch(errOut)
	if m == nil || m[1] == "0" {
		t.Fatalf("the plugin compressed no block:\n%s", errOut)
	}
	sameFileBytes(t, filepath.Join(dir, "OUT"), vec(t, "lsmt/rw-log.zstd-bs4.zcommit"))
}
