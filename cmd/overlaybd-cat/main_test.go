package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/internal/cli"
	"github.com/overlaybd-go/overlaybd/internal/clitest"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

// Expected sha256 of the raw images (testdata/README.md).
const (
	hashMain  = "3f5ae43d7b2f67b16af3f888016c9c3862415afb23032e86e071cd94ddfee7bc"
	hashA     = "dc81f3f64a32d07b8156453addbf9941908a040058a73f437d404d353ddc99cc"
	hashAB    = "c0a515c9ecb4dd491d67f2ada43a6aac30c36a381776c511976b60115eaed013"
	hashABC   = "1b9080e2fee87dd365461b1954d0ec5aef94ff96ade24da93499d01a70322e4b"
	hashEmpty = "49bc20df15e412a64472421e13fe86ff1c5165e18b2afccf160d4dc19fe68a14"
)

func v(t *testing.T, rel string) string { return testvectors.Path(t, rel) }

// cat runs the tool and returns the sha256 of what it wrote to stdout.
func cat(t *testing.T, args ...string) (string, int, string) {
	t.Helper()
	h := sha256.New()
	var stderr bytes.Buffer
	code := run(context.Background(), args, h, &stderr)
	return hex.EncodeToString(h.Sum(nil)), code, stderr.String()
}

func TestCatVectors(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"committed", []string{v(t, "lsmt/rw-log.commit")}, hashMain},
		{"committed from sparse", []string{v(t, "lsmt/rw-sparse.commit")}, hashMain},
		{"zfile", []string{v(t, "lsmt/rw-log.lz4-bs32.zcommit")}, hashMain},
		{"zfile zstd", []string{v(t, "lsmt/rw-log.zstd-bs4.zcommit")}, hashMain},
		{"A", []string{v(t, "stack/A.commit")}, hashA},
		{"A+B", []string{v(t, "stack/A.commit"), v(t, "stack/B.zstd-bs16.zcommit")}, hashAB},
		{"A+B+C", []string{v(t, "stack/A.commit"), v(t, "stack/B.commit"), v(t, "stack/C.commit")}, hashABC},
		{"merged", []string{v(t, "stack/merged-by-tool.zfile")}, hashABC},
		{"append-only upper", []string{"--upper-data", v(t, "lsmt/rw-log.data"), "--upper_index", v(t, "lsmt/rw-log.index")}, hashMain},
		{"empty 1 GiB upper", []string{"--upper-data", v(t, "lsmt/tool-created-1g.data"), "--upper-index", v(t, "lsmt/tool-created-1g.index")}, hashEmpty},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, code, stderr := cat(t, c.args...)
			if code != 0 || got != c.want {
				t.Fatalf("exit %d, sha256 %s, want %s; stderr: %s", code, got, c.want, stderr)
			}
		})
	}
}

