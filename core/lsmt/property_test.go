package lsmt_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
)

func testSeed(t testing.TB) uint64 {
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv("OVERLAYBD_SEED"); v != "" {
		s, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (replay with OVERLAYBD_SEED=%d)", s, s)
	return s
}

// propertyHarness runs random operations on a writable layer stacked over
// the vectors A and B and compares everything with a byte-array model:
// the merged view, the upper alone, the upper's commit alone and stacked,
// block status, across syncs and reopens.
type propertyHarness struct {
	t      *testing.T
	r      *rand.Rand
	dir    string
	sparse bool
	stack  *lsmt.Stack
	model  []byte // the merged view
	upper  []byte // the writable layer alone (unwritten reads as zeros)
	dp, ip string
	commit int
}

var regions = [][2]int64{{0, 1 * mib}, {4 * mib, 4*mib + 512*kib}, {16 * mib, 16*mib + 256*kib}, {64*mib - 256*kib, 64 * mib}}

func (h *propertyHarness) openStack(upper *lsmt.Writable) {
	h.t.Helper()
	s, err := lsmt.OpenStack([]core.File{openVector(h.t, "stack/A.commit"), openVector(h.t, "stack/B.commit")}, upper)
	if err != nil {
		h.t.Fatal(err)
	}
	h.stack = s
}

func (h *propertyHarness) reopen() {
	h.t.Helper()
	if err := h.stack.Close(); err != nil {
		h.t.Fatal(err)
	}
	w, err := lsmt.OpenWritable(openFile(h.t, h.dp, os.O_RDWR), openFile(h.t, h.ip, os.O_RDWR))
	if err != nil {
		h.t.Fatal(err)
	}
	h.openStack(w)
}

func (h *propertyHarness) rangeOp(maxSectors int) (int64, int64) {
	reg := regions[h.r.IntN(len(regions))]
	n := int64(1+h.r.IntN(maxSectors)) * 512
	off := reg[0] + h.r.Int64N((reg[1]-reg[0])/512)*512
	if off+n > vsize64M {
		n = vsize64M - off
	}
	return off, n
}

func (h *propertyHarness) checkRead(off, n int64, what string) {
	h.t.Helper()
	buf := make([]byte, n)
	if _, err := h.stack.ReadAt(buf, off); err != nil {
		h.t.Fatalf("%s: read [%d,+%d): %v", what, off, n, err)
	}
	if !bytes.Equal(buf, h.model[off:off+n]) {
		for i := range buf {
			if buf[i] != h.model[off+int64(i)] {
				h.t.Fatalf("%s: read [%d,+%d) differs at %d: %#x, model %#x", what, off, n, off+int64(i), buf[i], h.model[off+int64(i)])
			}
		}
	}
}

func (h *propertyHarness) checkAll(what string) {
	h.t.Helper()
	sameImage(h.t, what, readAll(h.t, h.stack), h.model, "")
	sameImage(h.t, what+" (upper alone)", readAll(h.t, h.stack.Upper()), h.upper, "")
}

func (h *propertyHarness) checkCommit() {
	h.t.Helper()
	h.commit++
	path := filepath.Join(h.dir, fmt.Sprintf("c%d.commit", h.commit))
	f := openFile(h.t, path, os.O_RDWR|os.O_CREATE|os.O_EXCL)
	var buf bytes.Buffer
	if err := h.stack.Upper().Commit(&buf, lsmt.CommitOptions{Message: []byte("property")}); err != nil {
		h.t.Fatal(err)
	}
	if _, err := f.WriteAt(buf.Bytes(), 0); err != nil {
		h.t.Fatal(err)
	}
	c, err := lsmt.OpenReadOnly(f)
	if err != nil {
		h.t.Fatalf("open the commit: %v", err)
	}
	sameImage(h.t, "commit alone", readAll(h.t, c), h.upper, "")
	s, err := lsmt.OpenStack([]core.File{openVector(h.t, "stack/A.commit"), openVector(h.t, "stack/B.commit"), c.File()}, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	sameImage(h.t, "A+B+commit", readAll(h.t, s), h.model, "")
	s.Close()
}

func (h *propertyHarness) checkBlockStatus(off, n int64) {
	h.t.Helper()
	exts, err := h.stack.BlockStatus(off, n)
	if err != nil {
		h.t.Fatal(err)
	}
	pos := off
	for _, e := range exts {
		if e.Offset != pos || e.Length <= 0 {
			h.t.Fatalf("block status [%d,+%d): extent %+v at %d", off, n, e, pos)
		}
		if e.Flags&core.ExtentZero != 0 && !bytes.Equal(h.model[e.Offset:e.Offset+e.Length], make([]byte, e.Length)) {
			h.t.Fatalf("block status says zero for [%d,+%d), which holds data", e.Offset, e.Length)
		}
		pos += e.Length
	}
	if pos != off+n && len(exts) < 1024 {
		h.t.Fatalf("block status [%d,+%d) covered up to %d", off, n, pos)
	}
}

func runProperty(t *testing.T, sparse bool) {
	ops := 10000
	if testing.Short() {
		ops = 2000 // the race detector run
	}
	if os.Getenv("OVERLAYBD_LONG") != "" {
		ops = 200000
	}
	h := &propertyHarness{t: t, r: rand.New(rand.NewPCG(testSeed(t), 7)), dir: t.TempDir(), sparse: sparse}
	if sparse {
		fsBlock4K(t, h.dir)
	}
	h.dp, h.ip = filepath.Join(h.dir, "upper.data"), filepath.Join(h.dir, "upper.index")
	w, err := lsmt.Create(openFile(t, h.dp, os.O_RDWR|os.O_CREATE|os.O_EXCL), openFile(t, h.ip, os.O_RDWR|os.O_CREATE|os.O_EXCL),
		lsmt.CreateOptions{VirtualSize: 0, Sparse: sparse})
	if err != nil {
		t.Fatal(err)
	}
	h.openStack(w)
	defer func() { h.stack.Close() }()
	if h.stack.Size() != vsize64M {
		t.Fatalf("upper did not adopt the lower size: %d", h.stack.Size())
	}
	h.model = image(vsize64M, "stackA", "stackB")
	h.upper = make([]byte, vsize64M)
	counts := map[string]int{}
	for i := 0; i < ops; i++ {
		switch k := h.r.IntN(100); {
		case k < 40:
			off, n := h.rangeOp(32)
			p := make([]byte, n)
			for j := range p {
				p[j] = byte(h.r.Uint32())
			}
			if h.r.IntN(10) == 0 {
				clear(p) // explicit zero data
			}
			if _, err := h.stack.WriteAt(p, off); err != nil {
				t.Fatalf("op %d write [%d,+%d): %v", i, off, n, err)
			}
			copy(h.model[off:], p)
			if sparse {
				// The stack completes partial blocks of a sparse upper
				// with the merged content (see Stack.WriteAt).
				hb, te := off/4096*4096, min((off+n+4095)/4096*4096, vsize64M)
				copy(h.upper[hb:te], h.model[hb:te])
			} else {
				copy(h.upper[off:], p)
			}
			counts["write"]++
		case k < 48:
			off, n := h.rangeOp(64)
			if err := h.stack.Discard(off, n); err != nil {
				t.Fatalf("op %d discard: %v", i, err)
			}
			clear(h.model[off : off+n])
			clear(h.upper[off : off+n])
			counts["discard"]++
		case k < 52:
			off, n := h.rangeOp(64)
			if err := h.stack.WriteZeroes(off, n); err != nil {
				t.Fatalf("op %d write zeroes: %v", i, err)
			}
			clear(h.model[off : off+n])
			clear(h.upper[off : off+n])
			counts["zeroes"]++
		case k < 90:
			off, n := h.rangeOp(128)
			h.checkRead(off, n, fmt.Sprintf("op %d", i))
			counts["read"]++
		case k < 94:
			off, n := h.rangeOp(256)
			h.checkBlockStatus(off, n)
			counts["status"]++
		case k < 97:
			if err := h.stack.Sync(); err != nil {
				t.Fatal(err)
			}
			counts["sync"]++
		case k < 99:
			h.reopen()
			counts["reopen"]++
		default:
			if h.r.IntN(30) == 0 {
				h.checkCommit()
				counts["commit"]++
			}
		}
	}
	h.checkAll("end")
	h.reopen()
	h.checkAll("end, reopened")
	h.checkCommit()
	t.Logf("%d operations: %v", ops, counts)
}

func TestPropertyAppendOnly(t *testing.T) { runProperty(t, false) }
func TestPropertySparse(t *testing.T)     { runProperty(t, true) }
