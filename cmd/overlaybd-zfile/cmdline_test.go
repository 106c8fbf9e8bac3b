package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/internal/cli"
)

// TestHelpOneStream: --help and -h print the whole help (usage, then the
// flags) on standard output, as upstream's CLI11 does, and nothing on
// standard error.
func TestHelpOneStream(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), []string{arg}, nil, &out, &errb); code != cli.ExitOK {
			t.Fatalf("%s: exit %d", arg, code)
		}
		help := out.String()
		if errb.Len() != 0 || !strings.HasPrefix(help, usage) || !strings.Contains(help, "--algorithm string") || !strings.Contains(help, "--bs int") {
			t.Fatalf("%s: stdout %q, stderr %q", arg, help, errb.String())
		}
	}
}

// TestCommandLineErrors: command-line errors are CLI11's, as in the other
// tools that keep upstream's contract: the message, the hint line, and
// CLI11's exit code (114 for a flag without its value at the end, 104 for a
// value that does not convert, 106 for a missing positional, 109 for an
// unknown flag or an argument too many); nothing on standard output.
func TestCommandLineErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"src", "dst", "--bs"}, cli.ExitArgumentMismatch, "--bs: 1 required INT missing"},
		{[]string{"src", "--algorithm"}, cli.ExitArgumentMismatch, "--algorithm: 1 required TEXT missing"},
		{[]string{"src", "--service_config_path"}, cli.ExitArgumentMismatch, "--service_config_path: 1 required TEXT missing"},
		{[]string{"--bs", "src", "dst"}, cli.ExitConversion, `invalid argument "src" for "--bs" flag`},
		{nil, cli.ExitRequired, "source_file is required"},
		{[]string{"a", "b", "c"}, cli.ExitExtras, "The following argument was not expected: c"},
		{[]string{"--no-such-flag", "a"}, cli.ExitExtras, "The following argument was not expected: --no-such-flag"},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), c.args, nil, &out, &errb)
		if want := c.msg + "\n" + cli.Hint + "\n"; code != c.code || out.Len() != 0 || !strings.HasPrefix(errb.String(), c.msg) || !strings.HasSuffix(errb.String(), "\n"+cli.Hint+"\n") || (c.code != cli.ExitConversion && errb.String() != want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d and %q", c.args, code, out.String(), errb.String(), c.code, want)
		}
	}
}
