//go:build vm

package vm

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestTCMUDaemonMany runs overlaybd-tcmu with bad device configurations,
// 32 concurrent devices and a killed and restarted daemon.
func TestTCMUDaemonMany(t *testing.T) {
	dir := share(t)
	bin := filepath.Join(dir, "bin")
	buildStatic(t, bin, "./cmd/overlaybd-tcmu")
	tools := t.TempDir()
	buildStatic(t, tools, "./cmd/overlaybd-create")
	img := filepath.Join(dir, "img")
	os.MkdirAll(img, 0o755)
	const vsize = 1 << 30
	raw, _ := ext4Lower(t, dir, filepath.Join(img, "lower.commit"), vsize)
	rf, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 4<<20)
	if _, err := io.ReadFull(rf, first); err != nil {
		t.Fatal(err)
	}
	rf.Close()
	os.WriteFile(filepath.Join(dir, "lower4m.sha256"), []byte(sha(first)+"\n"), 0o644)
	for i := 0; i < 32; i++ {
		n := strconv.Itoa(i)
		run(t, "", nil, filepath.Join(tools, "overlaybd-create"), filepath.Join(img, "u"+n+".data"), filepath.Join(img, "u"+n+".index"), "1")
		writeJSON(t, filepath.Join(img, "many"+n+".json"), map[string]any{
			"lowers":     []any{map[string]any{"file": "/mnt/img/lower.commit"}},
			"upper":      map[string]any{"index": "/mnt/img/u" + n + ".index", "data": "/mnt/img/u" + n + ".data"},
			"resultFile": "/mnt/img/many" + n + ".result",
		})
	}
	garbage := bytes.Repeat([]byte("not an overlaybd layer "), 50000)
	os.WriteFile(filepath.Join(img, "garbage.commit"), garbage, 0o644)
	writeJSON(t, filepath.Join(img, "missing.json"), map[string]any{
		"lowers":     []any{map[string]any{"file": "/mnt/img/lower.commit"}, map[string]any{"file": "/mnt/img/no-such-layer.commit"}},
		"resultFile": "/mnt/img/missing.result",
	})
	writeJSON(t, filepath.Join(img, "corrupt.json"), map[string]any{
		"lowers": []any{map[string]any{"file": "/mnt/img/garbage.commit"}}, "resultFile": "/mnt/img/corrupt.result",
	})
	os.WriteFile(filepath.Join(img, "badjson.json"), []byte(`{"lowers": [`), 0o644)
	globalConfig(t, dir)

	boot(t, dir, "tcmu-daemon-many.sh", 300*time.Second)

	for i := 0; i < 32; i++ {
		b, err := os.ReadFile(filepath.Join(img, "many"+strconv.Itoa(i)+".result"))
		if err != nil || string(b) != "success" {
			t.Errorf("result file of device %d: %q %v", i, b, err)
		}
	}
}
