package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/internal/cli"
)

const usage = "Usage: tool [OPTIONS] a [b]\n\nOptions:\n"

func flags(w *bytes.Buffer) (fs interface{ Parse([]string) error }, svc *string, n *int) {
	f := cli.NewFlagSet("tool", w, usage)
	svc = f.String("service_config_path", "", "service configuration")
	n = f.IntP("number", "n", 1, "a number")
	f.Float64("ratio", 0.5, "a fraction")
	f.Uint64("blocks", 0, "a count")
	f.StringP("parent-uuid", "p", "", "upstream's -p,--parent-uuid")
	f.StringP("message", "m", "", "upstream's -m, with a long name of ours")
	f.BoolP("sparse", "s", false, "a flag")
	return f, svc, n
}

func TestBothSpellings(t *testing.T) {
	for _, args := range [][]string{
		{"--service_config_path", "x.json", "--number=3"},
		{"--service-config-path", "x.json", "-n", "3"},
		{"--service-config_path=x.json", "--number", "3"},
	} {
		var w bytes.Buffer
		fs, svc, n := flags(&w)
		if err := fs.Parse(args); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if *svc != "x.json" || *n != 3 || w.Len() != 0 {
			t.Fatalf("%v: service config %q, number %d, output %q", args, *svc, *n, w.String())
		}
	}
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		var w bytes.Buffer
		fs, _, _ := flags(&w)
		err := fs.Parse([]string{arg, "--unknown"})
		help := w.String()
		if code := cli.ParseError(&w, err); code != cli.ExitOK {
			t.Fatalf("%s: exit %d", arg, code)
		}
		if code := cli.PrefixedParseError(&w, "tool", err, 2); code != cli.ExitOK {
			t.Fatalf("%s: exit %d", arg, code)
		}
		if w.String() != help {
			t.Fatalf("%s: the error reporters wrote %q after the usage", arg, w.String()[len(help):])
		}
		if !strings.HasPrefix(help, usage) || !strings.Contains(help, "--service-config-path string") || !strings.Contains(help, "-n, --number int") || !strings.Contains(help, `(default 1)`) {
			t.Fatalf("%s: usage %q", arg, help)
		}
	}
}

func TestParseErrorCodes(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--nope"}, cli.ExitExtras, "The following argument was not expected: --nope"},
		{[]string{"-Z"}, cli.ExitExtras, "The following argument was not expected: -Z"},
		{[]string{"-Zn"}, cli.ExitExtras, "The following argument was not expected: -Zn"},
		{[]string{"--number", "x"}, cli.ExitConversion, `invalid argument "x" for "-n, --number" flag`},
		{[]string{"--number"}, cli.ExitArgumentMismatch, "--number: 1 required INT missing"},
		{[]string{"a", "-n"}, cli.ExitArgumentMismatch, "-n: 1 required INT missing"},
		{[]string{"--service_config_path"}, cli.ExitArgumentMismatch, "--service_config_path: 1 required TEXT missing"},
		{[]string{"--service-config-path"}, cli.ExitArgumentMismatch, "--service-config-path: 1 required TEXT missing"},
		{[]string{"--ratio"}, cli.ExitArgumentMismatch, "--ratio: 1 required FLOAT missing"},
		{[]string{"--blocks"}, cli.ExitArgumentMismatch, "--blocks: 1 required UINT missing"},
		// CLI11 names an option by its long name when upstream declares
		// one (-p,--parent-uuid), else by its shorthand (-m).
		{[]string{"a", "-p"}, cli.ExitArgumentMismatch, "--parent-uuid: 1 required TEXT missing"},
		{[]string{"a", "-sp"}, cli.ExitArgumentMismatch, "--parent-uuid: 1 required TEXT missing"},
		{[]string{"--parent-uuid"}, cli.ExitArgumentMismatch, "--parent-uuid: 1 required TEXT missing"},
		{[]string{"-m"}, cli.ExitArgumentMismatch, "-m: 1 required TEXT missing"},
		{[]string{"--message"}, cli.ExitArgumentMismatch, "--message: 1 required TEXT missing"},
		// As with CLI11, the next argument is the value, whatever it looks
		// like.
		{[]string{"--number", "--nope"}, cli.ExitConversion, `invalid argument "--nope" for "-n, --number" flag`},
	} {
		var w bytes.Buffer
		fs, _, _ := flags(&w)
		err := fs.Parse(c.args)
		if err == nil {
			t.Fatalf("%v: no error", c.args)
		}
		if code := cli.ParseError(&w, err); code != c.code {
			t.Errorf("%v: exit %d, want %d", c.args, code, c.code)
		}
		if got := w.String(); !strings.HasPrefix(got, c.msg) || !strings.HasSuffix(got, "\n"+cli.Hint+"\n") || strings.Count(got, "\n") != 2 {
			t.Errorf("%v: message %q, want %q and the hint", c.args, got, c.msg)
		}
		w.Reset()
		if code := cli.PrefixedParseError(&w, "tool", err, 2); code != 2 {
			t.Errorf("%v: prefixed: exit %d, want 2", c.args, code)
		}
		if got := w.String(); got != "tool: "+err.Error()+"\n"+cli.Hint+"\n" {
			t.Errorf("%v: prefixed message %q", c.args, got)
		}
	}
}

