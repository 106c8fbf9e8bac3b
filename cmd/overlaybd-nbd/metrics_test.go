package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

// TestExporterCountsExportIO serves the vector stack with the exporter on,
// copies the whole export with nbdcopy, and checks that the per-device read
// counter says exactly what the client read, and that upstream's text is
// served beside it.
func TestExporterCountsExportIO(t *testing.T) {
	nbdcopy := needTool(t, "nbdcopy")
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	svc := writeJSON(t, filepath.Join(dir, "overlaybd.json"), map[string]any{
		"exporterConfig": map[string]any{"enable": true, "port": port, "address": "127.0.0.1"},
		"enableAudit":    false,
	})
	cfg := writeJSON(t, filepath.Join(dir, "stack.json"), map[string]any{
		"lowers": []any{
			map[string]any{"file": testvectors.Path(t, "stack/A.commit")},
			map[string]any{"file": testvectors.Path(t, "stack/B.commit")},
			map[string]any{"file": testvectors.Path(t, "stack/C.commit")},
		},
	})
	sock := filepath.Join(dir, "nbd.sock")
	srv := start(t, "--service_config_path", svc, "--unix", sock, "stack="+cfg)
	defer srv.stop(t)

	// --no-extents: read every byte rather than skip what BLOCK_STATUS calls holes.
	runTool(t, nbdcopy, "--no-extents", unixURI(sock, "stack"), filepath.Join(dir, "out.raw"))

	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: status %d, %v", resp.StatusCode, err)
	}
	m := regexp.MustCompile(`overlaybd_device_bytes_total\{device="stack",op="read"\} (\S+)`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("no read counter for the export in:\n%s", body)
	}
	if n, _ := strconv.ParseFloat(string(m[1]), 64); n != 64<<20 {
		t.Errorf("read counter %v, want %d (the whole export)", n, 64<<20)
	}
	if !regexp.MustCompile(`(?m)^# TYPE OverlayBD_Alive gauge$`).Match(body) {
		t.Errorf("upstream's OverlayBD_Alive metric is missing:\n%s", body)
	}
}
