package clitest

import (
	"regexp"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/internal/cli"
)

// spellings finds, in a tool's usage, the example of a flag's two
// spellings: `spelled with "_" or "-" (--service_config_path, --service-config-path)`.
var spellings = regexp.MustCompile(`spelled with "_" or "-" \((--[a-z_]+), (--[a-z-]+)\)`)

// UpstreamHelp runs the tool (see Main) with --help and with -h and checks
// what a tool that keeps upstream's contract prints: the whole help — usage,
// then the flags — on standard output, where CLI11 prints it, nothing on
// standard error, exit status 0; and the usage's example of the two
// spellings of a flag names one of this tool's own flags.
func UpstreamHelp(t *testing.T, usage string) {
	t.Helper()
	for _, arg := range []string{"--help", "-h"} {
		code, out, errOut := Run(t, t.TempDir(), arg)
		if code != cli.ExitOK || errOut != "" || !strings.HasPrefix(out, usage) || !strings.Contains(out, "--verbose") {
			t.Fatalf("%s: exit %d, stdout %q, stderr %q", arg, code, out, errOut)
		}
		m := spellings.FindStringSubmatch(usage)
		if m == nil || strings.ReplaceAll(m[1], "_", "-") != m[2] ||
			(!strings.Contains(out, ", "+m[2]+" ") && !strings.Contains(out, "      "+m[2]+" ")) {
			t.Errorf("%s: the example of the two spellings %q names no flag of this tool:\n%s", arg, m, out)
		}
	}
}

// MissingValue runs the tool with args, whose last is a flag without its
// value, and checks CLI11's ArgumentMismatch: msg ("--bs: 1 required INT
// missing"; the flag named as CLI11 names it, "-p" as "--parent-uuid": see
// cli.CLI11Name) and the hint on standard error, nothing on standard
// output, exit status 114.
func MissingValue(t *testing.T, msg string, args ...string) {
	t.Helper()
	code, out, errOut := Run(t, t.TempDir(), args...)
	if code != cli.ExitArgumentMismatch || out != "" || errOut != msg+"\n"+cli.Hint+"\n" {
		t.Fatalf("%q: exit %d, stdout %q, stderr %q; want %d and %q", args, code, out, errOut, cli.ExitArgumentMismatch, msg)
	}
}

// Extras runs the tool with args, which hold unknown flags or positional
// arguments too many, and checks CLI11's ExtrasError: msg ("The following
// arguments were not expected: --b --a", CLI11 2.2.0 listing them last
// first) and the hint on standard error, nothing on standard output, exit
// status 109. A tool names every unknown flag when it parses with
// cli.Upstream(stderr).Parse; one that calls FlagSet.Parse stops at the
// first.
func Extras(t *testing.T, msg string, args ...string) {
	t.Helper()
	code, out, errOut := Run(t, t.TempDir(), args...)
	if code != cli.ExitExtras || out != "" || errOut != msg+"\n"+cli.Hint+"\n" {
		t.Fatalf("%q: exit %d, stdout %q, stderr %q; want %d and %q", args, code, out, errOut, cli.ExitExtras, msg)
	}
}