func TestArgs(t *testing.T) {
	names := []string{"data_file", "index_file", "commit_file"}
	for _, c := range []struct {
		args     []string
		required int
		code     int
		msg      string
	}{
		{nil, 1, cli.ExitRequired, "data_file is required"},
		{[]string{"d"}, 3, cli.ExitRequired, "index_file is required"},
		{[]string{"d", "i"}, 3, cli.ExitRequired, "commit_file is required"},
		{[]string{"d", "i", "c", "x"}, 1, cli.ExitExtras, "The following argument was not expected: x"},
		// CLI11 2.2.0 lists them last first.
		{[]string{"d", "i", "c", "x", "y z"}, 3, cli.ExitExtras, "The following arguments were not expected: y z x"},
		{[]string{"d"}, 1, cli.ExitOK, ""},
		{[]string{"d", "i", "c"}, 3, cli.ExitOK, ""},
		{nil, 0, cli.ExitOK, ""},
	} {
		var w bytes.Buffer
		want := c.msg + "\n" + cli.Hint + "\n"
		code, ok := cli.Upstream(&w).Args(c.args, c.required, names...)
		if c.msg == "" {
			want = ""
		}
		if code != c.code || ok != (c.code == cli.ExitOK) || w.String() != want {
			t.Errorf("%q, %d required: %d, %v, %q; want %d, %q", c.args, c.required, code, ok, w.String(), c.code, want)
		}
	}
}

func TestErrorf(t *testing.T) {
	var w bytes.Buffer
	if code := cli.Upstream(&w).Errorf(cli.ExitValidation, "%s: File does not exist: %s", "data_file", "100%"); code != cli.ExitValidation {
		t.Fatalf("exit %d", code)
	}
	if want := "data_file: File does not exist: 100%\n" + cli.Hint + "\n"; w.String() != want {
		t.Fatalf("%q, want %q", w.String(), want)
	}
}

func TestLogger(t *testing.T) {
	for _, verbose := range []bool{false, true} {
		var w bytes.Buffer
		log := cli.Logger(&w, verbose)
		if got := log.Enabled(context.Background(), slog.LevelDebug); got != verbose {
			t.Errorf("verbose %v: debug enabled %v", verbose, got)
		}
		log.Info("hello", "k", "v")
		if !strings.Contains(w.String(), `level=INFO msg=hello k=v`) {
			t.Errorf("verbose %v: %q", verbose, w.String())
		}
	}
}

// A tool accepts each flag with "_" or "-", and reports a missing
// positional argument in upstream's words.
func ExampleNewFlagSet() {
	fs := cli.NewFlagSet("overlaybd-example", os.Stdout, "Usage: overlaybd-example [OPTIONS] data_file\n")
	svc := fs.String("service_config_path", "", "service configuration")
	if err := fs.Parse([]string{"--service-config-path", "/etc/overlaybd/overlaybd.json"}); err != nil {
		os.Exit(cli.ParseError(os.Stdout, err))
	}
	fmt.Println("service configuration:", *svc)
	if code, ok := cli.Upstream(os.Stdout).Args(fs.Args(), 1, "data_file"); !ok {
		fmt.Println("exit status", code)
	}
	// Output:
	// service configuration: /etc/overlaybd/overlaybd.json
	// data_file is required
	// Run with --help for more information.
	// exit status 106
}
