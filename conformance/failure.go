package conformance

import (
	"fmt"
	"strings"
)

// Failure is a difference between an implementation and the model, or an
// operation that failed (or succeeded) when it should not have.
type Failure struct {
	// Cell names the kind under test.
	Cell string
	// Seed reproduces the run (see SeedEnv).
	Seed int64
	// Step is the number of the operation in the run (from 0).
	Step int
	// Op describes the operation.
	Op string
	// Msg says what went wrong.
	Msg string
	// Recent are the operations before Op, oldest first.
	Recent []string
}

// Error implements error.
func (f *Failure) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cell %s, op #%d %s: %s (replay: %s=%d)", f.Cell, f.Step, f.Op, f.Msg, SeedEnv, f.Seed)
	if len(f.Recent) > 0 {
		b.WriteString("\n  preceding operations:")
		for _, r := range f.Recent {
			b.WriteString("\n    " + r)
		}
	}
	return b.String()
}
