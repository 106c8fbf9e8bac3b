// Package cli holds the start-up the overlaybd command-line tools share: a
// flag set whose flags may be spelled with "_" or "-", the usage that
// --help prints, upstream's exit codes, the messages of upstream's argument
// parser (CLI11) for command-line errors, and the logger of --verbose.
//
// A tool that keeps upstream's contract starts like this:
//
//	fs := cli.NewFlagSet("overlaybd-create", stderr, usage)
//	verbose := fs.Bool("verbose", false, "debug logging")
//	if err := fs.Parse(args); err != nil {
//		return cli.ParseError(stderr, err)
//	}
//	if code, ok := cli.Upstream(stderr).Args(fs.Args(), 3, "data_file", "index_file", "vsize"); !ok {
//		return code
//	}
package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/pflag"
)

// Exit codes of upstream's tools: CLI11's codes for command-line errors and
// exit(-1) for a failure.
const (
	// ExitOK is success, and the status after --help.
	ExitOK = 0
	// ExitConversion is a value that does not convert (a number, a boolean).
	ExitConversion = 104
	// ExitValidation is a value that fails a check (a file that does not
	// exist, an invalid UUID).
	ExitValidation = 105
	// ExitRequired is a missing positional argument or flag value.
	ExitRequired = 106
	// ExitExtras is an unknown flag or a positional argument too many.
	ExitExtras = 109
	// ExitFailure is upstream's exit(-1): the tool failed at its work.
	ExitFailure = 255
)

// Hint ends each of upstream's command-line error messages, on a line of its
// own.
const Hint = "Run with --help for more information."

// Normalize is a pflag normalisation function that maps "_" to "-", so that
// every flag may be spelled either way (--service_config_path,
// --service-config-path).
func Normalize(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	return pflag.NormalizedName(strings.ReplaceAll(name, "_", "-"))
}

// NewFlagSet returns the flag set of the tool name: parse errors are returned
// to the caller (pflag.ContinueOnError), every flag may be spelled with "_"
// or "-" (Normalize), and its Usage, which --help and -h call, writes usage
// to w and then the flags with their defaults to the flag set's output,
// which is w unless the caller changes it.
func NewFlagSet(name string, w io.Writer, usage string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetNormalizeFunc(Normalize)
	fs.SetOutput(w)
	fs.Usage = func() {
		fmt.Fprint(w, usage)
		fs.PrintDefaults()
	}
	return fs
}

// ParseError reports err, an error of FlagSet.Parse, as upstream's parser
// does: the message and Hint on w, and the exit code of its class
// (ExitConversion for a value that does not convert, ExitRequired for a flag
// without its value, ExitExtras for an unknown flag). After --help or -h,
// which have printed the usage, it writes nothing and returns ExitOK.
func ParseError(w io.Writer, err error) int {
	if errors.Is(err, pflag.ErrHelp) {
		return ExitOK
	}
	fmt.Fprintf(w, "%v\n%s\n", err, Hint)
	msg := err.Error()
	switch {
	case strings.Contains(msg, "invalid argument"):
		return ExitConversion
	case strings.Contains(msg, "needs an argument"):
		return ExitRequired
	default:
		return ExitExtras
	}
}

// PrefixedParseError reports err, an error of FlagSet.Parse, as
// "<name>: <err>" on w and returns code. After --help or -h, which have
// printed the usage, it writes nothing and returns ExitOK.
func PrefixedParseError(w io.Writer, name string, err error, code int) int {
	if errors.Is(err, pflag.ErrHelp) {
		return ExitOK
	}
	fmt.Fprintf(w, "%s: %v\n", name, err)
	return code
}

// Reporter writes command-line errors in the words of upstream's parser.
type Reporter struct {
	w    io.Writer
	hint string
}

// Upstream returns the Reporter of upstream's tools: each message is
// followed by Hint.
func Upstream(w io.Writer) Reporter { return Reporter{w: w, hint: Hint + "\n"} }

// Bare returns a Reporter whose messages have no Hint after them.
func Bare(w io.Writer) Reporter { return Reporter{w: w} }

// Errorf writes the message format makes, a newline and the hint, and
// returns code.
func (r Reporter) Errorf(code int, format string, a ...any) int {
	fmt.Fprintf(r.w, format+"\n%s", append(a, r.hint)...)
	return code
}

// Args checks the positional arguments args against a tool's positionals,
// named in order by names, of which the first required must be given. When
// one is missing it reports "<name> is required" and returns ExitRequired;
// when there are more than names it reports "The following arguments were
// not expected: ..." and returns ExitExtras; otherwise it returns ExitOK and
// true.
func (r Reporter) Args(args []string, required int, names ...string) (int, bool) {
	switch {
	case len(args) < required:
		return r.Errorf(ExitRequired, "%s is required", names[len(args)]), false
	case len(args) > len(names):
		return r.Errorf(ExitExtras, "The following arguments were not expected: %s", strings.Join(args[len(names):], " ")), false
	}
	return ExitOK, true
}

// Logger returns a text logger writing to w at level Info, or Debug when
// verbose is set.
func Logger(w io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
