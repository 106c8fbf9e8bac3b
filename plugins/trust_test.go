package plugins

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// copyBinary copies src into a fresh folder with mode and returns its path.
func copyBinary(t *testing.T, src string, mode os.FileMode) string {
	t.Helper()
	dir := t.TempDir()
	dst := filepath.Join(dir, filepath.Base(src))
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dst, mode); err != nil {
		t.Fatal(err)
	}
	return dst
}

func sha256Of(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestStartErrors(t *testing.T) {
	ctx := context.Background()
	start := func(cfg Config) error {
		p, err := Start(ctx, cfg)
		if err == nil {
			p.Close()
		}
		return err
	}
	zstdOnly := func(path string, args ...string) Config {
		return Config{Path: path, Algorithms: []string{"zstd"}, Args: args}
	}

	t.Run("missing", func(t *testing.T) {
		err := start(zstdOnly(filepath.Join(t.TempDir(), "nope")))
		if err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "nope") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("relative", func(t *testing.T) {
		if err := start(zstdOnly("faultplugin")); err == nil || !strings.Contains(err.Error(), "not absolute") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("unknown-algorithm", func(t *testing.T) {
		err := start(Config{Path: faultBin, Algorithms: []string{"lzo"}})
		if err == nil || !strings.Contains(err.Error(), "not a ZFile codec") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("binary-writable-by-others", func(t *testing.T) {
		bin := copyBinary(t, faultBin, 0o757)
		if err := start(zstdOnly(bin)); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "writable by other users") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("binary-writable-by-group", func(t *testing.T) {
		bin := copyBinary(t, faultBin, 0o775)
		if err := start(zstdOnly(bin)); !errors.Is(err, ErrUntrusted) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("folder-writable-by-others", func(t *testing.T) {
		bin := copyBinary(t, faultBin, 0o755)
		if err := os.Chmod(filepath.Dir(bin), 0o777); err != nil {
			t.Fatal(err)
		}
		if err := start(zstdOnly(bin)); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), filepath.Dir(bin)) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("symlink-to-writable", func(t *testing.T) {
		bin := copyBinary(t, faultBin, 0o757)
		link := filepath.Join(t.TempDir(), "link")
		if err := os.Symlink(bin, link); err != nil {
			t.Fatal(err)
		}
		if err := start(zstdOnly(link)); !errors.Is(err, ErrUntrusted) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("owned-by-another-user", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to give the binary away")
		}
		bin := copyBinary(t, faultBin, 0o755)
		if err := os.Chown(bin, 12345, 12345); err != nil {
			t.Fatal(err)
		}
		if err := start(zstdOnly(bin)); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "uid 12345") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("sha256-mismatch", func(t *testing.T) {
		pin := strings.Repeat("ab", 32)
		err := start(Config{Path: faultBin, Algorithms: []string{"zstd"}, SHA256: pin})
		if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), sha256Of(t, faultBin)) || !strings.Contains(err.Error(), pin) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("sha256-malformed", func(t *testing.T) {
		if err := start(Config{Path: faultBin, Algorithms: []string{"zstd"}, SHA256: "xyz"}); err == nil || !strings.Contains(err.Error(), "hexadecimal") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("sha256-match", func(t *testing.T) {
		if err := start(Config{Path: faultBin, Algorithms: []string{"zstd"}, SHA256: sha256Of(t, faultBin)}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("protocol-version-mismatch", func(t *testing.T) {
		err := start(zstdOnly(faultBin, "-protocol", "7"))
		if err == nil || !strings.Contains(err.Error(), "incompatible API version") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("not-a-plugin", func(t *testing.T) {
		bin := copyBinary(t, "/bin/true", 0o755)
		if err := start(zstdOnly(bin)); err == nil || !strings.Contains(err.Error(), bin) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("duplicate-algorithm", func(t *testing.T) {
		_, err := Load(ctx, []Config{zstdOnly(faultBin), zstdOnly(faultBin)}, "")
		if err == nil || !strings.Contains(err.Error(), "already served") {
			t.Fatalf("err %v", err)
		}
	})
}

func TestRunByHand(t *testing.T) {
	out, err := execOutput(faultBin)
	if err == nil || !strings.Contains(out, "codec plugin") {
		t.Fatalf("running the plugin by hand: %v, %q", err, out)
	}
}
