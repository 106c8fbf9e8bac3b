package main

import (
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
	svc := filepath.Join(dir, "overlaybd.json")
	if err := os.WriteFile(svc, []byte(`{"codecPlugins": [{"path": "no-such-plugin", "algorithms": ["lz4"]}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	img := writeImage(t, dir, layers(t, "A.commit", "B.commit"), nil)
	code, out, errOut := tool(t, dir, "--service_config_path", svc, img, "merged.zfile")
	if code != exitFailure || out != "" || !strings.Contains(errOut, "failed to start codec plugins") || !strings.Contains(errOut, filepath.Join(dir, "no-such-plugin")) {
		t.Fatalf("exit %d, stdout %q, stderr %q; want %d and a message naming the plugin", code, out, errOut, exitFailure)
	}
	if _, err := os.Stat(filepath.Join(dir, "merged.zfile")); !os.IsNotExist(err) {
		t.Fatalf("output exists after a failed start: %v", err)
	}
}
