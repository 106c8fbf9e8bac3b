package lsmt_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
)

// TestBlockStatusVector checks block status of rw-log.commit against its
// index (DUMPS.txt): data, zeroed records and unmapped gaps.
func TestBlockStatusVector(t *testing.T) {
	r := openRO(t, "lsmt/rw-log.commit")
	exts, err := r.BlockStatus(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	const hz = core.ExtentHole | core.ExtentZero
	want := []core.Extent{
		{Offset: 0, Length: 12288, Flags: 0},                // {0,24} data
		{Offset: 12288, Length: 1024, Flags: hz},            // {24,2} zeroed
		{Offset: 13312, Length: 131072 - 13312},             // {26,230} data
		{Offset: 131072, Length: 1<<20 - 131072, Flags: hz}, // unmapped
	}
	if len(exts) != len(want) {
		t.Fatalf("extents %+v", exts)
	}
	for i := range want {
		if exts[i] != want[i] {
			t.Fatalf("extent %d: %+v, want %+v", i, exts[i], want[i])
		}
	}
	if _, err := r.BlockStatus(r.Size(), 512); !errors.Is(err, core.ErrOutOfRange) {
		t.Fatalf("status beyond the end: %v", err)
	}
}

// batchFile counts Batch calls on top of a plain file.
type batchFile struct {
	core.File
	batches, reqs atomic.Int64
}

func (f *batchFile) Batch(reqs []core.IORequest) error {
	f.batches.Add(1)
	f.reqs.Add(int64(len(reqs)))
	for i := range reqs {
		reqs[i].N, reqs[i].Err = f.ReadAt(reqs[i].Buf, reqs[i].Off)
	}
	return nil
}

// TestBatchReads: a read spanning several records of a layer whose file
// offers batches goes out as one batch.
func TestBatchReads(t *testing.T) {
	bf := &batchFile{File: zfiletest.NewMemFile(vectorBytes(t, "stack/merged-by-tool.commit"))}
	r, err := lsmt.OpenReadOnly(bf)
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, r)
	sameImage(t, "merged via batches", got, image(vsize64M, "stackA", "stackB", "stackC"), shaABC)
	if bf.batches.Load() == 0 || bf.reqs.Load() < 2*bf.batches.Load() {
		t.Fatalf("batches %d with %d requests", bf.batches.Load(), bf.reqs.Load())
	}
}

func TestStackLimits(t *testing.T) {
	c := vectorBytes(t, "stack/C.commit")
	var lowers []*lsmt.ReadOnly
	for i := 0; i < 256; i++ {
		r, err := lsmt.OpenReadOnly(zfiletest.NewMemFile(c))
		if err != nil {
			t.Fatal(err)
		}
		lowers = append(lowers, r)
	}
	if _, err := lsmt.NewStack(lowers, nil); !errors.Is(err, core.ErrUnsupported) {
		t.Fatalf("256 layers: %v", err)
	}
	s, err := lsmt.NewStack(lowers[:255], nil)
	if err != nil {
		t.Fatal(err)
	}
	sameImage(t, "255 x C", readAll(t, s), image(vsize64M, "stackC"), shaC)
	if _, err := s.WriteAt(make([]byte, 512), 0); !errors.Is(err, core.ErrReadOnly) {
		t.Fatalf("write to a read-only stack: %v", err)
	}
}

