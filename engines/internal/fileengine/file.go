package fileengine

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/overlaybd-go/overlaybd/core"
	"golang.org/x/sys/unix"
)

// maxTransfer bounds one kernel request (io_uring lengths are 32-bit;
// Linux moves at most 2 GiB - 4 KiB per call); the rest of a longer request
// follows as a continuation. It is a multiple of Align.
const maxTransfer = 1 << 30

// stripes is the number of locks that serialise read-modify-write cycles
// of O_DIRECT files on the same 4 KiB block.
const stripes = 64

// File is a local file served by an Engine. It implements core.File and
// core.BatchFile, and offers Fd, Truncate and Name for the operations the
// engines do not cover.
//
// Files opened O_DIRECT accept requests of any offset, length and buffer
// address: unaligned reads go through an aligned bounce buffer, unaligned
// writes read the partial edge blocks, merge and write whole blocks, and a
// write that ends inside a block past the end of the file truncates the
// file back to its true size (as fstat reports it, so growth through
// another descriptor is kept).
type File struct {
	e      *Engine
	f      *os.File
	fd     int
	t      Target
	direct bool
	name   string
	bufs   BufferSource

	// ops is held shared by every operation and exclusively by Close, so
	// that Close waits for the IO in flight.
	ops    sync.RWMutex
	closed bool

	// For O_DIRECT files: the size as this File made it, ext (held
	// exclusively by writes that can change the size through the block
	// rounding, shared by other writes and by reads past size) and the
	// block stripes for read-modify-write.
	size    atomic.Int64
	ext     sync.RWMutex
	stripes [stripes]sync.Mutex
}

type job struct {
	req  *core.IORequest
	op   core.Op
	buf  []byte // what the kernel reads into or writes from
	off  int64  // file offset of buf[0]
	head int    // for bounce reads: offset of req.Buf[0] in buf
	// bounce tells that buf is an aligned copy, not req.Buf.
	bounce bool
	done   int
	err    error
}

// Direct reports whether the file was opened O_DIRECT.
func (f *File) Direct() bool { return f.direct }

// Fd returns the file descriptor, for operations the engine does not cover
// (fallocate, SEEK_DATA/SEEK_HOLE).
func (f *File) Fd() uintptr { return uintptr(f.fd) }

// Name returns the path the file was opened with.
func (f *File) Name() string { return f.name }

// ReadAt implements io.ReaderAt.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	return f.single(core.OpRead, p, off)
}

// WriteAt implements io.WriterAt.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	return f.single(core.OpWrite, p, off)
}

// single performs one request as a batch of one, with the request in a
// pooled scratch rather than a new allocation.
func (f *File) single(op core.Op, p []byte, off int64) (int, error) {
	sc := scratches.Get().(*scratch)
	r := sc.one[:]
	r[0] = core.IORequest{Op: op, Buf: p, Off: off}
	err := f.Batch(r)
	n, rerr := r[0].N, r[0].Err
	r[0] = core.IORequest{}
	scratches.Put(sc)
	if err != nil {
		return 0, err
	}
	return n, rerr
}

// scratch holds the per-call slices of the common small calls, pooled so
// that a request costs no allocation on the way to the kernel.
type scratch struct {
	one [1]core.IORequest
	kr  []core.IORequest // the kernel requests of transfer
}

var scratches = sync.Pool{New: func() any { return new(scratch) }}

// smallBatch is the size up to which the per-call job lists live on the
// stack.
const smallBatch = 8

// Batch implements core.BatchFile: the requests are submitted together and
// may complete in any order (overlapping requests of one batch have
// unspecified results, as on a block device). A read that reaches the end
// of the file has Err io.EOF after the bytes that exist.
func (f *File) Batch(reqs []core.IORequest) error {
	f.ops.RLock()
	defer f.ops.RUnlock()
	if f.closed {
		return fmt.Errorf("%s: %s: %w", f.e.name, f.name, core.ErrClosed)
	}
	var err error
	if f.direct {
		err = f.batchDirect(reqs)
	} else {
		err = f.batchBuffered(reqs)
	}
	if err != nil {
		return fmt.Errorf("%s: %s: %w", f.e.name, f.name, err)
	}
	return nil
}

