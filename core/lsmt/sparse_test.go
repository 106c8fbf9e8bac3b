package lsmt_test

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
	"golang.org/x/sys/unix"
)

// fsBlock4K skips tests whose expectations depend on the file system's
// allocation granularity (the vectors were made on ext4 with 4 KiB blocks).
func fsBlock4K(t *testing.T, dir string) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Bsize != 4096 {
		t.Skipf("file system block size %d, the sparse vectors need 4096", st.Bsize)
	}
}

// sparseVector decompresses rw-sparse.data.zst into dir and punches the
// holes listed (as complement) in rw-sparse.extents.txt.
func sparseVector(t *testing.T, dir string) string {
	t.Helper()
	zf, err := os.Open(testvectors.Path(t, "lsmt/rw-sparse.data.zst"))
	if err != nil {
		t.Fatal(err)
	}
	defer zf.Close()
	dec, err := zstd.NewReader(zf)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	path := filepath.Join(dir, "rw-sparse.data")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, dec); err != nil {
		t.Fatal(err)
	}
	st, _ := out.Stat()
	size := st.Size()
	ef, err := os.ReadFile(testvectors.Path(t, "lsmt/rw-sparse.extents.txt"))
	if err != nil {
		t.Fatal(err)
	}
	pos := int64(0)
	sc := bufio.NewScanner(bytes.NewReader(ef))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		b, _ := strconv.ParseInt(f[0], 10, 64)
		e, _ := strconv.ParseInt(f[1], 10, 64)
		if b > pos {
			if err := unix.Fallocate(int(out.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, pos, b-pos); err != nil {
				t.Skipf("punch hole: %v", err)
			}
		}
		pos = e
	}
	if pos < size {
		if err := unix.Fallocate(int(out.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, pos, size-pos); err != nil {
			t.Skipf("punch hole: %v", err)
		}
	}
	if got := hexFile(t, path); got != shaSparseF {
		t.Fatalf("decompressed sparse data sha256 %s, want %s", got, shaSparseF)
	}
	return path
}

func hexFile(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return hexsum(b)
}

