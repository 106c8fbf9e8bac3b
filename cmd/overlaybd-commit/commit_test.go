package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/internal/clitest"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

const success = "overlaybd-commit has committed files SUCCESSFULLY\n"

var rwlogArgs = []string{"-m", "overlaybd test vector: rw-log", "--uuid", "aaaaaaaa-0000-4000-8000-000000000001"}

func vec(t *testing.T, rel string) string { return testvectors.Path(t, rel) }

// TestCommitVector is the exact upstream command of the rw-log vector.
func TestCommitVector(t *testing.T) {
	dir := t.TempDir()
	args := append(append([]string{}, rwlogArgs...), vec(t, "lsmt/rw-log.data"), vec(t, "lsmt/rw-log.index"), "OUT")
	code, out, errOut := clitest.Run(t, dir, args...)
	if code != 0 || out != success {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	clitest.SameFile(t, filepath.Join(dir, "OUT"), vec(t, "lsmt/rw-log.commit"))
	// The output exists now: without -f that is an error, with -f it is
	// replaced.
	if code, out, _ := clitest.Run(t, dir, args...); code != 255 || out != "" {
		t.Fatalf("existing output: exit %d, stdout %q", code, out)
	}
	if code, _, _ := clitest.Run(t, dir, append([]string{"-f"}, args...)...); code != 0 {
		t.Fatalf("-f: exit %d", code)
	}
	clitest.SameFile(t, filepath.Join(dir, "OUT"), vec(t, "lsmt/rw-log.commit"))
}

// TestCommitZFile: -z with both algorithms and two block sizes; with the
// cgo codecs the files are upstream's byte for byte, with the pure-Go
// codecs they decompress to the vector's commit.
func TestCommitZFile(t *testing.T) {
	dir := t.TempDir()
	want, _ := os.ReadFile(vec(t, "lsmt/rw-log.commit"))
	for _, algo := range []string{"lz4", "zstd"} {
		for _, bs := range []string{"4", "32"} {
			name := "rw-log." + algo + "-bs" + bs + ".zcommit"
			args := append([]string{"-z", "--algorithm", algo, "--bs", bs}, rwlogArgs...)
			args = append(args, vec(t, "lsmt/rw-log.data"), vec(t, "lsmt/rw-log.index"), name)
			if code, out, errOut := clitest.Run(t, dir, args...); code != 0 || out != success {
				t.Fatalf("%s: exit %d, %q %q", name, code, out, errOut)
			}
			got, desc := clitest.Unwrap(t, filepath.Join(dir, name))
			if !bytes.Equal(got, want) || desc.String() != "zfile > lsmt" {
				t.Fatalf("%s (%s) does not decompress to rw-log.commit", name, desc)
			}
			if cgoCodecs {
				clitest.SameFile(t, filepath.Join(dir, name), vec(t, "lsmt/"+name))
			}
		}
	}
	// -t wraps the ZFile in the tar envelope.
	args := append([]string{"-z", "-t"}, rwlogArgs...)
	args = append(args, vec(t, "lsmt/rw-log.data"), vec(t, "lsmt/rw-log.index"), "tarred")
	if code, _, errOut := clitest.Run(t, dir, args...); code != 0 {
		t.Fatalf("-z -t: exit %d: %s", code, errOut)
	}
	got, desc := clitest.Unwrap(t, filepath.Join(dir, "tarred"))
	if !bytes.Equal(got, want) || desc.String() != "tar > zfile > lsmt" {
		t.Fatalf("-z -t gave %s", desc)
	}
}

// TestSealThenCommitSealed: --seal turns a copy of the writable vector into
// a sealed layer that reads as main, and --commit_sealed of it gives the
// vector's commit.
func TestSealThenCommitSealed(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"rw-log.data", "rw-log.index"} {
		b, _ := os.ReadFile(vec(t, "lsmt/"+n))
		clitest.WriteFile(t, filepath.Join(dir, n), b)
	}
	if code, out, errOut := clitest.Run(t, dir, "--seal", "rw-log.data", "rw-log.index"); code != 0 || out != "" {
		t.Fatalf("seal: exit %d %q %q", code, out, errOut)
	}
	f, _ := os.Open(filepath.Join(dir, "rw-log.data"))
	r, err := lsmt.OpenReadOnly(psync.NewFile(f, nil))
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Open(vec(t, "lsmt/rw-log.data"))
	wi, _ := os.Open(vec(t, "lsmt/rw-log.index"))
	w, err := lsmt.OpenWritable(psync.NewFile(wd, nil), psync.NewFile(wi, nil))
	if err != nil {
		t.Fatal(err)
	}
	nrec := uint64(len(w.Mappings()))
	w.Close()
	tr := r.Trailer()
	if tr.Flags != 0x06 || tr.IndexSize != nrec || nrec == 0 || tr.IndexOffset != 992256 || tr.UUID.String() != "11111111-2222-3333-4444-555555555555" {
		t.Fatalf("sealed trailer %+v", tr)
	}
	r.Close()
	args := append([]string{"--commit_sealed"}, rwlogArgs...)
	if code, out, errOut := clitest.Run(t, dir, append(args, "rw-log.data", "OUT")...); code != 0 || out != success {
		t.Fatalf("commit_sealed: exit %d %q %q", code, out, errOut)
	}
	clitest.SameFile(t, filepath.Join(dir, "OUT"), vec(t, "lsmt/rw-log.commit"))
	// A committed file can be compacted again with --commit_sealed.
	if code, _, _ := clitest.Run(t, dir, append(args, "OUT", "OUT2")...); code != 0 {
		t.Fatal(code)
	}
	clitest.SameFile(t, filepath.Join(dir, "OUT2"), vec(t, "lsmt/rw-log.commit"))
}

