// Package clitest holds what the tests of the command-line tools share:
// running a tool's test binary as the tool itself, so that a test sees the
// real process (exit status, standard output, standard error); comparing an
// output file with a vector; reading a layer through its envelopes; building
// a codec plugin; writing a service configuration that lists codec plugins;
// and checking CLI11's help, missing-value error and extras error (unknown
// flags, positionals too many) in the tools that keep upstream's contract.
//
// A tool's tests re-execute their binary through Main and Run:
//
//	func TestMain(m *testing.M) {
//		clitest.Main(m, func() int { return run(os.Args[1:], os.Stdout, os.Stderr) })
//	}
//
//	code, stdout, stderr := clitest.Run(t, dir, "data_file", "index_file", "1")
package clitest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/overlaybd-go/overlaybd/core/envelope"
	"github.com/overlaybd-go/overlaybd/engines/psync"
)

// asTool is the environment variable that tells the test binary to run as
// the tool.
const asTool = "OVERLAYBD_RUN_TOOL"

// Main is the body of a tool's TestMain: when the test binary was started
// by Command or Run, it calls tool (the tool's main, which reads os.Args and
// the standard streams) and exits with its status; otherwise it runs the
// tests.
func Main(m *testing.M, tool func() int) {
	if os.Getenv(asTool) == "1" {
		os.Exit(tool())
	}
	os.Exit(m.Run())
}

// Command returns a command that runs the test binary as the tool (see
// Main) with args, in dir. The caller sets its standard streams.
func Command(dir string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), asTool+"=1")
	return cmd
}

// Run runs the test binary as the tool with args in dir and returns its exit
// status, standard output and standard error. A failure to start it fails
// the test.
func Run(t testing.TB, dir string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := Command(dir, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatal(err)
		}
		code = ee.ExitCode()
	}
	return code, out.String(), errOut.String()
}

// SameFile fails the test unless the files got and want hold the same bytes.
func SameFile(t testing.TB, got, want string) {
	t.Helper()
	a, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatalf("%s (%d bytes) differs from %s (%d bytes)", got, len(a), want, len(b))
	}
}

// WriteFile writes b to the file path (mode 0644) and returns path; an
// error fails the test.
func WriteFile(t testing.TB, path string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Unwrap opens the layer file at path through its envelopes (tar, ZFile) and
// returns the bytes they hold and the description of the nesting.
func Unwrap(t testing.TB, path string) ([]byte, *envelope.Description) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	in, desc, err := envelope.Open(psync.NewFile(f, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	b := make([]byte, in.Size())
	if _, err := in.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return b, desc
}

// BuildPlugin builds the Go package pkg (a codec plugin) with go build into
// dir, created with mode 0700 if it does not exist, and returns the binary's
// path. The binary gets mode 0755: neither it nor its folder is writable by
// others, as the plugin host demands. In -short mode the test is skipped.
func BuildPlugin(t testing.TB, pkg, dir string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a plugin binary")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, filepath.Base(pkg))
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// ZstdPlugin is the package of the example plugin that serves zstd with
// libzstd.
const ZstdPlugin = "github.com/overlaybd-go/overlaybd/plugins/examples/zstd-cgo"

// PluginConfig writes the service configuration dir/overlaybd.json whose
// codecPlugins list the plugin at path (relative paths are relative to dir)
// for algorithms, and returns its path.
func PluginConfig(t testing.TB, dir, path string, algorithms ...string) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"codecPlugins": []map[string]any{{"path": path, "algorithms": algorithms}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return WriteFile(t, filepath.Join(dir, "overlaybd.json"), b)
}
