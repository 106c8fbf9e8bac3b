package plugins

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/overlaybd-go/overlaybd/core/config"
)

// TestCloseWaits starts plugins from an overlaybd.json, uses them, restarts
// one, closes the host, and checks that no goroutine of the host or of
// go-plugin is left behind.
func TestCloseWaits(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "overlaybd.json")
	link := filepath.Join(dir, "bin")
	if err := os.Symlink(filepath.Dir(faultBin), link); err != nil {
		t.Fatal(err)
	}
	js := `{"codecPlugins": [{"path": "bin/faultplugin", "algorithms": ["lz4", "zstd"]}]}`
	if err := os.WriteFile(cfgPath, []byte(js), 0o600); err != nil {
		t.Fatal(err)
	}
	g, err := config.LoadGlobal(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	h, err := LoadGlobal(context.Background(), g, WithHealthInterval(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	p := h.Plugins()[0]
	c, err := p.Codec("lz4")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.Decompress(make([]byte, 8), []byte{0x10, 'x'}); err != nil || n != 1 {
		t.Fatalf("%d, %v", n, err)
	}
	proc, err := os.FindProcess(p.Pid())
	if err != nil {
		t.Fatal(err)
	}
	proc.Kill()
	if n, err := c.Decompress(make([]byte, 8), []byte{0x10, 'x'}); err != nil || n != 1 {
		t.Fatalf("after a kill: %d, %v", n, err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Decompress(make([]byte, 8), []byte{0x10, 'x'}); err == nil {
		t.Fatal("codec of a closed plugin still works")
	}
}
