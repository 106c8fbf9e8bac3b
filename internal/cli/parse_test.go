package cli_test

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/spf13/pflag"

	"github.com/overlaybd-go/overlaybd/internal/cli"
)

// parseFlags is a flag set with a value flag (-n), flags without a value
// (-s, -z) and a long flag spelled with "_".
func parseFlags(w *bytes.Buffer) (*pflag.FlagSet, *int, *bool, *string) {
	f := cli.NewFlagSet("tool", w, usage)
	n := f.IntP("number", "n", 1, "a number")
	s := f.BoolP("sparse", "s", false, "a flag")
	f.BoolP("zip", "z", false, "a flag")
	svc := f.String("service_config_path", "", "service configuration")
	return f, n, s, svc
}

func TestParseNamesEveryUnknownFlag(t *testing.T) {
	for _, c := range []struct {
		args    []string
		unknown []string // nil: no error
		pos     []string
		number  int
		sparse  bool
	}{
		{[]string{"a", "-n", "3", "b"}, nil, []string{"a", "b"}, 3, false},
		{[]string{"--a", "--b"}, []string{"--a", "--b"}, []string{}, 1, false},
		// The argument after an unknown flag is a positional, as in CLI11.
		{[]string{"--nope", "x", "-n", "2"}, []string{"--nope"}, []string{"x"}, 2, false},
		{[]string{"--nope=3", "x"}, []string{"--nope=3"}, []string{"x"}, 1, false},
		// Shorthands: the known part of a group stays, the rest from the
		// first unknown letter is named.
		{[]string{"-sZ", "-Zs", "x"}, []string{"-Z", "-Zs"}, []string{"x"}, 1, true},
		{[]string{"-szQ", "-n5"}, []string{"-Q"}, []string{}, 5, true},
		// A value is taken whatever it looks like, so it is never unknown.
		{[]string{"-n", "7", "--service-config-path", "--x", "--y"}, []string{"--y"}, []string{}, 7, false},
		{[]string{"-sn", "4", "--q"}, []string{"--q"}, []string{}, 4, true},
		// After "--" everything is positional.
		{[]string{"--q", "--", "--r", "-s"}, []string{"--q"}, []string{"--r", "-s"}, 1, false},
	} {
		var w bytes.Buffer
		fs, n, s, _ := parseFlags(&w)
		err := cli.Parse(fs, c.args)
		var u *cli.UnknownFlagsError
		switch {
		case c.unknown == nil && err != nil:
			t.Errorf("%q: %v", c.args, err)
		case c.unknown != nil && (!errors.As(err, &u) || !reflect.DeepEqual(u.Flags, c.unknown)):
			t.Errorf("%q: error %v, want the unknown flags %q", c.args, err, c.unknown)
		}
		if got := fs.Args(); !reflect.DeepEqual(got, c.pos) || *n != c.number || *s != c.sparse {
			t.Errorf("%q: positionals %q, number %d, sparse %v; want %q, %d, %v", c.args, got, *n, *s, c.pos, c.number, c.sparse)
		}
	}
}

// TestParseErrorOrder: pflag's own errors (--help, a missing value, a
// value that does not convert) come before unknown flags, as CLI11's do.
func TestParseErrorOrder(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--a", "--b"}, cli.ExitExtras, "The following arguments were not expected: --b --a\n"},
		{[]string{"--a", "x", "-Zs"}, cli.ExitExtras, "The following arguments were not expected: -Zs --a\n"},
		{[]string{"--a"}, cli.ExitExtras, "The following argument was not expected: --a\n"},
		{[]string{"--a", "-n"}, cli.ExitArgumentMismatch, "-n: 1 required INT missing\n"},
		{[]string{"--a", "--service_config_path"}, cli.ExitArgumentMismatch, "--service_config_path: 1 required TEXT missing\n"},
		{[]string{"--a", "-n", "x"}, cli.ExitConversion, `invalid argument "x" for "-n, --number" flag: strconv.ParseInt: parsing "x": invalid syntax` + "\n"},
	} {
		var w bytes.Buffer
		fs, _, _, _ := parseFlags(&w)
		err := cli.Parse(fs, c.args)
		if code := cli.ParseError(&w, err); code != c.code || w.String() != c.msg+cli.Hint+"\n" {
			t.Errorf("%q: exit %d, %q; want %d, %q", c.args, code, w.String(), c.code, c.msg)
		}
		w.Reset()
		if code := cli.PrefixedParseError(&w, "tool", err, 2); code != 2 || w.String() != "tool: "+err.Error()+"\n"+cli.Hint+"\n" {
			t.Errorf("%q: prefixed: exit %d, %q", c.args, code, w.String())
		}
	}
	var u cli.UnknownFlagsError
	u.Flags = []string{"--a"}
	if u.Error() != "unknown flag: --a" {
		t.Errorf("%q", u.Error())
	}
	u.Flags = []string{"--a", "-b"}
	if u.Error() != "unknown flags: --a -b" {
		t.Errorf("%q", u.Error())
	}
	// --help prints the usage, whatever else is wrong.
	for _, arg := range []string{"--help", "-h", "-sh"} {
		var w bytes.Buffer
		fs, _, _, _ := parseFlags(&w)
		err := cli.Parse(fs, []string{"--a", arg, "--b"})
		help := w.String()
		if code := cli.ParseError(&w, err); code != cli.ExitOK || help == "" || w.String() != help {
			t.Errorf("%s: exit %d, output %q", arg, code, w.String())
		}
	}
}

// TestReporterParse: the whole of CLI11's order: parse errors, then a
// missing positional, then unknown flags and positionals too many in one
// message, last first.
func TestReporterParse(t *testing.T) {
	names := []string{"data_file", "index_file", "vsize"}
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"d", "i", "1"}, cli.ExitOK, ""},
		{[]string{"d", "i"}, cli.ExitRequired, "vsize is required"},
		// CLI11 checks the positionals before it reports extras.
		{[]string{"--nope"}, cli.ExitRequired, "data_file is required"},
		{[]string{"--nope", "d", "i", "1"}, cli.ExitExtras, "The following argument was not expected: --nope"},
		{[]string{"--a", "d", "--b", "i", "1", "x", "-Q", "y"}, cli.ExitExtras, "The following arguments were not expected: y -Q x --b --a"},
		{[]string{"d", "i", "1", "x", "--", "-y"}, cli.ExitExtras, "The following arguments were not expected: -y x"},
		{[]string{"--nope", "-n"}, cli.ExitArgumentMismatch, "-n: 1 required INT missing"},
		{[]string{"--nope", "--help"}, cli.ExitOK, "usage"},
	} {
		var w bytes.Buffer
		fs, _, _, _ := parseFlags(&w)
		code, ok := cli.Upstream(&w).Parse(fs, c.args, 3, names...)
		want := c.msg + "\n" + cli.Hint + "\n"
		switch c.msg {
		case "":
			want = ""
		case "usage":
			want = w.String()
		}
		if code != c.code || ok != (c.code == cli.ExitOK && c.msg == "") || w.String() != want {
			t.Errorf("%q: %d, %v, %q; want %d, %q", c.args, code, ok, w.String(), c.code, want)
		}
	}
}
