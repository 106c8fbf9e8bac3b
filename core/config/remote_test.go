package config

import (
	"os"
	"path/filepath"
	"testing"
)

// TestNeedsRemote: a lower needs the registry only when it has a digest and
// no local candidate (file, or dir/overlaybd.commit, dir/.commit,
// dir/overlaybd.sealed) exists.
func TestNeedsRemote(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "layer.commit")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	sealedDir := filepath.Join(dir, "sealed")
	if err := os.Mkdir(sealedDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sealedDir, "overlaybd.sealed"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	missing := filepath.Join(dir, "missing")
	for _, c := range []struct {
		name   string
		lowers []Layer
		want   bool
	}{
		{"no lowers", nil, false},
		{"local file", []Layer{{File: file, Digest: digest}}, false},
		{"sealed in dir", []Layer{{Dir: sealedDir, Digest: digest}}, false},
		{"missing file, digest", []Layer{{File: missing, Digest: digest}}, true},
		{"empty dir, digest", []Layer{{Dir: dir, Digest: digest}}, true},
		{"digest only", []Layer{{Digest: digest}}, true},
		{"missing file, no digest", []Layer{{File: missing}}, false},
		{"one of several", []Layer{{File: file}, {Dir: sealedDir}, {Dir: missing, Digest: digest}}, true},
		{"all local", []Layer{{File: file, Digest: digest}, {Dir: sealedDir, Digest: digest}}, false},
	} {
		img := &Image{Lowers: c.lowers}
		if got := img.NeedsRemote(); got != c.want {
			t.Errorf("%s: NeedsRemote() = %v, want %v", c.name, got, c.want)
		}
	}
}
