package clitest_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	_ "github.com/overlaybd-go/overlaybd/codecs/all"
	"github.com/overlaybd-go/overlaybd/internal/clitest"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

// TestMain makes the test binary a small tool: it prints its arguments and
// working folder, and exits with the status its first argument names.
func TestMain(m *testing.M) {
	clitest.Main(m, func() int {
		wd, _ := os.Getwd()
		fmt.Fprintf(os.Stdout, "args %s\n", strings.Join(os.Args[1:], ","))
		fmt.Fprintf(os.Stderr, "in %s\n", filepath.Base(wd))
		code, _ := strconv.Atoi(os.Args[1])
		return code
	})
}

func TestRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "work")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, want := range []int{0, 2, 106, 255} {
		code, out, errOut := clitest.Run(t, dir, strconv.Itoa(want), "--flag", "a b")
		if code != want || out != fmt.Sprintf("args %d,--flag,a b\n", want) || errOut != "in work\n" {
			t.Errorf("exit %d, stdout %q, stderr %q; want %d", code, out, errOut, want)
		}
	}
}

func TestSameFileAndPluginConfig(t *testing.T) {
	dir := t.TempDir()
	p := clitest.PluginConfig(t, dir, "plugins/zstd-cgo", "zstd", "lz4")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"codecPlugins":[{"algorithms":["zstd","lz4"],"path":"plugins/zstd-cgo"}]}`; string(b) != want || filepath.Dir(p) != dir {
		t.Fatalf("%s: %s, want %s", p, b, want)
	}
	clitest.SameFile(t, p, p)
}

func TestUnwrap(t *testing.T) {
	want, err := os.ReadFile(testvectors.Path(t, "lsmt/rw-log.commit"))
	if err != nil {
		t.Fatal(err)
	}
	for rel, nesting := range map[string]string{
		"lsmt/rw-log.commit":       "lsmt",
		"lsmt/rw-log.commit.zfile": "zfile > lsmt",
	} {
		got, desc := clitest.Unwrap(t, testvectors.Path(t, rel))
		if desc.String() != nesting || !bytes.Equal(got, want) {
			t.Errorf("%s: %s, %d bytes; want %s and the bytes of lsmt/rw-log.commit", rel, desc, len(got), nesting)
		}
	}
}
