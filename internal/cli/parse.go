package cli

import (
	"errors"
	"strings"

	"github.com/spf13/pflag"
)

// UnknownFlagsError is the error of Parse for a command line that holds
// flags the flag set does not define. Flags lists them as written, in the
// order of the command line: a long flag whole ("--nope", "--nope=3"), a
// group of shorthands from the first unknown letter on ("-Zn"; in "-sZ",
// whose -s is known, "-Z").
type UnknownFlagsError struct {
	Flags []string
	// before[i] is the number of positional arguments ahead of Flags[i],
	// to merge the two lists in command-line order (Reporter.Parse).
	before []int
}

// Error returns "unknown flag: --nope", or "unknown flags: --a -b" for
// several.
func (e *UnknownFlagsError) Error() string {
	if len(e.Flags) == 1 {
		return "unknown flag: " + e.Flags[0]
	}
	return "unknown flags: " + strings.Join(e.Flags, " ")
}

// Parse parses args into fs as CLI11 parses a command line: a flag that fs
// does not define does not stop the parse, as it stops FlagSet.Parse.
// Unknown flags are set aside (an argument after one is a positional, not
// its value), the rest is parsed by fs, and then, when fs raised no error
// of its own (--help, a flag without its value, a value that does not
// convert: CLI11 reports these first too), Parse returns an
// *UnknownFlagsError naming every unknown flag. Arguments are split as
// FlagSet.Parse splits them: "--" ends the flags, a flag that takes a value
// takes the next argument whatever it looks like, shorthands may be grouped
// ("-sz") and "-h"/"--help" print the usage when fs does not define them.
func Parse(fs *pflag.FlagSet, args []string) error {
	known, unknown := splitUnknown(fs, args)
	if err := fs.Parse(known); err != nil {
		return err
	}
	if len(unknown.Flags) > 0 {
		return unknown
	}
	return nil
}

// splitUnknown returns args without the flags fs does not define, and
// those flags.
func splitUnknown(fs *pflag.FlagSet, args []string) ([]string, *UnknownFlagsError) {
	var (
		known      = make([]string, 0, len(args))
		unknown    = &UnknownFlagsError{}
		positional int
	)
	for i := 0; i < len(args); i++ {
		s := args[i]
		switch {
		case s == "--":
			known = append(known, args[i:]...)
			return known, unknown
		case len(s) < 2 || s[0] != '-':
			known = append(known, s)
			positional++
		case s[1] == '-':
			name, _, hasValue := strings.Cut(s[2:], "=")
			if name == "" || name[0] == '-' || name[0] == '=' || name == "help" {
				known = append(known, s) // pflag reports the syntax, or prints the help
				continue
			}
			f := fs.Lookup(name)
			if f == nil {
				unknown.Flags = append(unknown.Flags, s)
				unknown.before = append(unknown.before, positional)
				continue
			}
			known = append(known, s)
			if !hasValue && f.NoOptDefVal == "" && i+1 < len(args) {
				i++
				known = append(known, args[i])
			}
		default:
			kept, takesNext, bad := splitShorthands(fs, s[1:])
			if kept != "" {
				known = append(known, "-"+kept)
			}
			if bad != "" {
				unknown.Flags = append(unknown.Flags, "-"+bad)
				unknown.before = append(unknown.before, positional)
			}
			if takesNext && i+1 < len(args) {
				i++
				known = append(known, args[i])
			}
		}
	}
	return known, unknown
}

// splitShorthands splits a group of shorthands (the text after "-") into
// the part fs knows, which keeps any value written in the group, and the
// unknown rest, from its first unknown letter on. takesNext is whether the
// last known letter takes the next argument as its value.
func splitShorthands(fs *pflag.FlagSet, group string) (kept string, takesNext bool, bad string) {
	if strings.HasPrefix(group, "test.") {
		return group, false, "" // go test's flags, which pflag skips
	}
	for j := 0; j < len(group); j++ {
		c := group[j]
		f := fs.ShorthandLookup(group[j : j+1])
		if f == nil {
			if c == 'h' {
				return group, false, "" // pflag prints the help
			}
			return group[:j], false, group[j:]
		}
		switch {
		case j+1 < len(group) && group[j+1] == '=':
			return group, false, "" // -f=value
		case f.NoOptDefVal != "":
			continue // a flag without a value: the next letter is a flag
		case j+1 < len(group):
			return group, false, "" // -fvalue
		default:
			return group, true, "" // -f value
		}
	}
	return group, false, ""
}

// Parse parses args into fs (see the function Parse) and checks the
// positional arguments against names, of which the first required must be
// given, in CLI11's order: --help, a flag without its value and a value
// that does not convert first (ParseError), then a missing positional
// ("<name> is required", ExitRequired), then everything CLI11 could not
// place, unknown flags and positionals too many together ("The following
// arguments were not expected: ...", ExitExtras). It returns ExitOK and
// true when the command line is good; otherwise it has reported the error
// and returns its code (ExitOK after --help) and false.
func (r Reporter) Parse(fs *pflag.FlagSet, args []string, required int, names ...string) (int, bool) {
	err := Parse(fs, args)
	unknown := &UnknownFlagsError{}
	if err != nil && !errors.As(err, &unknown) {
		return ParseError(r.w, err), false
	}
	pos := fs.Args()
	if len(pos) < required {
		return r.Errorf(ExitRequired, "%s is required", names[len(pos)]), false
	}
	var extras []string
	u := 0
	for k := 0; k <= len(pos); k++ {
		for ; u < len(unknown.Flags) && unknown.before[u] <= k; u++ {
			extras = append(extras, unknown.Flags[u])
		}
		if k >= len(names) && k < len(pos) {
			extras = append(extras, pos[k])
		}
	}
	if len(extras) > 0 {
		return r.Errorf(ExitExtras, "%s", notExpected(extras)), false
	}
	return ExitOK, true
}