// check resets r and reports whether it needs IO.
func (f *File) check(r *core.IORequest) bool {
	r.N, r.Err = 0, nil
	switch {
	case r.Op != core.OpRead && r.Op != core.OpWrite:
		r.Err = fmt.Errorf("%s: op %d on %s: %w", f.e.name, r.Op, f.name, core.ErrUnsupported)
	case r.Off < 0:
		r.Err = fmt.Errorf("%s: negative offset %d on %s: %w", f.e.name, r.Off, f.name, core.ErrOutOfRange)
	case len(r.Buf) == 0:
	default:
		return true
	}
	return false
}

func (f *File) batchBuffered(reqs []core.IORequest) error {
	var jb [smallBatch]job
	jobs := jb[:0]
	if len(reqs) > smallBatch {
		jobs = make([]job, 0, len(reqs))
	}
	for i := range reqs {
		if r := &reqs[i]; f.check(r) {
			jobs = append(jobs, job{req: r, op: r.Op, buf: r.Buf, off: r.Off})
		}
	}
	if err := f.transfer(jobs); err != nil {
		return err
	}
	for i := range jobs {
		f.finish(&jobs[i], jobs[i].done)
	}
	return nil
}

// finish sets the result of j's request, n bytes of which were moved.
func (f *File) finish(j *job, n int) {
	r := j.req
	r.N = n
	switch {
	case n == len(r.Buf):
	case j.err != nil:
		verb := "read"
		if r.Op == core.OpWrite {
			verb = "write"
		}
		r.Err = fmt.Errorf("%s: %s %s at %d: %w", f.e.name, verb, f.name, r.Off+int64(n), j.err)
	case r.Op == core.OpRead:
		r.Err = io.EOF
	default:
		r.Err = io.ErrShortWrite
	}
	if r.Op == core.OpRead {
		f.e.c.read(n)
	} else {
		f.e.c.write(n)
	}
}

// transfer runs jobs to completion: short transfers are continued (for
// O_DIRECT files only while the rest stays aligned; an O_DIRECT read that
// ends inside a block ended at the end of the file), a transfer of nothing
// ends a job (end of file for reads).
func (f *File) transfer(jobs []job) error {
	var ab [smallBatch]int
	active := ab[:0]
	if len(jobs) > smallBatch {
		active = make([]int, 0, len(jobs))
	}
	for i := range jobs {
		active = append(active, i)
	}
	// The kernel requests go through the Target interface, so they live
	// on the heap: in a pooled scratch.
	sc := scratches.Get().(*scratch)
	defer func() {
		if cap(sc.kr) > 1024 {
			sc.kr = nil // not worth keeping
		} else {
			clear(sc.kr[:cap(sc.kr)]) // drop the references to buffers
		}
		scratches.Put(sc)
	}()
	if cap(sc.kr) < len(jobs) {
		sc.kr = make([]core.IORequest, 0, len(jobs))
	}
	kr := sc.kr[:0]
	for again := 0; len(active) > 0; again++ {
		kr = kr[:0]
		for _, i := range active {
			j := &jobs[i]
			end := min(len(j.buf), j.done+maxTransfer)
			kr = append(kr, core.IORequest{Op: j.op, Buf: j.buf[j.done:end], Off: j.off + int64(j.done)})
		}
		if err := f.t.Submit(kr); err != nil {
			return err
		}
		next := active[:0]
		for k, i := range active {
			j, r := &jobs[i], &kr[k]
			switch {
			case r.Err != nil:
				// EINTR and EAGAIN are transient; ECANCELED is what io_uring
				// returns for requests whose submitting thread exited.
				if (errors.Is(r.Err, unix.EINTR) || errors.Is(r.Err, unix.EAGAIN) || errors.Is(r.Err, unix.ECANCELED)) && again < 1000 {
					next = append(next, i)
					continue
				}
				j.err = r.Err
			case r.N <= 0:
			default:
				j.done += r.N
				if j.done < len(j.buf) && (!f.direct || j.done%Align == 0) {
					next = append(next, i)
				}
			}
		}
		if len(next) > 0 && again > 0 {
			runtime.Gosched()
		}
		active = next
	}
	return nil
}

