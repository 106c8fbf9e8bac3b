package plugins

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
)

func writeToolConfig(t *testing.T, cfg any) string {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "overlaybd.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLoadForTool loads a configuration naming the test plugin for zstd,
// codes a block through core.Codecs, and checks that CloseLogging reports
// the plugin's own counters and stops its process.
func TestLoadForTool(t *testing.T) {
	svc := writeToolConfig(t, map[string]any{
		"codecPlugins": []any{map[string]any{"path": faultBin, "algorithms": []string{"zstd"}}},
	})
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	g, h, err := LoadForTool(context.Background(), svc, WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	if g.File != svc || len(h.Plugins()) != 1 {
		t.Fatalf("config %q, %d plugins", g.File, len(h.Plugins()))
	}
	pid := h.Plugins()[0].Pid()
	f, err := core.Codecs.Lookup("zstd")
	if err != nil {
		t.Fatal(err)
	}
	c, err := f()
	if err != nil {
		t.Fatal(err)
	}
	src := bytes.Repeat([]byte("overlaybd "), 400)
	dst := make([]byte, c.CompressBound(len(src)))
	n, err := c.Compress(dst, src)
	if err != nil {
		t.Fatal(err)
	}
	back := make([]byte, len(src))
	if m, err := c.Decompress(back, dst[:n]); err != nil || !bytes.Equal(back[:m], src) {
		t.Fatalf("round trip through the plugin: %d bytes, %v", m, err)
	}
	if err := h.CloseLogging(log); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !regexp.MustCompile(`msg="codec plugin stats" .*zstd\.compressed=1 zstd\.compressed_bytes=4000 zstd\.decompressed=1 `).MatchString(out) {
		t.Fatalf("no stats line with one block each way:\n%s", out)
	}
	if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
		t.Fatalf("plugin process %d after CloseLogging: %v", pid, err)
	}
}

// TestLoadForToolErrors checks that each failing step is named.
func TestLoadForToolErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent.json")
	bad := writeToolConfig(t, map[string]any{
		"codecPlugins": []any{map[string]any{"path": "no-such-plugin", "algorithms": []string{"lz4"}}},
	})
	for path, want := range map[string]string{
		missing: "load service config",
		bad:     "start codec plugins of " + bad + ": codecPlugins[0]: codec plugin " + filepath.Join(filepath.Dir(bad), "no-such-plugin"),
	} {
		g, h, err := LoadForTool(context.Background(), path)
		if err == nil || !strings.Contains(err.Error(), want) || g != nil || h != nil {
			t.Errorf("%s: %v, %v, %v; want an error containing %q", path, g, h, err, want)
		}
	}
	var none *Host
	if err := none.CloseLogging(nil); err != nil {
		t.Fatalf("nil Host: %v", err)
	}
}
