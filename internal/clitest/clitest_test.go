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
	"github.com/overlaybd-go/overlaybd/internal/cli"
	"github.com/overlaybd-go/overlaybd/internal/clitest"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

// TestMain makes the test binary a small tool: it prints its arguments and
// working folder, and exits with the status its first argument names; or,
// when the first argument is not a number, it parses its arguments as a
// tool that keeps upstream's contract does (see cli11Tool).
func TestMain(m *testing.M) {
	clitest.Main(m, func() int {
		if len(os.Args) < 2 {
			return cli11Tool(nil)
		}
		if _, err := strconv.Atoi(os.Args[1]); err != nil {
			return cli11Tool(os.Args[1:])
		}
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

// cli11Usage is the usage of cli11Tool.
const cli11Usage = `Usage: cli11 [OPTIONS] data_file [index_file]

Flags may be spelled with "_" or "-" (--service_config_path, --service-config-path).
`

// cli11Tool is a tool with upstream's start-up: flags, two positionals of
// which one is required, help on standard output and errors on standard
// error in CLI11's words.
func cli11Tool(args []string) int {
	fs := cli.NewFlagSet("cli11", os.Stdout, cli11Usage)
	fs.StringP("parent-uuid", "p", "", "parent UUID")
	fs.StringP("message", "m", "", "message")
	fs.Int("bs", 4, "block size")
	fs.String("service_config_path", "", "service configuration")
	fs.BoolP("force", "f", false, "force")
	fs.Bool("verbose", false, "debug logging")
	if code, ok := cli.Upstream(os.Stderr).Parse(fs, args, 1, "data_file", "index_file"); !ok {
		return code
	}
	fmt.Println("ok", strings.Join(fs.Args(), ","))
	return cli.ExitOK
}

// TestUpstreamChecks runs cli11Tool through the checks of the tools that
// keep upstream's contract.
func TestUpstreamChecks(t *testing.T) {
	clitest.UpstreamHelp(t, cli11Usage)
	clitest.MissingValue(t, "--bs: 1 required INT missing", "d", "--bs")
	clitest.MissingValue(t, "--parent-uuid: 1 required TEXT missing", "d", "-fp")
	clitest.MissingValue(t, "-m: 1 required TEXT missing", "--nope", "d", "-m")
	clitest.MissingValue(t, "--service-config-path: 1 required TEXT missing", "--service-config-path")
	clitest.Extras(t, "The following argument was not expected: --nope", "--nope", "d")
	clitest.Extras(t, "The following arguments were not expected: -Q --b --a", "--a", "d", "--b", "-fQ")
	clitest.Extras(t, "The following arguments were not expected: y x --a", "--a", "d", "i", "x", "y")
	if code, out, errOut := clitest.Run(t, t.TempDir(), "--nope"); code != cli.ExitRequired || out != "" || errOut != "data_file is required\n"+cli.Hint+"\n" {
		t.Errorf("--nope alone: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, out, errOut := clitest.Run(t, t.TempDir(), "-f", "d", "--bs", "8", "i"); code != 0 || out != "ok d,i\n" || errOut != "" {
		t.Errorf("good command line: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}