// TestCommitSparse: a layer made by overlaybd-create -s (empty index file)
// commits.
func TestCommitSparse(t *testing.T) {
	dir := t.TempDir()
	w, err := lsmt.Create(fileAt(t, dir, "s.data"), fileAt(t, dir, "s.index"), lsmt.CreateOptions{VirtualSize: 1 << 20, Sparse: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(bytes.Repeat([]byte{7}, 8192), 4096); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if code, out, errOut := clitest.Run(t, dir, "s.data", "s.index", "s.commit"); code != 0 || out != success {
		t.Fatalf("exit %d %q %q", code, out, errOut)
	}
	f, err := os.Open(filepath.Join(dir, "s.commit"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := lsmt.OpenReadOnly(psync.NewFile(f, nil))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16384)
	r.ReadAt(buf, 0)
	if !bytes.Equal(buf[4096:12288], bytes.Repeat([]byte{7}, 8192)) || !bytes.Equal(buf[:4096], make([]byte, 4096)) {
		t.Fatal("sparse commit content")
	}
}

func fileAt(t *testing.T, dir, name string) *psync.File {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	return psync.NewFile(f, nil)
}

func TestCommitErrors(t *testing.T) {
	dir := t.TempDir()
	data, index := vec(t, "lsmt/rw-log.data"), vec(t, "lsmt/rw-log.index")
	bad := clitest.WriteFile(t, filepath.Join(dir, "bad.index"), make([]byte, 5000))
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{}, 106, "data_file is required"},
		{[]string{"missing", "i", "o"}, 105, "File does not exist"},
		{[]string{data, index}, 106, "commit_file is required"},
		{[]string{data, index, "o", "x"}, 109, "not expected"},
		{[]string{"--bogus", data, index, "o"}, 109, "The following argument was not expected: --bogus"},
		{[]string{"--bs", "x", data, index, "o"}, 104, "invalid argument"},
		{[]string{"-z", "--algorithm", "gzip", data, index, "o"}, 255, "invalid '--algorithm' parameters."},
		{[]string{"-z", "--bs", "3", data, index, "o"}, 255, "invalid '--bs' parameters."},
		{[]string{"-z", "--bs", "128", data, index, "o"}, 255, "invalid '--bs' parameters."},
		{[]string{"-t", "--upload", "http://x", data, index, "o"}, 255, "unsupport option with '-t' and '--upload' at the same time."},
		{[]string{"--upload", "http://x", data, index, "o"}, 255, "not supported yet"},
		{[]string{"--turboOCI", data, index, "o"}, 255, "not supported yet"},
		{[]string{"--uuid", "aaaaaaaa-0000-4000-8000-0000000000011", data, index, "o"}, 105, "--uuid"},
		{[]string{"-p", "zz", data, index, "o"}, 105, "--parent-uuid"},
		{[]string{"-m", strings.Repeat("m", 257), data, index, "o"}, 255, "failed to perform commit()"},
		{[]string{data, bad, "o"}, 255, "failed to open the layer"},
		{[]string{"--commit_sealed", data, "o"}, 255, "failed to open the layer"},
	} {
		code, out, errOut := clitest.Run(t, dir, c.args...)
		if code != c.code || !strings.Contains(errOut, c.msg) || (code != 0 && out != "") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want %d and %q", c.args, code, out, errOut, c.code, c.msg)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "o")); !os.IsNotExist(err) {
		t.Fatal("a failed commit left its output")
	}
	// The warning about ignored ZFile options appears only when one was given.
	_, _, errOut := clitest.Run(t, dir, append([]string{"--bs", "8"}, data, index, "w1")...)
	if !strings.Contains(errOut, "will be ignored without '-z'") {
		t.Fatal("no warning for --bs without -z")
	}
	_, _, errOut = clitest.Run(t, dir, data, index, "w2")
	if strings.Contains(errOut, "will be ignored") {
		t.Fatal("warning without --bs/--algorithm")
	}
}