func roundDown(x int64) int64 { return x &^ (Align - 1) }
func roundUp(x int64) int64   { return (x + Align - 1) &^ (Align - 1) }

func (f *File) batchDirect(reqs []core.IORequest) error {
	var jb [smallBatch]job
	jobs := jb[:0]
	if len(reqs) > smallBatch {
		jobs = make([]job, 0, len(reqs))
	}
	var rmw []*core.IORequest
	shared := false
	size := f.size.Load()
	for i := range reqs {
		r := &reqs[i]
		if !f.check(r) {
			continue
		}
		end := r.Off + int64(len(r.Buf))
		if IsAligned(r.Buf, r.Off) {
			jobs = append(jobs, job{req: r, op: r.Op, buf: r.Buf, off: r.Off})
			shared = shared || r.Op == core.OpWrite || end > size
			continue
		}
		if r.Op == core.OpWrite {
			rmw = append(rmw, r)
			continue
		}
		aoff, aend := roundDown(r.Off), roundUp(end)
		jobs = append(jobs, job{req: r, op: core.OpRead, buf: f.buffer(int(aend - aoff)), off: aoff, head: int(r.Off - aoff), bounce: true})
		shared = shared || aend > size
	}
	if len(jobs) > 0 {
		if shared {
			f.ext.RLock()
		}
		err := f.transfer(jobs)
		if err == nil {
			for i := range jobs {
				j := &jobs[i]
				if j.req.Op == core.OpWrite && j.done > 0 {
					f.growTo(j.off + int64(j.done))
				}
			}
		}
		if shared {
			f.ext.RUnlock()
		}
		for i := range jobs {
			j := &jobs[i]
			bounce := j.bounce
			if err == nil {
				n := j.done
				if bounce {
					n = min(max(j.done-j.head, 0), len(j.req.Buf))
					copy(j.req.Buf, j.buf[j.head:j.head+n])
				}
				f.finish(j, n)
			}
			if bounce {
				f.release(j.buf)
			}
		}
		if err != nil {
			return err
		}
	}
	for _, r := range rmw {
		n, err := f.writeUnaligned(r.Buf, r.Off)
		if errors.Is(err, core.ErrClosed) {
			return err
		}
		r.N, r.Err = n, err
		f.e.c.write(n)
	}
	return nil
}

// buffer returns an aligned bounce buffer of n bytes.
func (f *File) buffer(n int) []byte {
	if f.bufs != nil {
		if b, ok := f.bufs.Buffer(n); ok {
			return b
		}
	}
	return AlignedBuffer(n)
}

// release returns a buffer from buffer.
func (f *File) release(b []byte) {
	if f.bufs != nil && f.bufs.Owns(b) {
		f.bufs.Release(b)
		return
	}
	FreeAligned(b)
}

func (f *File) growTo(end int64) {
	for {
		s := f.size.Load()
		if end <= s || f.size.CompareAndSwap(s, end) {
			return
		}
	}
}

