package lsmt_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

// Expected raw images (testdata/README.md).
const (
	shaMain    = "3f5ae43d7b2f67b16af3f888016c9c3862415afb23032e86e071cd94ddfee7bc"
	shaA       = "dc81f3f64a32d07b8156453addbf9941908a040058a73f437d404d353ddc99cc"
	shaB       = "7c1d141c96e3816afd33175362d338498244a88996ae18a2b86fa020718fc462"
	shaC       = "c7aac0ccd86be96d9f0069bd332063d6a9f849b3ee4359187469ec22a2fc4376"
	shaAB      = "c0a515c9ecb4dd491d67f2ada43a6aac30c36a381776c511976b60115eaed013"
	shaABC     = "1b9080e2fee87dd365461b1954d0ec5aef94ff96ade24da93499d01a70322e4b"
	shaApply   = "61acd17bc0724f1a18d2c537f5fa19d04f9b27aab43d11478f78e9f55d100bb0"
	shaZero1G  = "49bc20df15e412a64472421e13fe86ff1c5165e18b2afccf160d4dc19fe68a14"
	shaSparseF = "92f13551049ef153a8607433ef223a1fe0e29243681333f133b15d3b1c6bf615"
	vsize64M   = 64 * mib
)

func hexsum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func openFile(tb testing.TB, path string, flag int) *psync.File {
	tb.Helper()
	f, err := os.OpenFile(path, flag, 0o644)
	if err != nil {
		tb.Fatal(err)
	}
	return psync.NewFile(f, nil)
}

func openVector(tb testing.TB, rel string) *psync.File {
	return openFile(tb, testvectors.Path(tb, rel), os.O_RDONLY)
}

func openRO(tb testing.TB, rel string) *lsmt.ReadOnly {
	tb.Helper()
	r, err := lsmt.OpenReadOnly(openVector(tb, rel))
	if err != nil {
		tb.Fatalf("open %s: %v", rel, err)
	}
	tb.Cleanup(func() { r.Close() })
	return r
}

// readAll reads a whole device in 1 MiB requests.
func readAll(tb testing.TB, f core.File) []byte {
	tb.Helper()
	out := make([]byte, f.Size())
	for off := int64(0); off < int64(len(out)); off += mib {
		end := min(off+mib, int64(len(out)))
		if n, err := f.ReadAt(out[off:end], off); n != int(end-off) || (err != nil && end != int64(len(out))) {
			tb.Fatalf("read at %d: %d, %v", off, n, err)
		}
	}
	return out
}

// sameImage compares got with want and names the first differing sector.
func sameImage(tb testing.TB, what string, got, want []byte, sha string) {
	tb.Helper()
	if sha != "" {
		if s := hexsum(want); s != sha {
			tb.Fatalf("%s: generated expectation has sha256 %s, README says %s", what, s, sha)
		}
	}
	if len(got) != len(want) {
		tb.Fatalf("%s: size %d, want %d", what, len(got), len(want))
	}
	if !bytes.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				tb.Fatalf("%s: first difference at byte %d (sector %d): %#x, want %#x", what, i, i/512, got[i], want[i])
			}
		}
	}
}

func TestReadCommittedVectors(t *testing.T) {
	for _, tc := range []struct {
		file    string
		scripts []string
		sha     string
	}{
		{"lsmt/rw-log.commit", []string{"main"}, shaMain},
		{"lsmt/rw-sparse.commit", []string{"main"}, shaMain},
		{"stack/A.commit", []string{"stackA"}, shaA},
		{"stack/B.commit", []string{"stackB"}, shaB},
		{"stack/C.commit", []string{"stackC"}, shaC},
		{"stack/merged-by-tool.commit", []string{"stackA", "stackB", "stackC"}, shaABC},
	} {
		t.Run(tc.file, func(t *testing.T) {
			r := openRO(t, tc.file)
			sameImage(t, tc.file, readAll(t, r), image(vsize64M, tc.scripts...), tc.sha)
		})
	}
}

func TestReadApplyVector(t *testing.T) {
	if testing.Short() {
		t.Skip("reads 1 GiB")
	}
	r := openRO(t, "apply/apply.commit")
	if got := hexsum(readAll(t, r)); got != shaApply {
		t.Fatalf("apply.commit raw sha256 %s, want %s", got, shaApply)
	}
}

func TestStackVectors(t *testing.T) {
	for _, tc := range []struct {
		layers []string
		sha    string
	}{
		{[]string{"A"}, shaA},
		{[]string{"A", "B"}, shaAB},
		{[]string{"A", "B", "C"}, shaABC},
	} {
		var files []core.File
		var names []string
		for _, l := range tc.layers {
			files = append(files, openVector(t, "stack/"+l+".commit"))
			names = append(names, "stack"+l)
		}
		s, err := lsmt.OpenStack(files, nil)
		if err != nil {
			t.Fatal(err)
		}
		sameImage(t, "stack "+filepath.Join(tc.layers...), readAll(t, s), image(vsize64M, names...), tc.sha)
		s.Close()
	}
}

func TestToolCreatedVector(t *testing.T) {
	data := openVector(t, "lsmt/tool-created-1g.data")
	index := openVector(t, "lsmt/tool-created-1g.index")
	w, err := lsmt.OpenWritable(data, index)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.Size() != 1<<30 || w.Sparse() {
		t.Fatalf("size %d sparse %v", w.Size(), w.Sparse())
	}
	if testing.Short() {
		return
	}
	if got := hexsum(readAll(t, w)); got != shaZero1G {
		t.Fatalf("raw sha256 %s, want %s", got, shaZero1G)
	}
}

