package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
	"github.com/overlaybd-go/overlaybd/internal/cli"
	"github.com/overlaybd-go/overlaybd/internal/clitest"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

func runTool(t *testing.T, stdin []byte, args ...string) (int, string) {
	t.Helper()
	var errb bytes.Buffer
	code := run(context.Background(), args, bytes.NewReader(stdin), io.Discard, &errb)
	return code, errb.String()
}

func nativeCodecs() bool {
	_, err1 := core.Codecs.Lookup("lz4-native")
	_, err2 := core.Codecs.Lookup("zstd-native")
	return err1 == nil && err2 == nil
}

func writePlain(t *testing.T) (string, []byte) {
	t.Helper()
	plain := zfiletest.Plain()
	return clitest.WriteFile(t, filepath.Join(t.TempDir(), "plain.bin"), plain), plain
}

// TestReplayVectors replays the commands of the vectors README. With the cgo
// codecs the outputs are byte-identical to upstream's; in every build they
// extract back to the input.
func TestReplayVectors(t *testing.T) {
	src, plain := writePlain(t)
	dir := t.TempDir()
	rwlog := testvectors.Path(t, "lsmt/rw-log.commit")
	rwlogData, _ := os.ReadFile(rwlog)
	for _, tc := range []struct {
		vector string
		args   []string
		input  string
		want   []byte
	}{
		{"zfile/plain.lz4-bs4.zfile", []string{"--algorithm", "lz4", "--bs", "4"}, src, plain},
		{"zfile/plain.lz4-bs32.zfile", []string{"--algorithm", "lz4", "--bs", "32"}, src, plain},
		{"zfile/plain.zstd-bs4.zfile", []string{"--algorithm", "zstd", "--bs", "4"}, src, plain},
		{"zfile/plain.zstd-bs32.zfile", []string{"--algorithm", "zstd", "--bs", "32"}, src, plain},
		{"zfile/plain.lz4-bs4.zfile.tar", []string{"-t", "--algorithm", "lz4", "--bs", "4"}, src, plain},
		{"lsmt/rw-log.commit.zfile", nil, rwlog, rwlogData},
	} {
		t.Run(tc.vector, func(t *testing.T) {
			out := filepath.Join(dir, filepath.Base(tc.vector))
			args := append(append([]string{}, tc.args...), tc.input, out)
			if code, msg := runTool(t, nil, args...); code != 0 {
				t.Fatalf("compress: exit %d: %s", code, msg)
			}
			got, _ := os.ReadFile(out)
			want, _ := os.ReadFile(testvectors.Path(t, tc.vector))
			st, _ := os.Stat(out)
			if nativeCodecs() && st.Mode().Perm() == 0o644 && !bytes.Equal(got, want) {
				t.Fatalf("not byte-identical to %s (%d vs %d bytes)", tc.vector, len(got), len(want))
			}
			back := out + ".x"
			if code, msg := runTool(t, nil, "-x", out, back); code != 0 {
				t.Fatalf("extract: exit %d: %s", code, msg)
			}
			if b, _ := os.ReadFile(back); !bytes.Equal(b, tc.want) {
				t.Fatal("extracted content differs")
			}
			if code, msg := runTool(t, nil, "--verify", out); code != 0 || !strings.Contains(msg, "is a valid zfile blob.") {
				t.Fatalf("verify: exit %d: %s", code, msg)
			}
		})
	}
}

// TestExtractVectors extracts upstream's files, including the tar-wrapped
// one and those upstream's own reader cannot read.
func TestExtractVectors(t *testing.T) {
	_, plain := writePlain(t)
	dir := t.TempDir()
	for _, rel := range []string{
		"zfile/plain.lz4-bs4.zfile.tar", "zfile/plain.zstd-bs16-nocrc.zfile", "zfile/plain.zstd-bs8-hdroverwrite.zfile",
		"zfile/unreadable-bs64/plain.lz4-bs64.zfile", "zfile/unreadable-bs64/plain.zstd-bs64.zfile",
	} {
		out := filepath.Join(dir, filepath.Base(rel))
		for _, args := range [][]string{{"-x"}, {"-x", "-t", "-f"}} {
			if code, msg := runTool(t, nil, append(args, testvectors.Path(t, rel), out)...); code != 0 {
				t.Fatalf("%s %v: exit %d: %s", rel, args, code, msg)
			}
			if b, _ := os.ReadFile(out); !bytes.Equal(b, plain) {
				t.Fatalf("%s: extracted content differs", rel)
			}
		}
		if st, _ := os.Stat(out); st.Mode().Perm()&0o100 == 0 {
			t.Errorf("%s: extracted file mode %v, upstream uses 0700", rel, st.Mode())
		}
	}
}