// writeUnaligned writes p at off on an O_DIRECT file by read-modify-write
// of whole blocks.
func (f *File) writeUnaligned(p []byte, off int64) (int, error) {
	end := off + int64(len(p))
	aoff, aend := roundDown(off), roundUp(end)
	// A write whose last block reaches past the end of the file extends
	// the file to a block boundary and must truncate it back: that, and
	// only that, runs alone. The size that decides is the file's own
	// (fstat), not only what this File did.
	resizing := aend > f.size.Load()
	var oldSize int64
	for {
		if resizing {
			f.ext.Lock()
		} else {
			f.ext.RLock()
		}
		var st unix.Stat_t
		if err := unix.Fstat(f.fd, &st); err != nil {
			f.unlockExt(resizing)
			return 0, fmt.Errorf("%s: stat %s: %w", f.e.name, f.name, err)
		}
		oldSize = max(st.Size, f.size.Load())
		if resizing || aend <= oldSize {
			break
		}
		f.ext.RUnlock()
		resizing = true
	}
	defer f.unlockExt(resizing)
	first, last := (aoff/Align)%stripes, (aend/Align-1)%stripes
	if first > last {
		first, last = last, first
	}
	f.stripes[first].Lock()
	defer f.stripes[first].Unlock()
	if last != first {
		f.stripes[last].Lock()
		defer f.stripes[last].Unlock()
	}

	b := f.buffer(int(aend - aoff))
	defer f.release(b)
	edges := make([]job, 0, 2)
	if off != aoff {
		edges = append(edges, job{op: core.OpRead, buf: b[:Align], off: aoff})
	}
	if end != aend && (aend-Align != aoff || off == aoff) {
		edges = append(edges, job{op: core.OpRead, buf: b[len(b)-Align:], off: aend - Align})
	}
	if err := f.transfer(edges); err != nil {
		return 0, err
	}
	for i := range edges {
		j := &edges[i]
		if j.err != nil {
			return 0, fmt.Errorf("%s: read-modify-write %s at %d: %w", f.e.name, f.name, j.off, j.err)
		}
		clear(j.buf[j.done:])
	}
	copy(b[off-aoff:], p)
	w := []job{{op: core.OpWrite, buf: b, off: aoff}}
	if err := f.transfer(w); err != nil {
		return 0, err
	}
	n := min(max(w[0].done-int(off-aoff), 0), len(p))
	if w[0].err != nil {
		return n, fmt.Errorf("%s: write %s at %d: %w", f.e.name, f.name, aoff, w[0].err)
	}
	if w[0].done < len(b) {
		return n, io.ErrShortWrite
	}
	if resizing {
		newSize := max(oldSize, end)
		if aend > newSize {
			if err := unix.Ftruncate(f.fd, newSize); err != nil {
				return n, fmt.Errorf("%s: truncate %s to %d after an unaligned write: %w", f.e.name, f.name, newSize, err)
			}
		}
		f.size.Store(newSize)
	}
	return n, nil
}

func (f *File) unlockExt(exclusive bool) {
	if exclusive {
		f.ext.Unlock()
	} else {
		f.ext.RUnlock()
	}
}

// Size returns the current size of the file (0 if it cannot be read).
func (f *File) Size() int64 {
	if f.direct {
		f.ext.RLock()
		defer f.ext.RUnlock()
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return 0
	}
	return st.Size
}

// Truncate changes the size of the file.
func (f *File) Truncate(size int64) error {
	f.ops.RLock()
	defer f.ops.RUnlock()
	if f.closed {
		return fmt.Errorf("%s: truncate %s: %w", f.e.name, f.name, core.ErrClosed)
	}
	if f.direct {
		f.ext.Lock()
		defer f.ext.Unlock()
	}
	if err := unix.Ftruncate(f.fd, size); err != nil {
		return fmt.Errorf("%s: truncate %s to %d: %w", f.e.name, f.name, size, err)
	}
	f.size.Store(size)
	return nil
}

// Sync implements core.File: completed writes become durable (fdatasync).
func (f *File) Sync() error {
	f.ops.RLock()
	defer f.ops.RUnlock()
	if f.closed {
		return fmt.Errorf("%s: sync %s: %w", f.e.name, f.name, core.ErrClosed)
	}
	err := f.t.Sync()
	f.e.c.Synced()
	if err != nil {
		return fmt.Errorf("%s: fdatasync %s: %w", f.e.name, f.name, err)
	}
	return nil
}

// Close implements core.File. It waits for the operations in flight; later
// operations fail with core.ErrClosed.
func (f *File) Close() error {
	f.ops.Lock()
	defer f.ops.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	errD := f.t.Detach()
	errC := f.f.Close()
	if err := errors.Join(errD, errC); err != nil {
		return fmt.Errorf("%s: close %s: %w", f.e.name, f.name, err)
	}
	return nil
}
