package clitest_test

import (
	"bytes"
	"errors"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/internal/cli"
)

// cli11Option is an option of an upstream tool that takes a value, with
// the name and the type CLI11 gives it in "<name>: 1 required <type>
// missing" (from the tools' add_option calls at upstream's commit 063821f).
type cli11Option struct {
	typed string // as the command line spells it
	name  string // as CLI11 names it
	typ   string
}

// upstreamTools lists, for each tool that keeps upstream's contract, its
// positional arguments (enough of them to pass the parser) and its options
// that take a value. The options validated as existing files
// (--service_config_path, --cred_file_path, --tls_key_path, --tls_cert_path:
// CLI11 types them FILEPATH:FILE) are left out: the tools name their type
// TEXT.
var upstreamTools = map[string]struct {
	positionals []string
	options     []cli11Option
}{
	"overlaybd-create": {[]string{"d", "i", "1"}, []cli11Option{{"-u", "-u", "TEXT"}}},
	"overlaybd-commit": {[]string{"d", "i", "o"}, []cli11Option{
		{"-m", "-m", "TEXT"}, {"--uuid", "--uuid", "TEXT"}, {"-p", "--parent-uuid", "TEXT"},
		{"--parent-uuid", "--parent-uuid", "TEXT"}, {"--algorithm", "--algorithm", "TEXT"},
		{"--bs", "--bs", "INT"}, {"--compress_threads", "--compress_threads", "INT"},
		{"--upload", "--upload", "TEXT"}, {"--upload_bs", "--upload_bs", "INT"},
	}},
	"overlaybd-zfile": {[]string{"s", "t"}, []cli11Option{{"--algorithm", "--algorithm", "TEXT"}, {"--bs", "--bs", "INT"}}},
	"overlaybd-merge": {[]string{"c", "o"}, []cli11Option{{"--upload", "--upload", "TEXT"}, {"--upload_bs", "--upload_bs", "INT"}}},
}

// TestUpstreamTools builds the tools that keep upstream's contract and
// checks CLI11's messages and exit codes in each: a value missing at the
// end of the command line for every option that takes one (114), an
// unknown flag and a positional too many (109), a missing positional
// (106), and --help (0, on standard output).
func TestUpstreamTools(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the tools")
	}
	bin := t.TempDir()
	var pkgs []string
	for tool := range upstreamTools {
		pkgs = append(pkgs, "github.com/overlaybd-go/overlaybd/cmd/"+tool)
	}
	gocmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	if out, err := exec.Command(gocmd, append([]string{"build", "-o", bin + "/"}, pkgs...)...).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for tool, c := range upstreamTools {
		run := func(args ...string) (int, string, string) {
			cmd := exec.Command(filepath.Join(bin, tool), args...)
			cmd.Dir = t.TempDir()
			var out, errOut bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errOut
			err := cmd.Run()
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Fatal(err)
			}
			return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
		}
		check := func(args []string, code int, msg string) {
			t.Helper()
			got, out, errOut := run(args...)
			if got != code || out != "" || errOut != msg+"\n"+cli.Hint+"\n" {
				t.Errorf("%s %q: exit %d, stdout %q, stderr %q; want %d and %q", tool, args, got, out, errOut, code, msg)
			}
		}
		for _, o := range c.options {
			check(append(append([]string{}, c.positionals...), o.typed), cli.ExitArgumentMismatch, o.name+": 1 required "+o.typ+" missing")
		}
		check(append([]string{"--no-such-flag"}, c.positionals...), cli.ExitExtras, "The following argument was not expected: --no-such-flag")
		check(append(append([]string{}, c.positionals...), "x"), cli.ExitExtras, "The following argument was not expected: x")
		check(append(append([]string{"--no-such-flag", "--other"}, c.positionals...), "x"), cli.ExitExtras,
			"The following arguments were not expected: x --other --no-such-flag")
		check(nil, cli.ExitRequired, map[string]string{
			"overlaybd-create": "data_file", "overlaybd-commit": "data_file",
			"overlaybd-zfile": "source_file", "overlaybd-merge": "image_config_path",
		}[tool]+" is required")
		if code, out, errOut := run("--help"); code != 0 || errOut != "" || !strings.HasPrefix(out, "Usage:") || !strings.Contains(out, tool+" ") {
			t.Errorf("%s --help: exit %d, stdout %q, stderr %q", tool, code, out, errOut)
		}
	}
}
