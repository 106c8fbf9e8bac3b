// Package cli holds the start-up the overlaybd command-line tools share: a
// flag set whose flags may be spelled with "_" or "-", the usage that
// --help prints, upstream's exit codes, the messages of upstream's argument
// parser (CLI11) for command-line errors, the logger of --verbose, and the
// reaction of the servers to SIGINT and SIGTERM (NotifyShutdown).
//
// A tool that keeps upstream's contract starts like this:
//
//	fs := cli.NewFlagSet("overlaybd-create", stdout, usage) // CLI11 prints help to stdout
//	verbose := fs.Bool("verbose", false, "debug logging")
//	if code, ok := cli.Upstream(stderr).Parse(fs, args, 3, "data_file", "index_file", "vsize"); !ok {
//		return code
//	}
//
// Reporter.Parse names every unknown flag, as CLI11 does; the older pair
// fs.Parse and ParseError, then Reporter.Args, stops at the first.
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
	// ExitRequired is a missing required positional argument.
	ExitRequired = 106
	// ExitExtras is an unknown flag or a positional argument too many.
	ExitExtras = 109
	// ExitArgumentMismatch is a flag given without its value at the end of
	// the command line (CLI11's ArgumentMismatch, "--bs: 1 required INT
	// missing"). A value that follows is always taken, as by CLI11, and
	// fails as a conversion if it is not one.
	ExitArgumentMismatch = 114
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
// and then the flags with their defaults to w. A tool that keeps upstream's
// contract passes its standard output, where CLI11 prints the help; the
// project's own tools pass standard error.
func NewFlagSet(name string, w io.Writer, usage string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetNormalizeFunc(Normalize)
	fs.SetOutput(w)
	fs.Usage = func() {
		fmt.Fprint(w, usage)
		fmt.Fprint(w, fs.FlagUsages())
	}
	return fs
}

// ParseError reports err, an error of Parse or FlagSet.Parse, as upstream's
// parser (CLI11) does: the message and Hint on w, and the exit code of its
// class: ExitConversion for a value that does not convert,
// ExitArgumentMismatch for a flag without its value (in CLI11's words,
// "--bs: 1 required INT missing", the flag named as CLI11 names it: see
// CLI11Name), ExitExtras for unknown flags ("The following argument was not
// expected: --nope"; an *UnknownFlagsError of Parse names every one, a
// pflag error only the first). After --help or -h, which have printed the
// usage, it writes nothing and returns ExitOK.
func ParseError(w io.Writer, err error) int {
	if errors.Is(err, pflag.ErrHelp) {
		return ExitOK
	}
	var (
		missing  *pflag.ValueRequiredError
		invalid  *pflag.InvalidValueError
		unknown  *pflag.NotExistError
		unknowns *UnknownFlagsError
	)
	switch {
	case errors.As(err, &unknowns):
		fmt.Fprintf(w, "%s\n%s\n", notExpected(unknowns.Flags), Hint)
		return ExitExtras
	case errors.As(err, &unknown):
		flag := "--" + unknown.GetSpecifiedName()
		if g := unknown.GetSpecifiedShortnames(); g != "" {
			flag = "-" + g
		}
		fmt.Fprintf(w, "%s\n%s\n", notExpected([]string{flag}), Hint)
		return ExitExtras
	case errors.As(err, &missing):
		fmt.Fprintf(w, "%s: 1 required %s missing\n%s\n", CLI11Name(missing), typeName(missing.GetFlag()), Hint)
		return ExitArgumentMismatch
	case errors.As(err, &invalid):
		fmt.Fprintf(w, "%v\n%s\n", err, Hint)
		return ExitConversion
	default:
		fmt.Fprintf(w, "%v\n%s\n", err, Hint)
		return ExitExtras
	}
}

// cli11Long maps the shorthand of each upstream option that CLI11 declares
// with a short and a long name ("-p,--parent-uuid" of overlaybd-commit) to
// that long name. Upstream declares every other short option without a
// long name (-u, -m, -z, -t, -f, -x, -s); the long names our tools give
// them are additions.
var cli11Long = map[string]string{"p": "parent-uuid"}

// CLI11Name returns the flag of e as CLI11 names it in its messages: an
// option typed by its shorthand is named by its long name when upstream
// declares one ("-p" is "--parent-uuid"), otherwise by the shorthand
// ("-u", "-m"); an option typed by a long name is named as typed
// ("--service_config_path", or "--service-config-path", a spelling that
// only our tools accept).
func CLI11Name(e *pflag.ValueRequiredError) string {
	if e.GetSpecifiedShortnames() != "" {
		short := e.GetSpecifiedName()[:1]
		if f := e.GetFlag(); f != nil && cli11Long[short] == f.Name {
			return "--" + f.Name
		}
		return "-" + short
	}
	return "--" + e.GetSpecifiedName()
}

// typeName returns CLI11's name of the type of f's value: INT, UINT, FLOAT
// or TEXT.
func typeName(f *pflag.Flag) string {
	if f == nil {
		return "TEXT"
	}
	switch t := f.Value.Type(); {
	case strings.HasPrefix(t, "uint"):
		return "UINT"
	case strings.HasPrefix(t, "int") || t == "count":
		return "INT"
	case strings.HasPrefix(t, "float"):
		return "FLOAT"
	default:
		return "TEXT"
	}
}

// PrefixedParseError reports err, an error of FlagSet.Parse, as
// "<name>: <err>" and Hint on w, and returns code. After --help or -h, which
// have printed the usage, it writes nothing and returns ExitOK.
func PrefixedParseError(w io.Writer, name string, err error, code int) int {
	if errors.Is(err, pflag.ErrHelp) {
		return ExitOK
	}
	fmt.Fprintf(w, "%s: %v\n%s\n", name, err, Hint)
	return code
}

// Reporter writes command-line errors in the words of upstream's parser.
type Reporter struct {
	w io.Writer
}

// Upstream returns the Reporter of upstream's tools: each message is
// followed by Hint, as CLI11 writes it.
func Upstream(w io.Writer) Reporter { return Reporter{w: w} }

// Errorf writes the message format makes, a newline and the hint, and
// returns code.
func (r Reporter) Errorf(code int, format string, a ...any) int {
	fmt.Fprintf(r.w, format+"\n%s\n", append(a, Hint)...)
	return code
}

// Args checks the positional arguments args against a tool's positionals,
// named in order by names, of which the first required must be given. When
// one is missing it reports "<name> is required" and returns ExitRequired;
// when there are more than names it reports "The following argument was
// not expected: ..." (or "arguments were", for several, listed last first
// as CLI11 2.2.0 lists them) and returns ExitExtras; otherwise it returns
// ExitOK and true. Reporter.Parse does the same after parsing, and names
// unknown flags in the same message.
func (r Reporter) Args(args []string, required int, names ...string) (int, bool) {
	switch {
	case len(args) < required:
		return r.Errorf(ExitRequired, "%s is required", names[len(args)]), false
	case len(args) > len(names):
		return r.Errorf(ExitExtras, "%s", notExpected(args[len(names):])), false
	}
	return ExitOK, true
}

// notExpected is CLI11's message for the arguments it could not place,
// given in command-line order. CLI11 2.2.0 lists them last first (its
// ExtrasError joins them with rjoin): "a --b c" not expected reads "The
// following arguments were not expected: c --b a".
func notExpected(args []string) string {
	if len(args) == 1 {
		return "The following argument was not expected: " + args[0]
	}
	rev := make([]string, len(args))
	for i, a := range args {
		rev[len(args)-1-i] = a
	}
	return "The following arguments were not expected: " + strings.Join(rev, " ")
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
