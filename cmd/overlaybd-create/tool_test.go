package main

import (
	"os"
	"testing"

	"github.com/overlaybd-go/overlaybd/internal/clitest"
)

// TestMain runs the test binary as the tool itself when a test asks
// (clitest.Run), so that the tests exercise the real process: its exit
// codes, stdout and stderr.
func TestMain(m *testing.M) {
	clitest.Main(m, func() int { return run(os.Args[1:], os.Stdout, os.Stderr) })
}
