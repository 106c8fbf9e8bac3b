package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/overlaybd-go/overlaybd/internal/clitest"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

// TestCodecPluginServesZstd serves the vector stack, whose middle layer is a
// zstd ZFile, with zstd served by the zstd-cgo example plugin; after the
// graceful stop (the signal path) the plugin reports the blocks it decoded
// and its process is gone.
func TestCodecPluginServesZstd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a plugin binary")
	}
	nbdcopy := needTool(t, "nbdcopy")
	dir := t.TempDir()
	clitest.BuildPlugin(t, clitest.ZstdPlugin, filepath.Join(dir, "plugins"))
	// A relative path is relative to the configuration's folder.
	svc := clitest.PluginConfig(t, dir, "plugins/zstd-cgo", "zstd")
	cfg := writeJSON(t, filepath.Join(dir, "stack.json"), map[string]any{
		"lowers": []any{
			map[string]any{"file": testvectors.Path(t, "stack/A.commit")},
			map[string]any{"file": testvectors.Path(t, "stack/B.zstd-bs16.zcommit")},
			map[string]any{"file": testvectors.Path(t, "stack/C.commit")},
		},
	})
	sock := filepath.Join(dir, "nbd.sock")
	srv := start(t, "--service_config_path", svc, "--verbose", "--unix", sock, "stack="+cfg)

	out := filepath.Join(dir, "out.raw")
	runTool(t, nbdcopy, unixURI(sock, "stack"), out)
	got, _ := os.ReadFile(out)
	if s := sha256.Sum256(got); hex.EncodeToString(s[:]) != shaMerged {
		t.Fatalf("nbdcopy of the stack: sha256 %x", s)
	}
	srv.stop(t)

	log := srv.log.String()
	started := regexp.MustCompile(`msg="codec plugin started" .*pid=(\d+) `).FindStringSubmatch(log)
	stats := regexp.MustCompile(`msg="codec plugin stats" .*pid=(\d+) .*zstd\.decompressed=(\d+) `).FindStringSubmatch(log)
	if started == nil || stats == nil {
		t.Fatalf("no plugin start/stats lines:\n%s", log)
	}
	if stats[1] != started[1] {
		t.Fatalf("stats from pid %s, started pid %s", stats[1], started[1])
	}
	if n, _ := strconv.Atoi(stats[2]); n == 0 {
		t.Fatalf("the plugin decoded no zstd block:\n%s", log)
	}
	if strings.Index(log, "codec plugin stats") < strings.Index(log, "signal received") {
		t.Fatalf("the plugins stopped before the graceful shutdown:\n%s", log)
	}
	pid, _ := strconv.Atoi(started[1])
	if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
		t.Fatalf("plugin process %d after the stop: kill 0: %v", pid, err)
	}
}
