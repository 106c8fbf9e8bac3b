package conformance

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"

	"github.com/overlaybd-go/overlaybd/core"
)

// runner holds what every scenario needs: the model, the random source and
// the record of operations for failure messages.
type runner struct {
	cell   string
	seed   int64
	rng    *rand.Rand
	model  *Model
	align  int64 // requests not aligned to this must be rejected
	gran   int64 // generated requests are aligned to this
	step   int
	op     string
	recent []string
	ends   []int64 // starts and ends of recent operations
	buf    []byte
	rbuf   []byte
	dirty  [][2]int64 // ranges changed since the last sync
	// unalloc, when checked, marks the sectors the model knows hold no
	// data: never written, discarded or write-zeroed. written marks the
	// blocks of the kind's allocation granularity that were written to
	// since they were last wholly discarded: a kind may keep such a block
	// allocated (reported as data) whatever the model says of its sectors.
	unalloc []bool
	written []bool
	grain   int64
}

// statusSector is the granularity of the allocation the model tracks.
const statusSector = 512

// trackAllocation starts checking block status against the model's
// allocation: every sector the model has zero counts as unallocated (a
// fresh device, or lowers whose zero ranges are holes). grain is the
// kind's allocation granularity (a multiple of 512; 0 means 512).
func (r *runner) trackAllocation(grain int64) error {
	if grain == 0 {
		grain = statusSector
	}
	if grain%statusSector != 0 || grain <= 0 {
		return fmt.Errorf("conformance: allocation granularity %d is not a multiple of %d", grain, statusSector)
	}
	r.grain = grain
	r.unalloc = make([]bool, (r.size()+statusSector-1)/statusSector)
	for i := range r.unalloc {
		r.unalloc[i] = r.model.IsZero(int64(i)*statusSector, statusSector)
	}
	r.written = make([]bool, (r.size()+grain-1)/grain)
	return nil
}

// setAlloc records a write (hole false: the sectors and blocks it touches
// are allocated) or a discard or write-zeroes (hole true: its whole
// sectors are unallocated, its whole blocks no longer written to).
func (r *runner) setAlloc(off, n int64, hole bool) {
	if r.unalloc == nil || n <= 0 {
		return
	}
	inside := func(g int64) (int64, int64) { return (off + g - 1) / g, (off + n) / g }
	touched := func(g int64) (int64, int64) { return off / g, (off + n + g - 1) / g }
	set := func(bits []bool, s, e int64, v bool) {
		for i := s; i < e && i < int64(len(bits)); i++ {
			bits[i] = v
		}
	}
	if hole {
		s, e := inside(statusSector)
		set(r.unalloc, s, e, true)
		s, e = inside(r.grain)
		set(r.written, s, e, false)
		return
	}
	s, e := touched(statusSector)
	set(r.unalloc, s, e, false)
	s, e = touched(r.grain)
	set(r.written, s, e, true)
}

// write applies a write of p at off to the model.
func (r *runner) write(p []byte, off int64) {
	r.model.Write(p, off)
	r.setAlloc(off, int64(len(p)), false)
}

// zero applies a discard or a write-zeroes to the model.
func (r *runner) zero(off, n int64) {
	r.model.Zero(off, n)
	r.setAlloc(off, n, true)
}

// markDirty records a change that a crash may lose.
func (r *runner) markDirty(off, n int64) { r.dirty = append(r.dirty, [2]int64{off, n}) }

// synced forgets the changes made durable.
func (r *runner) synced() { r.dirty = r.dirty[:0] }

const recentOps = 8

func newRunner(cell string, seed int64, size, align int64) *runner {
	return &runner{
		cell: cell, seed: seed,
		rng:   rand.New(rand.NewPCG(uint64(seed), 0x6f7665726c617962)),
		model: NewModel(size),
		align: max(align, 1),
		gran:  max(align, 1),
	}
}

// begin starts operation desc.
func (r *runner) begin(format string, args ...any) {
	if r.op != "" {
		r.recent = append(r.recent, fmt.Sprintf("#%d %s", r.step, r.op))
		if len(r.recent) > recentOps {
			r.recent = r.recent[1:]
		}
		r.step++
	}
	r.op = fmt.Sprintf(format, args...)
}

func (r *runner) fail(format string, args ...any) *Failure {
	return &Failure{Cell: r.cell, Seed: r.seed, Step: r.step, Op: r.op,
		Msg: fmt.Sprintf(format, args...), Recent: append([]string(nil), r.recent...)}
}

func (r *runner) size() int64 { return r.model.Size() }

// length draws a request length: mostly small, some medium, a few larger
// than the 4 MiB pieces and 16383-sector records of LSMT.
func (r *runner) length(max int64) int64 {
	var n int64
	switch p := r.rng.IntN(100); {
	case p < 80:
		n = 1 + r.rng.Int64N(16<<10)
	case p < 98:
		n = 1 + r.rng.Int64N(256<<10)
	default:
		n = 1 + r.rng.Int64N(9<<20)
	}
	n = (n + r.gran - 1) / r.gran * r.gran
	return min(n, max/r.gran*r.gran)
}