// TestConcurrentWritable writes and reads a writable layer from several
// goroutines (run with -race).
func TestConcurrentWritable(t *testing.T) {
	for _, sparse := range []bool{false, true} {
		data, index := zfiletest.NewMemFile(nil), zfiletest.NewMemFile(nil)
		w, err := lsmt.Create(data, index, lsmt.CreateOptions{VirtualSize: 8 << 20, Sparse: sparse})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				buf := make([]byte, 4096)
				for i := 0; i < 200; i++ {
					off := int64(g)<<21 + int64(i%256)*4096
					for j := range buf {
						buf[j] = byte(g*31 + i)
					}
					if _, err := w.WriteAt(buf, off); err != nil {
						t.Error(err)
						return
					}
					if i%7 == 0 {
						w.Discard(off, 4096)
						w.WriteAt(buf, off)
					}
					rb := make([]byte, 4096)
					if _, err := w.ReadAt(rb, off); err != nil || !bytes.Equal(rb, buf) {
						t.Errorf("goroutine %d read back %v", g, err)
						return
					}
					w.BlockStatus(0, 8<<20)
				}
			}(g)
		}
		wg.Wait()
		if err := w.Sync(); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
}

// TestRestack: the writable layer of a stack is sealed in place and
// becomes the top read-only layer under a new writable layer (upstream's
// snapshot), twice; the view stays correct, for both kinds.
func TestRestack(t *testing.T) {
	for _, sparse := range []bool{false, true} {
		dir := t.TempDir()
		if sparse {
			fsBlock4K(t, dir)
		}
		want := image(vsize64M, "stackA")
		lowers := []*lsmt.ReadOnly{openRO(t, "stack/A.commit")}
		// openRO registers a Close; the stack owns the layer from now on.
		for round := 0; round < 3; round++ {
			dp := filepath.Join(dir, fmt.Sprintf("u%d.data", round))
			ip := filepath.Join(dir, fmt.Sprintf("u%d.index", round))
			w, err := lsmt.Create(openFile(t, dp, os.O_RDWR|os.O_CREATE|os.O_EXCL), openFile(t, ip, os.O_RDWR|os.O_CREATE|os.O_EXCL),
				lsmt.CreateOptions{VirtualSize: 0, Sparse: sparse})
			if err != nil {
				t.Fatal(err)
			}
			s, err := lsmt.NewStack(lowers, w)
			if err != nil {
				t.Fatal(err)
			}
			p := bytes.Repeat([]byte{byte(0x40 + round)}, 3*4096+512)
			off := int64(round)*8192 + 512
			if _, err := s.WriteAt(p, off); err != nil {
				t.Fatal(err)
			}
			copy(want[off:], p)
			if err := s.Discard(4<<20+int64(round)*4096, 4096); err != nil {
				t.Fatal(err)
			}
			clear(want[4<<20+int64(round)*4096 : 4<<20+int64(round+1)*4096])
			sameImage(t, fmt.Sprintf("round %d", round), readAll(t, s), want, "")
			sealed, err := w.Seal()
			if err != nil {
				t.Fatal(err)
			}
			lowers = append(lowers, sealed)
		}
		s, err := lsmt.NewStack(lowers, nil)
		if err != nil {
			t.Fatal(err)
		}
		sameImage(t, "sealed stack", readAll(t, s), want, "")
		var out bytes.Buffer
		if err := s.Flatten(&out, lsmt.CommitOptions{}); err != nil {
			t.Fatal(err)
		}
		f, err := lsmt.OpenReadOnly(zfiletest.NewMemFile(out.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		sameImage(t, "flattened", readAll(t, f), want, "")
		for _, l := range lowers[1:] {
			l.Close()
		}
	}
}

// TestOversizedIndexes: indexes longer than upstream's limits are refused
// before anything is read or allocated.
func TestOversizedIndexes(t *testing.T) {
	dir := t.TempDir()
	ip := filepath.Join(dir, "i")
	w, err := lsmt.Create(openFile(t, filepath.Join(dir, "d"), os.O_RDWR|os.O_CREATE), openFile(t, ip, os.O_RDWR|os.O_CREATE), lsmt.CreateOptions{VirtualSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := os.Truncate(ip, 4096+16*(lsmt.MaxIndexSize+1)); err != nil {
		t.Skip(err)
	}
	_, err = lsmt.OpenWritable(openFile(t, filepath.Join(dir, "d"), os.O_RDWR), openFile(t, ip, os.O_RDWR))
	if !errors.Is(err, core.ErrCorrupt) {
		t.Fatalf("oversized writable index: %v", err)
	}
	// A committed layer whose trailer claims 1,000,001 records.
	b := vectorBytes(t, "stack/C.commit")
	tr := len(b) - lsmt.HeaderSize
	binary.LittleEndian.PutUint64(b[tr+40:], lsmt.MaxROIndexSize+1)
	if _, err := lsmt.OpenReadOnly(zfiletest.NewMemFile(b)); !errors.Is(err, core.ErrCorrupt) || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("oversized read-only index: %v", err)
	}
}

// TestBeyond2TiB: data written past 2 TiB (sector 2^32) reads back through
// a commit and a stack, next to data at the same offset modulo 2^32.
func TestBeyond2TiB(t *testing.T) {
	const vsize = 8 << 40
	mk := func(offs ...int64) *lsmt.ReadOnly {
		w, err := lsmt.Create(zfiletest.NewMemFile(nil), zfiletest.NewMemFile(nil), lsmt.CreateOptions{VirtualSize: vsize})
		if err != nil {
			t.Fatal(err)
		}
		for i, off := range offs {
			if _, err := w.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, 4096), off); err != nil {
				t.Fatal(err)
			}
		}
		var out bytes.Buffer
		if err := w.Commit(&out, lsmt.CommitOptions{}); err != nil {
			t.Fatal(err)
		}
		r, err := lsmt.OpenReadOnly(zfiletest.NewMemFile(out.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	const tib2 = 2 << 40 // sector 2^32
	lower := mk(4096, tib2+4096, 2*tib2+4096)
	upper := mk(tib2 + 8192)
	s, err := lsmt.NewStack([]*lsmt.ReadOnly{lower, upper}, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for _, c := range []struct {
		off  int64
		want byte
	}{{4096, 1}, {8192, 0}, {tib2 + 4096, 2}, {tib2 + 8192, 1}, {2*tib2 + 4096, 3}, {2*tib2 + 8192, 0}, {vsize - 4096, 0}} {
		if _, err := s.ReadAt(buf, c.off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, bytes.Repeat([]byte{c.want}, 4096)) {
			t.Fatalf("at %d: %#x..., want %#x", c.off, buf[0], c.want)
		}
	}
}

// TestConcurrentStack writes unaligned-to-blocks pieces from several
// goroutines into a sparse upper over A (each goroutine owns its blocks)
// while others read, then checks the result before and after a reopen.
func TestConcurrentStack(t *testing.T) {
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
	want := image(vsize64M, "stackA")
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				// Block (g + 4*i) of the first 256 KiB region A wrote; a
				// 512-byte piece at a varying sector inside it.
				blk := int64(g+4*(i%16)) * 4096
				off := blk + int64(i%8)*512
				p := bytes.Repeat([]byte{byte(16*g + i%16)}, 512)
				if _, err := s.WriteAt(p, off); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				copy(want[off:], p)
				mu.Unlock()
				if i%10 == 0 {
					if err := s.Discard(blk+int64(3+g%4)*512, 512); err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					clear(want[blk+int64(3+g%4)*512 : blk+int64(4+g%4)*512])
					mu.Unlock()
				}
				buf := make([]byte, 8192)
				if _, err := s.ReadAt(buf, int64(i)*4096); err != nil {
					t.Error(err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	sameImage(t, "after concurrent writes", readAll(t, s), want, "")
	s.Close()
	w, err = lsmt.OpenWritable(openFile(t, dp, os.O_RDWR), openFile(t, ip, os.O_RDWR))
	if err != nil {
		t.Fatal(err)
	}
	s, err = lsmt.OpenStack([]core.File{openVector(t, "stack/A.commit")}, w)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sameImage(t, "reopened", readAll(t, s), want, "")
}
