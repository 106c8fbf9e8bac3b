package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/internal/cli"
	"github.com/overlaybd-go/overlaybd/internal/clitest"
)

// spellings finds the example of a flag's two spellings in the help.
var spellings = regexp.MustCompile(`spelled with "_" or "-" \((--[a-z_]+), (--[a-z-]+)\)`)

// TestHelpOnStdout: --help and -h print the whole help on standard output,
// as upstream's CLI11 does, exit 0 and write nothing on standard error; the
// help's example of the two spellings names one of this tool's own flags.
func TestHelpOnStdout(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		code, out, errOut := clitest.Run(t, t.TempDir(), arg)
		if code != cli.ExitOK || errOut != "" || !strings.HasPrefix(out, usage) || !strings.Contains(out, "--verbose") {
			t.Fatalf("%s: exit %d, stdout %q, stderr %q", arg, code, out, errOut)
		}
		m := spellings.FindStringSubmatch(usage)
		if m == nil || strings.ReplaceAll(m[1], "_", "-") != m[2] || (!strings.Contains(out, ", "+m[2]+" ") && !strings.Contains(out, "      "+m[2]+" ")) {
			t.Errorf("%s: the example of the two spellings %q names no flag of this tool:\n%s", arg, m, out)
		}
	}
}

// TestMissingValue: a flag without its value at the end of the command line
// is CLI11's ArgumentMismatch: its message, the hint, exit 114.
func TestMissingValue(t *testing.T) {
	args, msg := []string{"d", "i", "1", "-u"}, "-u: 1 required TEXT missing"
	code, out, errOut := clitest.Run(t, t.TempDir(), args...)
	if code != cli.ExitArgumentMismatch || out != "" || errOut != msg+"\n"+cli.Hint+"\n" {
		t.Fatalf("%q: exit %d, stdout %q, stderr %q; want 114 and %q", args, code, out, errOut, msg)
	}
}