// sparseVector rebuilds the sparse writable data file with its holes where
// the vector's extents list says.
func sparseVector(t *testing.T) string {
	zf, err := os.Open(v(t, "lsmt/rw-sparse.data.zst"))
	if err != nil {
		t.Fatal(err)
	}
	defer zf.Close()
	dec, err := zstd.NewReader(zf)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	raw, err := io.ReadAll(dec)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "rw-sparse.data")
	out, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := out.Truncate(int64(len(raw))); err != nil {
		t.Fatal(err)
	}
	ext, err := os.Open(v(t, "lsmt/rw-sparse.extents.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	sc := bufio.NewScanner(ext)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || strings.HasPrefix(f[0], "#") {
			continue
		}
		s, _ := strconv.ParseInt(f[0], 10, 64)
		e, _ := strconv.ParseInt(f[1], 10, 64)
		if _, err := out.WriteAt(raw[s:e], s); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func TestCatSparseUpper(t *testing.T) {
	got, code, stderr := cat(t, "--upper-data", sparseVector(t))
	if code != 0 || got != hashMain {
		t.Fatalf("exit %d, sha256 %s; stderr: %s", code, got, stderr)
	}
}

func TestCatSparseOutput(t *testing.T) {
	out := filepath.Join(t.TempDir(), "disk.raw")
	var stderr bytes.Buffer
	args := []string{"-o", out, v(t, "stack/A.commit"), v(t, "stack/B.commit"), v(t, "stack/C.commit")}
	if code := run(context.Background(), args, io.Discard, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if h := sha256.Sum256(b); hex.EncodeToString(h[:]) != hashABC {
		t.Fatalf("output sha256 %x", h)
	}
	// The empty 1 GiB layer becomes a file with (almost) no blocks.
	args = []string{"-o", out, "--upper-data", v(t, "lsmt/tool-created-1g.data"), "--upper-index", v(t, "lsmt/tool-created-1g.index")}
	if code := run(context.Background(), args, io.Discard, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 1<<30 {
		t.Fatalf("size %d", fi.Size())
	}
	if blocks := fi.Sys().(*syscall.Stat_t).Blocks; blocks*512 > 1<<20 {
		t.Errorf("output of an empty layer allocates %d bytes, want holes", blocks*512)
	}
}

// makeUpper creates an empty append-only writable layer of vsize.
func makeUpper(t *testing.T, dir string, vsize int64) (data, index string) {
	data, index = filepath.Join(dir, "writable_data"), filepath.Join(dir, "writable_index")
	open := func(p string) core.File {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		return psync.NewFile(f, nil)
	}
	w, err := lsmt.Create(open(data), open(index), lsmt.CreateOptions{VirtualSize: vsize})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(bytes.Repeat([]byte{0x5a}, 4096), 8192); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return data, index
}

func fileHash(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func TestCatConfig(t *testing.T) {
	dir := t.TempDir()
	result := filepath.Join(dir, "init-debug.log")
	writeCfg := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	lowers := fmt.Sprintf(`[{"file":%q},{"file":%q},{"file":%q}]`, v(t, "stack/A.commit"), v(t, "stack/B.zstd-bs16.zcommit"), v(t, "stack/C.commit"))
	ro := writeCfg("ro.json", fmt.Sprintf(`{"lowers":%s,"upper":{},"resultFile":%q}`, lowers, result))
	got, code, stderr := cat(t, "--config", ro)
	if code != 0 || got != hashABC {
		t.Fatalf("read-only config: exit %d, %s; %s", code, got, stderr)
	}

	data, index := makeUpper(t, dir, 64<<20)
	before := fileHash(t, data) + fileHash(t, index)
	rw := writeCfg("rw.json", fmt.Sprintf(`{"lowers":%s,"upper":{"data":%q,"index":%q},"resultFile":%q}`, lowers, data, index, result))
	out := filepath.Join(dir, "out.raw")
	var errb bytes.Buffer
	if code := run(context.Background(), []string{"--config", rw, "-o", out}, io.Discard, &errb); code != 0 {
		t.Fatalf("writable config: exit %d: %s", code, errb.String())
	}
	disk, _ := os.ReadFile(out)
	want := make([]byte, 4096)
	for i := range want {
		want[i] = 0x5a
	}
	if len(disk) != 64<<20 || !bytes.Equal(disk[8192:12288], want) {
		t.Fatalf("the upper's write is missing from the output")
	}
	// Outside the upper's write the disk is A+B+C.
	got, _, _ = cat(t, "--config", ro)
	if got != hashABC {
		t.Fatal("unexpected")
	}
	if fileHash(t, data)+fileHash(t, index) != before {
		t.Error("the writable layer was modified")
	}
	if _, err := os.Stat(result); err == nil {
		t.Error("a result file was written")
	}
	upperOnly := writeCfg("upper.json", fmt.Sprintf(`{"lowers":[],"upper":{"data":%q,"index":%q}}`, v(t, "lsmt/rw-log.data"), v(t, "lsmt/rw-log.index")))
	if got, code, stderr := cat(t, "--config", upperOnly); code != 0 || got != hashMain {
		t.Fatalf("upper-only config: exit %d, %s; %s", code, got, stderr)
	}
}

func TestCatErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := clitest.WriteFile(t, filepath.Join(dir, "c.json"), []byte(`{"lowers":[{"file":"/nonexistent/layer"}]}`))
	out := filepath.Join(dir, "o")
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--config", cfg, v(t, "stack/A.commit")}, cli.ExitValidation, "cannot be combined"},
		{[]string{"--upper-index", v(t, "lsmt/rw-log.index")}, cli.ExitValidation, "needs --upper-data"},
		{nil, cli.ExitRequired, "nothing to read"},
		{[]string{"--bogus"}, cli.ExitValidation, "unknown flag"},
		{[]string{filepath.Join(dir, "missing.commit")}, cli.ExitFailure, "missing.commit"},
		{[]string{v(t, "zfile/plain.lz4-bs4.zfile")}, cli.ExitFailure, "not an LSMT layer"},
		{[]string{v(t, "lsmt/rw-log.data")}, cli.ExitFailure, "layer 0"},
		{[]string{"--config", cfg}, cli.ExitFailure, ""},
		{[]string{"--service-config-path", filepath.Join(dir, "none.json"), v(t, "stack/A.commit")}, cli.ExitFailure, "none.json"},
		{[]string{"-o", out, "--config", cfg}, cli.ExitFailure, ""},
	}
	for _, c := range cases {
		_, code, stderr := cat(t, c.args...)
		if code != c.code || !strings.Contains(stderr, c.msg) {
			t.Errorf("%q: exit %d, stderr %q; want %d containing %q", c.args, code, stderr, c.code, c.msg)
		}
	}
	// The output may not be one of the inputs.
	b, _ := os.ReadFile(v(t, "stack/A.commit"))
	cp := clitest.WriteFile(t, filepath.Join(dir, "A.commit"), b)
	if _, code, stderr := cat(t, "-o", cp, cp); code != cli.ExitFailure || !strings.Contains(stderr, "refusing to overwrite") {
		t.Errorf("output = input: exit %d, %s", code, stderr)
	}
	if fileHash(t, cp) != fileHash(t, v(t, "stack/A.commit")) {
		t.Error("input overwritten")
	}
}
