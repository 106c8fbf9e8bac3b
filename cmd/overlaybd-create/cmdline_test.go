package main

import (
	"testing"

	"github.com/overlaybd-go/overlaybd/internal/clitest"
)

// TestHelpOnStdout: --help and -h print the whole help on standard output,
// as upstream's CLI11 does, and the help's example of the two spellings
// names one of this tool's own flags.
func TestHelpOnStdout(t *testing.T) { clitest.UpstreamHelp(t, usage) }

// TestMissingValue: a flag without its value at the end of the command line
// is CLI11's ArgumentMismatch (exit 114).
func TestMissingValue(t *testing.T) {
	clitest.MissingValue(t, "-u: 1 required TEXT missing", "d", "i", "1", "-u")
}
