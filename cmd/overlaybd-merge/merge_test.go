package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/internal/clitest"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

// writeImage writes a config.v1.json with the given lowers (bottom first).
func writeImage(t *testing.T, dir string, lowers []string, upper map[string]string) string {
	t.Helper()
	var ls []map[string]string
	for _, l := range lowers {
		ls = append(ls, map[string]string{"file": l})
	}
	img := map[string]any{"lowers": ls, "resultFile": filepath.Join(dir, "result")}
	if upper != nil {
		img["upper"] = upper
	}
	b, _ := json.Marshal(img)
	return clitest.WriteFile(t, filepath.Join(dir, "config.v1.json"), b)
}

func svcConfig(t *testing.T, dir string) string {
	return clitest.WriteFile(t, filepath.Join(dir, "overlaybd.json"), []byte(`{"logConfig": {"logPath": "`+filepath.Join(dir, "log")+`"}}`))
}

func layers(t *testing.T, names ...string) []string {
	var out []string
	for _, n := range names {
		out = append(out, testvectors.Path(t, "stack/"+n))
	}
	return out
}

func TestMergeVector(t *testing.T) {
	dir := t.TempDir()
	svc := svcConfig(t, dir)
	img := writeImage(t, dir, layers(t, "A.commit", "B.commit", "C.commit"), nil)
	if code, out, errOut := clitest.Run(t, dir, "--compress=false", "--service_config_path", svc, img, "merged.commit"); code != 0 || out != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	clitest.SameFile(t, filepath.Join(dir, "merged.commit"), testvectors.Path(t, "stack/merged-by-tool.commit"))

	// The default compresses (LZ4, 4 KiB, CRC, header not rewritten); the
	// output is overwritten.
	os.WriteFile(filepath.Join(dir, "merged.zfile"), []byte("old"), 0o644)
	if code, _, errOut := clitest.Run(t, dir, "--service-config-path", svc, img, "merged.zfile"); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	got, desc := clitest.Unwrap(t, filepath.Join(dir, "merged.zfile"))
	want, _ := os.ReadFile(testvectors.Path(t, "stack/merged-by-tool.commit"))
	if !bytes.Equal(got, want) || desc.String() != "zfile > lsmt" {
		t.Fatalf("compressed merge (%s) does not decompress to merged-by-tool.commit", desc)
	}
	if cgoCodecs {
		clitest.SameFile(t, filepath.Join(dir, "merged.zfile"), testvectors.Path(t, "stack/merged-by-tool.zfile"))
	}
}

// TestMergeAnyEnvelope: a ZFile lower gives the same result.
func TestMergeAnyEnvelope(t *testing.T) {
	dir := t.TempDir()
	img := writeImage(t, dir, layers(t, "A.commit", "B.zstd-bs16.zcommit", "C.commit"), nil)
	if code, _, errOut := clitest.Run(t, dir, "--compress=false", "--service_config_path", svcConfig(t, dir), img, "m"); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	clitest.SameFile(t, filepath.Join(dir, "m"), testvectors.Path(t, "stack/merged-by-tool.commit"))
	// -t wraps the output in the tar envelope.
	if code, _, errOut := clitest.Run(t, dir, "-t", "--service_config_path", svcConfig(t, dir), img, "m.tar"); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if _, desc := clitest.Unwrap(t, filepath.Join(dir, "m.tar")); desc.String() != "tar > zfile > lsmt" {
		t.Fatalf("-t gave %s", desc)
	}
}

func TestMergeErrors(t *testing.T) {
	dir := t.TempDir()
	svc := svcConfig(t, dir)
	good := writeImage(t, dir, layers(t, "A.commit"), nil)
	missing := filepath.Join(dir, "missing.json")
	os.WriteFile(missing, []byte(`{"lowers":[{"file":"/nonexistent/layer"}]}`), 0o644)
	notLSMT := filepath.Join(dir, "raw.json")
	os.WriteFile(notLSMT, []byte(`{"lowers":[{"file":"`+testvectors.Path(t, "zfile/plain.lz4-bs4.zfile")+`"}]}`), 0o644)
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{}, 106, "image_config_path is required"},
		{[]string{good}, 106, "output is required"},
		{[]string{good, "o", "x"}, 109, "not expected"},
		{[]string{"/nonexistent.json", "o"}, 105, "File does not exist"},
		{[]string{"--service_config_path", "/nonexistent.json", good, "o"}, 105, "File does not exist"},
		{[]string{"--service_config_path", svc, missing, "o"}, 255, "failed to create image file"},
		{[]string{"--service_config_path", svc, notLSMT, "o"}, 255, "not an LSMT layer"},
		{[]string{"--service_config_path", svc, "--upload", "http://x", good, "o"}, 255, "not supported yet"},
	} {
		code, out, errOut := clitest.Run(t, dir, c.args...)
		if code != c.code || !strings.Contains(errOut, c.msg) || out != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want %d and %q", c.args, code, out, errOut, c.code, c.msg)
		}
	}
}