func TestReadWritableLogVector(t *testing.T) {
	w, err := lsmt.OpenWritable(openVector(t, "lsmt/rw-log.data"), openVector(t, "lsmt/rw-log.index"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	sameImage(t, "rw-log", readAll(t, w), image(vsize64M, "main"), shaMain)
	if h := w.Header(); h.UUID.String() != "11111111-2222-3333-4444-555555555555" || !h.ParentUUID.IsNull() {
		t.Fatalf("header uuid %v parent %v", h.UUID, h.ParentUUID)
	}
	// Committing the vector's writable files gives the vector's commit.
	var out bytes.Buffer
	uuid, _ := lsmt.ParseUUID("aaaaaaaa-0000-4000-8000-000000000001")
	if err := w.Commit(&out, lsmt.CommitOptions{UUID: uuid, Message: []byte("overlaybd test vector: rw-log")}); err != nil {
		t.Fatal(err)
	}
	sameFile(t, "rw-log.commit", out.Bytes(), "lsmt/rw-log.commit")
}

func sameFile(tb testing.TB, what string, got []byte, rel string) {
	tb.Helper()
	want, err := os.ReadFile(testvectors.Path(tb, rel))
	if err != nil {
		tb.Fatal(err)
	}
	if bytes.Equal(got, want) {
		return
	}
	n := min(len(got), len(want))
	for i := 0; i < n; i++ {
		if got[i] != want[i] {
			tb.Fatalf("%s differs from %s at byte %d (%#x, want %#x); sizes %d, %d", what, rel, i, got[i], want[i], len(got), len(want))
		}
	}
	tb.Fatalf("%s: size %d, %s has %d", what, len(got), rel, len(want))
}

// replay creates an append-only layer in dir and applies the script.
func replay(t *testing.T, dir, name string, sparse bool, uuid, parent string) (*lsmt.Writable, string, string) {
	t.Helper()
	dp, ip := filepath.Join(dir, name+".data"), filepath.Join(dir, name+".index")
	data := openFile(t, dp, os.O_RDWR|os.O_CREATE|os.O_EXCL)
	index := openFile(t, ip, os.O_RDWR|os.O_CREATE|os.O_EXCL)
	opts := lsmt.CreateOptions{VirtualSize: vsize64M, Sparse: sparse}
	opts.UUID, _ = lsmt.ParseUUID(uuid)
	if parent != "" {
		opts.ParentUUID, _ = lsmt.ParseUUID(parent)
	}
	w, err := lsmt.Create(data, index, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range scripts[name] {
		if op.kind == 'D' {
			err = w.Discard(op.off, op.n)
		} else {
			_, err = w.WriteAt(opData(op), op.off)
		}
		if err != nil {
			t.Fatalf("%s op %+v: %v", name, op, err)
		}
	}
	return w, dp, ip
}

func TestReplayMainScript(t *testing.T) {
	dir := t.TempDir()
	w, dp, ip := replay(t, dir, "main", false, "11111111-2222-3333-4444-555555555555", "")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range [][2]string{{dp, "lsmt/rw-log.data"}, {ip, "lsmt/rw-log.index"}} {
		got, err := os.ReadFile(p[0])
		if err != nil {
			t.Fatal(err)
		}
		sameFile(t, filepath.Base(p[0]), got, p[1])
	}
	// Reopen, read, commit.
	w, err := lsmt.OpenWritable(openFile(t, dp, os.O_RDWR), openFile(t, ip, os.O_RDWR))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	sameImage(t, "replayed main", readAll(t, w), image(vsize64M, "main"), shaMain)
	var out bytes.Buffer
	uuid, _ := lsmt.ParseUUID("aaaaaaaa-0000-4000-8000-000000000001")
	if err := w.Commit(&out, lsmt.CommitOptions{UUID: uuid, Message: []byte("overlaybd test vector: rw-log")}); err != nil {
		t.Fatal(err)
	}
	sameFile(t, "commit of replayed main", out.Bytes(), "lsmt/rw-log.commit")
}

func TestReplayStackScripts(t *testing.T) {
	dir := t.TempDir()
	const base = "cccccccc-0000-4000-8000-00000000000"
	prev := ""
	for _, l := range []string{"A", "B", "C"} {
		uuid := base + map[string]string{"A": "a", "B": "b", "C": "c"}[l]
		w, _, _ := replay(t, dir, "stack"+l, false, uuid, prev)
		var out bytes.Buffer
		u, _ := lsmt.ParseUUID(uuid)
		opts := lsmt.CommitOptions{UUID: u, Message: []byte("layer " + l)}
		if prev != "" {
			p, _ := lsmt.ParseUUID(prev)
			opts.Parent = &p
		}
		if err := w.Commit(&out, opts); err != nil {
			t.Fatal(err)
		}
		w.Close()
		sameFile(t, "commit of "+l, out.Bytes(), "stack/"+l+".commit")
		prev = uuid
	}
}

func TestMergeVector(t *testing.T) {
	var files []core.File
	for _, l := range []string{"A", "B", "C"} {
		files = append(files, openVector(t, "stack/"+l+".commit"))
	}
	s, err := lsmt.OpenStack(files, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out bytes.Buffer
	if err := s.Flatten(&out, lsmt.CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	sameFile(t, "flattened A+B+C", out.Bytes(), "stack/merged-by-tool.commit")
}