func TestSparseVector(t *testing.T) {
	dir := t.TempDir()
	fsBlock4K(t, dir)
	path := sparseVector(t, dir)
	w, err := lsmt.OpenWritable(openFile(t, path, os.O_RDWR), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if !w.Sparse() {
		t.Fatal("not sparse")
	}
	sameImage(t, "rw-sparse", readAll(t, w), image(vsize64M, "main"), shaMain)
	var out bytes.Buffer
	uuid, _ := lsmt.ParseUUID("aaaaaaaa-0000-4000-8000-000000000002")
	if err := w.Commit(&out, lsmt.CommitOptions{UUID: uuid, Message: []byte("overlaybd test vector: rw-sparse")}); err != nil {
		t.Fatal(err)
	}
	sameFile(t, "commit of rw-sparse", out.Bytes(), "lsmt/rw-sparse.commit")
}

// TestReplaySparse writes the main script into a new sparse layer: the data
// file has the vector's content, and after a reopen (mapping rebuilt from
// the allocation) the commit equals the vector's.
func TestReplaySparse(t *testing.T) {
	dir := t.TempDir()
	fsBlock4K(t, dir)
	w, dp, ip := replay(t, dir, "main", true, "11111111-2222-3333-4444-666666666666", "")
	sameImage(t, "sparse main (open)", readAll(t, w), image(vsize64M, "main"), shaMain)
	w.Close()
	if got := hexFile(t, dp); got != shaSparseF {
		t.Fatalf("sparse data file sha256 %s, want %s", got, shaSparseF)
	}
	w, err := lsmt.OpenWritable(openFile(t, dp, os.O_RDWR), openFile(t, ip, os.O_RDWR))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	sameImage(t, "sparse main (reopened)", readAll(t, w), image(vsize64M, "main"), shaMain)
	// With a discard log the commit keeps the zeroed ranges; without one it
	// is upstream's commit.
	wn, err := lsmt.OpenWritable(openFile(t, dp, os.O_RDONLY), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wn.Close()
	var out bytes.Buffer
	uuid, _ := lsmt.ParseUUID("aaaaaaaa-0000-4000-8000-000000000002")
	if err := wn.Commit(&out, lsmt.CommitOptions{UUID: uuid, Message: []byte("overlaybd test vector: rw-sparse")}); err != nil {
		t.Fatal(err)
	}
	sameFile(t, "commit of replayed sparse", out.Bytes(), "lsmt/rw-sparse.commit")
}

// TestSparseDiscardKept: a discard in a sparse upper still hides the lower
// layer after a reopen, thanks to the discard log in the index file; opened
// the way upstream opens it (without the index file), the lower shows
// through again, which is upstream's behaviour, and the file stays
// readable.
func TestSparseDiscardKept(t *testing.T) {
	dir := t.TempDir()
	fsBlock4K(t, dir)
	dp, ip := filepath.Join(dir, "u.data"), filepath.Join(dir, "u.index")
	w, err := lsmt.Create(openFile(t, dp, os.O_RDWR|os.O_CREATE|os.O_EXCL), openFile(t, ip, os.O_RDWR|os.O_CREATE|os.O_EXCL),
		lsmt.CreateOptions{VirtualSize: vsize64M, Sparse: true})
	if err != nil {
		t.Fatal(err)
	}
	s, err := lsmt.OpenStack([]core.File{openVector(t, "stack/A.commit")}, w)
	if err != nil {
		t.Fatal(err)
	}
	// A holds pattern data in [0, 256 KiB): overwrite 4 KiB, then discard
	// 64 KiB around it and 512 bytes in a block nothing wrote.
	if _, err := s.WriteAt(bytes.Repeat([]byte{0xEE}, 4096), 8192); err != nil {
		t.Fatal(err)
	}
	if err := s.Discard(4096, 65536); err != nil {
		t.Fatal(err)
	}
	if err := s.Discard(131072+512, 512); err != nil {
		t.Fatal(err)
	}
	want := image(vsize64M, "stackA")
	clear(want[4096 : 4096+65536])
	clear(want[131072+512 : 131072+1024])
	sameImage(t, "before reopen", readAll(t, s), want, "")
	s.Close()

	w, err = lsmt.OpenWritable(openFile(t, dp, os.O_RDWR), openFile(t, ip, os.O_RDWR))
	if err != nil {
		t.Fatal(err)
	}
	s, err = lsmt.OpenStack([]core.File{openVector(t, "stack/A.commit")}, w)
	if err != nil {
		t.Fatal(err)
	}
	sameImage(t, "after reopen", readAll(t, s), want, "")
	s.Close()

	w, err = lsmt.OpenWritable(openFile(t, dp, os.O_RDONLY), nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err = lsmt.OpenStack([]core.File{openVector(t, "stack/A.commit")}, w)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := readAll(t, s)
	if bytes.Equal(got[4096:4096+65536], want[4096:4096+65536]) {
		t.Fatal("without the discard log the discard survived: the log is not what keeps it")
	}
	if a := image(vsize64M, "stackA"); !bytes.Equal(got[131072+512:131072+1024], a[131072+512:131072+1024]) {
		t.Fatal("upstream-style open: the lower should show through the forgotten discard")
	}
}

// TestRawZstExpectations: the zstd-compressed expected images of the
// vectors equal what the Go generator of the write scripts produces, and
// the layers read as them.
func TestRawZstExpectations(t *testing.T) {
	for _, c := range []struct {
		zst, layer string
		scripts    []string
	}{
		{"lsmt/main.raw.zst", "lsmt/rw-log.commit", []string{"main"}},
		{"stack/merged.raw.zst", "stack/merged-by-tool.commit", []string{"stackA", "stackB", "stackC"}},
	} {
		zf, err := os.Open(testvectors.Path(t, c.zst))
		if err != nil {
			t.Fatal(err)
		}
		dec, err := zstd.NewReader(zf)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(dec)
		dec.Close()
		zf.Close()
		if err != nil {
			t.Fatal(err)
		}
		sameImage(t, c.zst+" vs generator", raw, image(vsize64M, c.scripts...), "")
		sameImage(t, c.layer+" vs "+c.zst, readAll(t, openRO(t, c.layer)), raw, "")
	}
}

// TestSparseLongDiscardPieces: a discard longer than one record's length,
// starting off a block boundary, is split into pieces that end on block
// boundaries, so that no block inside the range stays allocated and turns
// into data after a reopen (BlockStatus reports the whole range as zeros).
func TestSparseLongDiscardPieces(t *testing.T) {
	dir := t.TempDir()
	fsBlock4K(t, dir)
	dp, ip := filepath.Join(dir, "u.data"), filepath.Join(dir, "u.index")
	w, err := lsmt.Create(openFile(t, dp, os.O_RDWR|os.O_CREATE|os.O_EXCL), openFile(t, ip, os.O_RDWR|os.O_CREATE|os.O_EXCL),
		lsmt.CreateOptions{VirtualSize: vsize64M, Sparse: true})
	if err != nil {
		t.Fatal(err)
	}
	const off, n = 764416, 8721920 // 16383 sectors from off end inside a block
	if _, err := w.WriteAt(bytes.Repeat([]byte{0xAB}, n+4096), off-2560); err != nil {
		t.Fatal(err)
	}
	if err := w.Discard(off, n); err != nil {
		t.Fatal(err)
	}
	w.Close()
	w, err = lsmt.OpenWritable(openFile(t, dp, os.O_RDWR), openFile(t, ip, os.O_RDWR))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	first := int64(off+4095) / 4096 * 4096 // the whole blocks of the range
	last := int64(off+n) / 4096 * 4096
	ext, err := w.BlockStatus(first, last-first)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ext {
		if e.Flags&core.ExtentZero == 0 {
			t.Errorf("after a reopen [%d, %d) inside the discarded range is data", e.Offset, e.Offset+e.Length)
		}
	}
	got := make([]byte, n)
	if _, err := w.ReadAt(got, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, make([]byte, n)) {
		t.Error("the discarded range does not read as zeros")
	}
}
