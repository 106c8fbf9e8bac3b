package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/internal/clitest"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

// TestCreateLikeUpstream: with the vector's UUID the files are the
// vector's, byte for byte.
func TestCreateLikeUpstream(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := clitest.Run(t, dir, "--uuid", "F04C7F77-F20F-46FE-8CBE-72B398B9997D", "d", "i", "1")
	if code != 0 || out != "overlaybd-create has created files SUCCESSFULLY\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	clitest.SameFile(t, filepath.Join(dir, "d"), testvectors.Path(t, "lsmt/tool-created-1g.data"))
	clitest.SameFile(t, filepath.Join(dir, "i"), testvectors.Path(t, "lsmt/tool-created-1g.index"))
	// Without --uuid the UUID is random and both headers carry the same.
	if code, _, _ := clitest.Run(t, dir, "d2", "i2", "3"); code != 0 {
		t.Fatal(code)
	}
	d, _ := os.ReadFile(filepath.Join(dir, "d2"))
	i, _ := os.ReadFile(filepath.Join(dir, "i2"))
	hd, err1 := lsmt.ParseHeader(d)
	hi, err2 := lsmt.ParseHeader(i)
	if err1 != nil || err2 != nil || hd.UUID != hi.UUID || hd.UUID.IsNull() || hd.VirtualSize != 3<<30 || hd.Flags != 3 || hi.Flags != 1 {
		t.Fatalf("headers %+v %+v %v %v", hd, hi, err1, err2)
	}
}

func TestCreateSparseAndParent(t *testing.T) {
	dir := t.TempDir()
	code, _, errOut := clitest.Run(t, dir, "-s", "--parent_uuid", "cccccccc-0000-4000-8000-00000000000a", "d", "i", "2")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	st, _ := os.Stat(filepath.Join(dir, "d"))
	si, _ := os.Stat(filepath.Join(dir, "i"))
	if st.Size() != 2<<30+4096 || si.Size() != 0 {
		t.Fatalf("sizes %d %d", st.Size(), si.Size())
	}
	df, err := os.Open(filepath.Join(dir, "d"))
	if err != nil {
		t.Fatal(err)
	}
	d := make([]byte, 4096)
	df.ReadAt(d, 0)
	df.Close()
	h, err := lsmt.ParseHeader(d)
	if err != nil || h.Flags != 0x13 || h.ParentUUID.String() != "CCCCCCCC-0000-4000-8000-00000000000A" {
		t.Fatalf("%+v %v", h, err)
	}
	// An unparsable -u is ignored with a warning, as upstream.
	code, _, errOut = clitest.Run(t, dir, "-u", "nonsense", "d2", "i2", "0")
	if code != 0 || !strings.Contains(errOut, "parent uuid ignored") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	// --raw: a plain file of the size, an empty index.
	if code, _, _ := clitest.Run(t, dir, "--raw", "r", "ri", "1"); code != 0 {
		t.Fatal(code)
	}
	if st, _ := os.Stat(filepath.Join(dir, "r")); st.Size() != 1<<30 {
		t.Fatal(st.Size())
	}
}

func TestCreateErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"d"}, 106, "index_file is required"},
		{[]string{"d", "i"}, 106, "vsize is required"},
		{[]string{"d", "i", "1", "x"}, 109, "not expected"},
		{[]string{"--nope", "d", "i", "1"}, 109, "The following argument was not expected: --nope"},
		{[]string{"d", "i", "big"}, 104, "not a size"},
		{[]string{"--turboOCI", "d", "i", "1"}, 255, "not supported yet"},
		{[]string{"--fastoci", "d", "i", "1"}, 255, "not supported yet"},
		{[]string{"--uuid", "bad", "d", "i", "1"}, 105, "invalid UUID"},
	} {
		code, out, errOut := clitest.Run(t, dir, c.args...)
		if code != c.code || !strings.Contains(errOut, c.msg) || (code != 0 && out != "") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want %d and %q", c.args, code, out, errOut, c.code, c.msg)
		}
	}
	// An existing index file: failure, and the data file this run created
	// is removed.
	clitest.WriteFile(t, filepath.Join(dir, "taken"), nil)
	code, _, errOut := clitest.Run(t, dir, "new", "taken", "1")
	if code != 255 || !strings.Contains(errOut, "failed to open file 'taken', 17: file exists") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); !os.IsNotExist(err) {
		t.Fatal("the data file was left behind")
	}
}
