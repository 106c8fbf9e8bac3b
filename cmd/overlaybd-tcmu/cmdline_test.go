package main

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/internal/cli"
	"github.com/overlaybd-go/overlaybd/internal/clitest"
)

// TestMain runs the test binary as the daemon itself when a test asks
// (clitest.Run), so that the tests see its real exit status and streams.
func TestMain(m *testing.M) {
	clitest.Main(m, func() int { return run(context.Background(), os.Args[1:], os.Stderr) })
}

// TestCommandLineErrors: an unknown flag or a flag without its value is
// reported on standard error with the hint, exit 2 (usage), before anything
// touches the kernel; --help prints the usage and exits 0.
func TestCommandLineErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--bogus"}, exitUsage, "overlaybd-tcmu: unknown flag: --bogus\n" + cli.Hint + "\n"},
		{[]string{"-x"}, exitUsage, "overlaybd-tcmu: unknown flag: -x\n" + cli.Hint + "\n"},
		// Every unknown flag is named, in command-line order.
		{[]string{"--bogus", "a.json", "-vx", "--nope=1"}, exitUsage, "overlaybd-tcmu: unknown flags: --bogus -x --nope=1\n" + cli.Hint + "\n"},
		{[]string{"--service_config_path"}, exitUsage, "overlaybd-tcmu: flag needs an argument: --service_config_path\n" + cli.Hint + "\n"},
		{[]string{"--service-config-path"}, exitUsage, "overlaybd-tcmu: flag needs an argument: --service-config-path\n" + cli.Hint + "\n"},
	} {
		code, out, errOut := clitest.Run(t, t.TempDir(), c.args...)
		if code != c.code || out != "" || errOut != c.msg {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d and %q", c.args, code, out, errOut, c.code, c.msg)
		}
	}
	code, out, errOut := clitest.Run(t, t.TempDir(), "--help")
	if code != 0 || out != "" || !strings.HasPrefix(errOut, usage) || !strings.Contains(errOut, "--service-config-path string") {
		t.Errorf("--help: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// Two configurations: the message and the usage, exit 2.
	code, _, errOut = clitest.Run(t, t.TempDir(), "a.json", "b.json")
	if code != exitUsage || !strings.Contains(errOut, "give the global configuration once") {
		t.Errorf("two configurations: exit %d, stderr %q", code, errOut)
	}
}