func TestStdin(t *testing.T) {
	_, plain := writePlain(t)
	out := filepath.Join(t.TempDir(), "from-stdin.zfile")
	if code, msg := runTool(t, plain, "--algorithm", "zstd", out); code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	if nativeCodecs() {
		got, _ := os.ReadFile(out)
		want, _ := os.ReadFile(testvectors.Path(t, "zfile/plain.zstd-bs4.zfile"))
		if !bytes.Equal(got, want) {
			t.Fatal("standard input gave different blocks than the file")
		}
	}
	back := out + ".x"
	if code, msg := runTool(t, nil, "-x", out, back); code != 0 {
		t.Fatalf("extract: exit %d: %s", code, msg)
	}
	if b, _ := os.ReadFile(back); !bytes.Equal(b, plain) {
		t.Fatal("round trip through standard input differs")
	}
}

func TestExitCodes(t *testing.T) {
	src, _ := writePlain(t)
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing")
	os.WriteFile(existing, []byte("x"), 0o644)
	rnd := filepath.Join(dir, "random.bin")
	os.WriteFile(rnd, zfiletest.Xorshift(9, 3<<16), 0o644)
	corrupt, _ := os.ReadFile(testvectors.Path(t, "zfile/plain.lz4-bs4.zfile"))
	corrupt[100000] ^= 0x40
	corruptPath := filepath.Join(dir, "corrupt.zfile")
	os.WriteFile(corruptPath, corrupt, 0o644)
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--help"}, 0, ""},
		{nil, cli.ExitRequired, "source_file is required"},
		{[]string{"a", "b", "c"}, cli.ExitExtras, "not expected"},
		{[]string{"--no-such-flag", "a"}, cli.ExitExtras, "was not expected: --no-such-flag"},
		{[]string{"--bs", "abc", "a", "b"}, cli.ExitConversion, "invalid argument"},
		{[]string{"--bs", "3", src, filepath.Join(dir, "o1")}, cli.ExitFailure, "invalid '--bs' parameters."},
		{[]string{"--bs", "128", src, filepath.Join(dir, "o2")}, cli.ExitFailure, "invalid '--bs' parameters."},
		{[]string{"--algorithm", "lzo", src, filepath.Join(dir, "o3")}, cli.ExitFailure, "invalid '--algorithm' parameters."},
		{[]string{src, existing}, cli.ExitFailure, "failed to open file"},
		{[]string{"-f", src, existing}, 0, "compress file done."},
		{[]string{filepath.Join(dir, "missing"), filepath.Join(dir, "o4")}, cli.ExitFailure, "failed to open file"},
		{[]string{"--bs", "64", rnd, filepath.Join(dir, "o5")}, cli.ExitFailure, "block 0"},
		{[]string{"-x", src}, cli.ExitFailure, "target_file"},
		{[]string{"-x", src, filepath.Join(dir, "o6")}, cli.ExitFailure, "should be a zfile"},
		{[]string{"-x", corruptPath, filepath.Join(dir, "o7")}, cli.ExitFailure, "checksum mismatch"},
		{[]string{"--verify", src}, cli.ExitFailure, "should be a zfile"},
		{[]string{"--verify", corruptPath}, cli.ExitFailure, "is not a valid zfile blob"},
		{[]string{"--verify", testvectors.Path(t, "zfile/plain.lz4-bs4-nocrc.zfile")}, cli.ExitFailure, "is not a valid zfile blob"},
		{[]string{"--verify", testvectors.Path(t, "zfile/plain.lz4-bs4.zfile.tar")}, 0, "is a valid zfile blob."},
	} {
		code, msg := runTool(t, nil, tc.args...)
		if code != tc.code || !strings.Contains(msg, tc.msg) {
			t.Errorf("%v: exit %d, %q; want %d, %q", tc.args, code, msg, tc.code, tc.msg)
		}
	}
	for _, o := range []string{"o1", "o2", "o3", "o4", "o5", "o6", "o7"} {
		if _, err := os.Stat(filepath.Join(dir, o)); err == nil {
			t.Errorf("failed run left output %s behind", o)
		}
	}
}
