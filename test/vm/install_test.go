//go:build vm

package vm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTCMUInstalled installs the tree with scripts/install.sh (what `make
// install DESTDIR=...` runs) into the share, and in the guest starts the
// installed overlaybd-tcmu from the installed unit's ExecStartPre and
// ExecStart lines, with the installed /etc/overlaybd/overlaybd.json, then
// serves a device from it and stops it as systemd does.
func TestTCMUInstalled(t *testing.T) {
	dir := share(t)
	bins := t.TempDir()
	buildStatic(t, bins, "./cmd/overlaybd-tcmu", "./cmd/overlaybd-info")
	root := filepath.Join(dir, "root")
	run(t, repoRoot(t), []string{"DESTDIR=" + root, "BINSRC=" + bins}, "sh", "scripts/install.sh", "install")

	// The layout upstream's users and the snapshotter expect.
	for _, p := range []string{
		"opt/overlaybd/bin/overlaybd-tcmu",
		"opt/overlaybd/bin/overlaybd-info",
		"etc/overlaybd/overlaybd.json",
		"lib/systemd/system/overlaybd-tcmu.service",
	} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Fatalf("installed tree: %v", err)
		}
	}
	unit, err := os.ReadFile(filepath.Join(root, "lib/systemd/system/overlaybd-tcmu.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "\nExecStart=/opt/overlaybd/bin/overlaybd-tcmu /etc/overlaybd/overlaybd.json\n") {
		t.Fatalf("installed unit's ExecStart is not upstream's:\n%s", unit)
	}

	img := filepath.Join(dir, "img")
	os.MkdirAll(img, 0o755)
	ext4Lower(t, dir, filepath.Join(img, "lower.commit"), 256<<20)
	writeJSON(t, filepath.Join(img, "config.v1.json"), map[string]any{
		"lowers":     []any{map[string]any{"file": "/mnt/img/lower.commit"}},
		"resultFile": "/mnt/img/result",
	})
	globalConfig(t, dir) // the CA bundle the daemon's start-up checks want

	boot(t, dir, "tcmu-installed.sh", 180*time.Second)

	log, err := os.ReadFile(filepath.Join(dir, "installed.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "config=/etc/overlaybd/overlaybd.json") {
		t.Errorf("the installed daemon's log does not name the installed config:\n%s", log)
	}
}