// span draws an aligned range inside the device. A third of the ranges start
// or end at, or straddle, an interesting boundary: the edge of a recent
// request, a 4 MiB piece boundary, the end of the device.
func (r *runner) span() (off, n int64) {
	n = r.length(r.size())
	if r.rng.IntN(3) == 0 {
		var b int64
		switch k := r.rng.IntN(4); {
		case k < 2 && len(r.ends) > 0:
			b = r.ends[r.rng.IntN(len(r.ends))]
		case k == 2:
			b = r.rng.Int64N(r.size()/(4<<20)+1) * (4 << 20)
		default:
			b = r.size()
		}
		switch r.rng.IntN(3) {
		case 0:
			off = b
		case 1:
			off = b - n
		default:
			off = b - n/2 - r.rng.Int64N(4)*512
		}
	} else {
		off = r.rng.Int64N(r.size() - n + 1)
	}
	off = off / r.gran * r.gran
	off = min(max(off, 0), r.size()-n)
	r.ends = append(r.ends, off, off+n)
	if len(r.ends) > 64 {
		r.ends = r.ends[2:]
	}
	return off, n
}

// data returns n bytes to write: random, or (sometimes) zeros.
func (r *runner) data(n int64) []byte {
	if int64(cap(r.buf)) < n {
		r.buf = make([]byte, n)
	}
	b := r.buf[:n]
	if r.rng.IntN(20) == 0 {
		clear(b)
		return b
	}
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.rng.Uint64())
	}
	for ; i < len(b); i++ {
		b[i] = byte(r.rng.Uint32())
	}
	return b
}

func (r *runner) readBuf(n int64) []byte {
	if int64(cap(r.rbuf)) < n {
		r.rbuf = make([]byte, n)
	}
	return r.rbuf[:n]
}

// checkRead reads [off, off+n) from f and compares it with the model. Reads
// that reach past the end must return the bytes that exist and io.EOF.
func (r *runner) checkRead(f core.File, off, n int64) error {
	p := r.readBuf(n)
	got, err := f.ReadAt(p, off)
	want := r.model.Read(off, n)
	switch {
	case off+n <= r.size():
		if got != int(n) || (err != nil && !(err == io.EOF && off+n == r.size())) {
			return r.fail("ReadAt returned %d, %v; want %d, nil", got, err, n)
		}
	default:
		if got != len(want) || err != io.EOF {
			return r.fail("ReadAt across the end returned %d, %v; want %d, io.EOF", got, err, len(want))
		}
	}
	if i := firstDiff(p[:got], want); i >= 0 {
		return r.fail("read back differs at device offset %d: got %#02x, want %#02x", off+int64(i), at(p[:got], i), at(want, i))
	}
	return nil
}

func at(b []byte, i int) any {
	if i < len(b) {
		return b[i]
	}
	return "nothing"
}

// verifyAll compares the whole device with the model.
func (r *runner) verifyAll(f core.File) error {
	if f.Size() != r.size() {
		return r.fail("Size() = %d, want %d", f.Size(), r.size())
	}
	const chunk = 1 << 20
	for off := int64(0); off < r.size(); off += chunk {
		if err := r.checkRead(f, off, min(chunk, r.size()-off)); err != nil {
			err.(*Failure).Msg = "whole-device check: " + err.(*Failure).Msg
			return err
		}
	}
	return nil
}

// checkStatus checks BlockStatus over [off, off+n): ordered, contiguous
// extents starting at off, inside the range, every range flagged as
// reading zeros does read zeros and, when the allocation is tracked, every
// range the model has unallocated is flagged as reading zeros.
func (r *runner) checkStatus(bs core.BlockStatuser, off, n int64) error {
	ext, err := bs.BlockStatus(off, n)
	if err != nil {
		return r.fail("BlockStatus: %v", err)
	}
	if len(ext) == 0 {
		return r.fail("BlockStatus returned no extent")
	}
	pos := off
	for i, e := range ext {
		if e.Offset != pos || e.Length <= 0 || e.Offset+e.Length > off+n {
			return r.fail("BlockStatus extent %d %+v is not contiguous inside [%d, %d) (expected start %d)", i, e, off, off+n, pos)
		}
		if e.Flags&core.ExtentZero != 0 && !r.model.IsZero(e.Offset, e.Length) {
			return r.fail("BlockStatus says [%d, %d) reads as zeros, the model has data there", e.Offset, e.Offset+e.Length)
		}
		if e.Flags&core.ExtentZero == 0 && r.unalloc != nil {
			for i := e.Offset / statusSector; i*statusSector < e.Offset+e.Length; i++ {
				if r.unalloc[i] && !r.written[i*statusSector/r.grain] {
					return r.fail("BlockStatus says [%d, %d) holds data, the model has sector %d there unallocated "+
						"(never written, or discarded or write-zeroed with its whole %d-byte block): it must be reported as zeros",
						e.Offset, e.Offset+e.Length, i*statusSector, r.grain)
				}
			}
		}
		pos += e.Length
	}
	return nil
}

// expectRejected checks that a request that must fail did fail and left
// [off, off+n) (clipped to the device) unchanged.
func (r *runner) expectRejected(f core.File, err error, off, n int64) error {
	if err == nil {
		return r.fail("succeeded, want an error")
	}
	off = min(off, r.size())
	end := min(off+n, r.size())
	if end > off {
		if e := r.checkRead(f, off, end-off); e != nil {
			e.(*Failure).Msg = "after a rejected request: " + e.(*Failure).Msg
			return e
		}
	}
	return nil
}

func isFailure(err error) bool {
	var f *Failure
	return errors.As(err, &f)
}
