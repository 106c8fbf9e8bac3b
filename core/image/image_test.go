package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/overlaybd-go/overlaybd/codecs/all"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/core/envelope"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/core/remote"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

// quiet discards the log lines of the images opened by the tests.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Expected raw images (testdata/README.md).
const (
	shaMerged = "1b9080e2fee87dd365461b1954d0ec5aef94ff96ade24da93499d01a70322e4b"
	shaAB     = "c0a515c9ecb4dd491d67f2ada43a6aac30c36a381776c511976b60115eaed013"
	shaA      = "dc81f3f64a32d07b8156453addbf9941908a040058a73f437d404d353ddc99cc"
)

func sha(tb testing.TB, f core.File) string {
	tb.Helper()
	b := make([]byte, f.Size())
	if _, err := f.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		tb.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// writeConfig writes cfg as config.v1.json in a temporary directory.
func writeConfig(tb testing.TB, dir string, cfg map[string]any) string {
	tb.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	p := filepath.Join(dir, "config.v1.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

func copyFile(tb testing.TB, src, dst string) {
	tb.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		tb.Fatal(err)
	}
}

func result(tb testing.TB, path string) string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func TestStackFromConfig(t *testing.T) {
	dir := t.TempDir()
	a := testvectors.Path(t, "stack/A.commit")
	// B in a dir as overlaybd.commit, but compressed (ZFile) and tar-wrapped;
	// a decoy .commit must lose to it (probe order).
	bdir := filepath.Join(dir, "B")
	os.MkdirAll(bdir, 0o755)
	out, err := envelope.Create(filepath.Join(bdir, "overlaybd.commit"), envelope.CreateOptions{Tar: true})
	if err != nil {
		t.Fatal(err)
	}
	zb, _ := os.ReadFile(testvectors.Path(t, "stack/B.zstd-bs16.zcommit"))
	out.Write(zb)
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	copyFile(t, testvectors.Path(t, "stack/A.commit"), filepath.Join(bdir, ".commit"))
	// C as a sealed-name file in its dir.
	cdir := filepath.Join(dir, "C")
	copyFile(t, testvectors.Path(t, "stack/C.commit"), filepath.Join(cdir, "overlaybd.sealed"))
	res := filepath.Join(dir, "result")
	p := writeConfig(t, dir, map[string]any{
		"lowers":     []any{map[string]any{"file": a}, map[string]any{"dir": bdir}, map[string]any{"dir": cdir}},
		"resultFile": res,
	})
	img, err := OpenFile(context.Background(), p, Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if got := result(t, res); got != "success" {
		t.Fatalf("result %q", got)
	}
	if img.Writable() {
		t.Fatal("image without upper is writable")
	}
	if got := sha(t, img); got != shaMerged {
		t.Fatalf("merged sha %s", got)
	}
	if d := img.Layers[1].Envelope.String(); d != "tar > zfile > lsmt" {
		t.Errorf("layer B envelope %q", d)
	}
	if _, err := img.WriteAt(make([]byte, 512), 0); !errors.Is(err, core.ErrReadOnly) {
		t.Fatalf("write to read-only image: %v", err)
	}
}

func TestWritableUpper(t *testing.T) {
	dir := t.TempDir()
	for _, sparse := range []bool{false, true} {
		data := filepath.Join(dir, "data"+map[bool]string{true: "-sparse"}[sparse])
		index := data + ".index"
		eng := psync.New(core.EngineConfig{})
		df, _ := eng.Open(data, core.OpenOptions{Flag: os.O_RDWR | os.O_CREATE | os.O_EXCL, Perm: 0o644})
		xf, _ := eng.Open(index, core.OpenOptions{Flag: os.O_RDWR | os.O_CREATE | os.O_EXCL, Perm: 0o644})
		w, err := lsmt.Create(df, xf, lsmt.CreateOptions{VirtualSize: 64 << 20, Sparse: sparse})
		if err != nil {
			t.Fatal(err)
		}
		w.Close()
		res := filepath.Join(dir, "result")
		p := writeConfig(t, dir, map[string]any{
			"lowers": []any{
				map[string]any{"file": testvectors.Path(t, "stack/A.commit")},
				map[string]any{"file": testvectors.Path(t, "stack/B.commit")},
			},
			"upper":      map[string]any{"data": data, "index": index},
			"resultFile": res,
		})
		img, err := OpenFile(context.Background(), p, Options{Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		if !img.Writable() || sha(t, img) != shaAB {
			t.Fatalf("sparse=%v: writable %v, content not A+B", sparse, img.Writable())
		}
		pat := bytes.Repeat([]byte{0xC3}, 8192)
		if _, err := img.WriteAt(pat, 1<<20); err != nil {
			t.Fatal(err)
		}
		if err := img.Discard(0, 4096); err != nil {
			t.Fatal(err)
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		img, err = OpenFile(context.Background(), p, Options{Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 8192)
		img.ReadAt(got, 1<<20)
		zero := make([]byte, 4096)
		img.ReadAt(zero, 0)
		if !bytes.Equal(got, pat) || !bytes.Equal(zero, make([]byte, 4096)) {
			t.Fatalf("sparse=%v: upper content lost across reopen", sparse)
		}
		img.Close()
		// ReadOnly ignores the upper.
		img, err = OpenFile(context.Background(), p, Options{ReadOnly: true, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		if img.Writable() || sha(t, img) != shaAB {
			t.Fatal("read-only open is not the lowers alone")
		}
		img.Close()
	}
}

func TestResultReasons(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, bytes.Repeat([]byte("junk"), 4096), 0o644)
	badTar := filepath.Join(dir, "badtar")
	hdr := envelope.TarHeaders(1<<20, 0o644) // claims more than the file holds
	os.WriteFile(badTar, hdr, 0o644)
	a := testvectors.Path(t, "stack/A.commit")
	digest := "sha256:" + strings.Repeat("ab", 32)

	for _, tc := range []struct {
		name   string
		cfg    map[string]any
		remote RemoteOpener
		want   string
	}{
		{"no layers", map[string]any{}, nil, "failed:*no lowers and no writable upper"},
		{"not a layer", map[string]any{"lowers": []any{map[string]any{"file": a}, map[string]any{"file": garbage}}}, nil,
			"failed:failed to create overlaybd device"},
		{"bad tar", map[string]any{"lowers": []any{map[string]any{"file": badTar}}}, nil,
			"failed:failed to open file as tar file " + badTar},
		{"missing without digest", map[string]any{"lowers": []any{map[string]any{"dir": filepath.Join(dir, "none")}}}, nil,
			"failed:failed to open layer 0"},
		{"remote without url", map[string]any{"lowers": []any{map[string]any{"dir": filepath.Join(dir, "none"), "digest": digest}}}, nil,
			"failed:empty repoBlobUrl"},
		{"remote not configured", map[string]any{"repoBlobUrl": "https://r.example/v2/x/blobs",
			"lowers": []any{map[string]any{"dir": filepath.Join(dir, "none"), "digest": digest}}}, nil,
			"failed:failed to open remote file https://r.example/v2/x/blobs/" + digest + ": " + ErrNoRemote.Error()},
		{"remote error", map[string]any{"repoBlobUrl": "https://r.example/v2/x/blobs/",
			"lowers": []any{map[string]any{"digest": digest}}},
			RemoteOpenerFunc(func(context.Context, string, config.Layer) (core.File, error) {
				return nil, errors.New("Unexpected response")
			}),
			"failed:failed to open remote file https://r.example/v2/x/blobs/" + digest + ": Unexpected response"},
		{"remote auth", map[string]any{"repoBlobUrl": "https://r.example/v2/x/blobs",
			"lowers": []any{map[string]any{"digest": digest}}},
			RemoteOpenerFunc(func(context.Context, string, config.Layer) (core.File, error) {
				return nil, fmt.Errorf("GET: 401: %w", remote.ErrAuth)
			}),
			"failed:failed to open remote file https://r.example/v2/x/blobs/" + digest + ": Authentication failed"},
		{"turboOCI", map[string]any{"lowers": []any{map[string]any{"file": a, "targetFile": a}}}, nil,
			"failed:turboOCI layers (targetFile/targetDigest/gzipIndex of layer 0) are not supported yet"},
		{"upper missing", map[string]any{"lowers": []any{map[string]any{"file": a}},
			"upper": map[string]any{"data": filepath.Join(dir, "nodata"), "index": filepath.Join(dir, "noindex")}}, nil,
			"failed:"},
		{"accel and record", map[string]any{"lowers": []any{map[string]any{"file": a}}, "accelerationLayer": true,
			"recordTracePath": filepath.Join(dir, "trace")}, nil, "failed:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := filepath.Join(t.TempDir(), "result")
			tc.cfg["resultFile"] = res
			p := writeConfig(t, t.TempDir(), tc.cfg)
			img, err := OpenFile(context.Background(), p, Options{Remote: tc.remote, Logger: quiet})
			if err == nil {
				img.Close()
				t.Fatal("opened")
			}
			got := result(t, res)
			if pre, sub, ok := strings.Cut(tc.want, "*"); ok {
				if !strings.HasPrefix(got, pre) || !strings.Contains(got, sub) {
					t.Fatalf("result %q, want %q…%q", got, pre, sub)
				}
			} else if got != tc.want {
				t.Fatalf("result %q, want %q (err %v)", got, tc.want, err)
			}
		})
	}
}

func TestRemoteLower(t *testing.T) {
	var urls []string
	remote := RemoteOpenerFunc(func(_ context.Context, url string, l config.Layer) (core.File, error) {
		urls = append(urls, url)
		return psync.New(core.EngineConfig{}).Open(testvectors.Path(t, "stack/B.commit"), core.OpenOptions{Flag: os.O_RDONLY})
	})
	dir := t.TempDir()
	res := filepath.Join(dir, "result")
	p := writeConfig(t, dir, map[string]any{
		"repoBlobUrl": "https://r.example/v2/x/blobs",
		"lowers": []any{
			map[string]any{"file": testvectors.Path(t, "stack/A.commit")},
			map[string]any{"dir": filepath.Join(dir, "B"), "digest": "sha256:bb", "size": 278528},
		},
		"resultFile": res,
	})
	img, err := OpenFile(context.Background(), p, Options{Remote: remote, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if sha(t, img) != shaAB || len(urls) != 1 || urls[0] != "https://r.example/v2/x/blobs/sha256:bb" || !img.Layers[1].Remote {
		t.Fatalf("remote lower: urls %q", urls)
	}
	// With accelerationLayer the last lower is left out.
	p = writeConfig(t, dir, map[string]any{
		"lowers":            []any{map[string]any{"file": testvectors.Path(t, "stack/A.commit")}, map[string]any{"dir": dir}},
		"accelerationLayer": true,
	})
	img2, err := OpenFile(context.Background(), p, Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer img2.Close()
	if sha(t, img2) != shaA {
		t.Fatal("acceleration layer was stacked")
	}
}
