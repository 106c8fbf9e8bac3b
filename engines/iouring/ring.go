package iouring

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/engines/internal/fileengine"
	"golang.org/x/sys/unix"
)

// Kernel ABI (include/uapi/linux/io_uring.h).
const (
	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000

	opFsync     = 3
	opReadFixed = 4
	opWriteFixd = 5
	opRead      = 22
	opWrite     = 23

	sqeFixedFile  = 1 << 0
	fsyncDatasync = 1 << 0

	setupClamp = 1 << 4

	registerBuffers     = 0
	unregisterBuffers   = 1
	registerFiles       = 2
	unregisterFiles     = 3
	registerEventfd     = 4
	unregisterEventfd   = 5
	registerFilesUpdate = 6
	registerProbe       = 8

	probeOpSupported = 1 << 0

	featSingleMmap   = 1 << 0
	featNoDrop       = 1 << 1
	featSubmitStable = 1 << 2
	featExtArg       = 1 << 8

	enterGetEvents = 1 << 0
	enterExtArg    = 1 << 3

	// kernelWaitSlice bounds one wait of a serving submitter in
	// io_uring_enter.
	kernelWaitSlice = 200 * time.Microsecond
	// issuerWaitSlice bounds one wait of the issuer in io_uring_enter:
	// requests queued meanwhile wait at most that long for submission.
	issuerWaitSlice = 50 * time.Microsecond
	// reapPerTurn is how many completions the issuer hands back before it
	// submits again. One, as fio does: the woken submitter's next request
	// goes to the kernel right away. Handing back the whole completion
	// queue made the successors of ~20 completions wait for each other,
	// and the queue swung between 12 and 32 requests (docs/engines.md).
	reapPerTurn = 1
	// kernelWaitDepth is the most requests in flight at which a submitter
	// waits in the kernel; deeper queues are served by the reaper, which
	// measured as fast there.
	kernelWaitDepth = 4
)

type sqringOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqringOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqringOffsets
	cqOff                                                                  cqringOffsets
}

type sqe struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	opFlags     uint32
	userData    uint64
	bufIndex    uint16
	personality uint16
	fileIndex   int32
	addr3       uint64
	pad         uint64
}

type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

type getEventsArg struct {
	sigmask   uint64
	sigmaskSz uint32
	minWait   uint32
	ts        uint64
}

type probeOp struct {
	op    uint8
	resv  uint8
	flags uint16
	resv2 uint32
}

type probe struct {
	lastOp uint8
	opsLen uint8
	resv   uint16
	resv2  [3]uint32
	ops    [256]probeOp
}

type filesUpdate struct {
	offset uint32
	resv   uint32
	fds    uint64
}

// Features describes what the kernel's io_uring offers, as probed at
// engine creation.
type Features struct {
	// Flags are the IORING_FEAT_* bits io_uring_setup reported.
	Flags uint32
	// Entries is the size of the submission queue the kernel granted.
	Entries int
	// FixedBuffers and FixedFiles tell whether registered buffers and a
	// registered file table are in use.
	FixedBuffers, FixedFiles bool
}

type ring struct {
	c        *fileengine.Counters
	fd       int
	p        params
	sqMem    []byte
	cqMem    []byte // may alias sqMem (IORING_FEAT_SINGLE_MMAP)
	sqeMem   []byte
	sqes     []sqe
	cqes     []cqe
	sqTail   *uint32
	sqMask   uint32
	cqHead   *uint32
	cqTail   *uint32
	cqMask   uint32
	entries  int
	features Features

	fillMu      sync.Mutex // serialises writers of the submission queue
	tail        uint32     // our copy of the SQ tail, under fillMu
	unsubmitted atomic.Int64

	// owner is the right to enter the kernel and to read the completion
	// queue: the issuer holds it while it runs; while the issuer is parked,
	// a submitter at low depth may take it and serve itself (see submit).
	owner    sync.Mutex
	inKernel int           // submitted and not yet reaped; under owner
	waitTS   unix.Timespec // the owner's wait timeout; fixed address
	waitArg  getEventsArg  // points at waitTS
	parked   atomic.Bool   // the issuer sleeps until kicked
	kick     chan struct{} // wakes the parked issuer (capacity 1)
	stop     chan struct{} // closed by Close: the issuer returns

	slots *fileengine.Slots // the requests in flight, bounded by the SQ size

	filesMu   sync.Mutex
	freeFiles []int32 // free indexes of the registered file table

	bufs *arena

	mu     sync.RWMutex // shared by submissions, exclusive in Close
	closed bool
	done   chan struct{} // closed when the issuer has returned
}

func sysRegister(fd int, op uint32, arg unsafe.Pointer, nr uint32) error {
	_, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(fd), uintptr(op), uintptr(arg), uintptr(nr), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func newRing(o Options, c *fileengine.Counters) (*ring, error) {
	r := &ring{c: c, fd: -1, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			r.release()
		}
	}()
	var err error
	r.p.flags = setupClamp // too many entries get the kernel's maximum
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(o.Entries), uintptr(unsafe.Pointer(&r.p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring: io_uring_setup(%d): %w", o.Entries, errno)
	}
	r.fd = int(fd)
	p := &r.p
	r.entries = int(p.sqEntries)
	r.features = Features{Flags: p.features, Entries: r.entries}
	if p.features&featNoDrop == 0 || p.features&featSubmitStable == 0 {
		return nil, fmt.Errorf("io_uring: kernel too old (features %#x lack NODROP/SUBMIT_STABLE): %w", p.features, core.ErrUnsupported)
	}
	if err := r.probe(); err != nil {
		return nil, err
	}
	sqSize := int(p.sqOff.array + p.sqEntries*4)
	cqSize := int(p.cqOff.cqes + p.cqEntries*uint32(unsafe.Sizeof(cqe{})))
	if p.features&featSingleMmap != 0 {
		sqSize = max(sqSize, cqSize)
	}
	prot, flags := unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE
	if r.sqMem, err = unix.Mmap(r.fd, offSQRing, sqSize, prot, flags); err != nil {
		return nil, fmt.Errorf("io_uring: mmap SQ ring: %w", err)
	}
	if p.features&featSingleMmap != 0 {
		r.cqMem = r.sqMem
	} else if r.cqMem, err = unix.Mmap(r.fd, offCQRing, cqSize, prot, flags); err != nil {
		return nil, fmt.Errorf("io_uring: mmap CQ ring: %w", err)
	}
	if r.sqeMem, err = unix.Mmap(r.fd, offSQEs, int(p.sqEntries)*int(unsafe.Sizeof(sqe{})), prot, flags); err != nil {
		return nil, fmt.Errorf("io_uring: mmap SQEs: %w", err)
	}
	r.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&r.sqeMem[0])), p.sqEntries)
	r.cqes = unsafe.Slice((*cqe)(unsafe.Pointer(&r.cqMem[p.cqOff.cqes])), p.cqEntries)
	r.sqTail = (*uint32)(unsafe.Pointer(&r.sqMem[p.sqOff.tail]))
	r.sqMask = *(*uint32)(unsafe.Pointer(&r.sqMem[p.sqOff.ringMask]))
	r.cqHead = (*uint32)(unsafe.Pointer(&r.cqMem[p.cqOff.head]))
	r.cqTail = (*uint32)(unsafe.Pointer(&r.cqMem[p.cqOff.tail]))
	r.cqMask = *(*uint32)(unsafe.Pointer(&r.cqMem[p.cqOff.ringMask]))
	r.tail = atomic.LoadUint32(r.sqTail)
	// Slot i of the ring always holds SQE i.
	array := unsafe.Slice((*uint32)(unsafe.Pointer(&r.sqMem[p.sqOff.array])), p.sqEntries)
	for i := range array {
		array[i] = uint32(i)
	}

	if o.FixedFiles > 0 {
		table := make([]int32, o.FixedFiles)
		for i := range table {
			table[i] = -1
		}
		if err := sysRegister(r.fd, registerFiles, unsafe.Pointer(&table[0]), uint32(len(table))); err == nil {
			r.features.FixedFiles = true
			for i := len(table) - 1; i >= 0; i-- {
				r.freeFiles = append(r.freeFiles, int32(i))
			}
		}
	}
	if o.FixedBuffers > 0 {
		a, err := newArena(r.fd, o.FixedBuffers, o.FixedBufferSize)
		if err != nil {
			return nil, err
		}
		r.bufs = a
		r.features.FixedBuffers = true
	}

	r.slots = fileengine.NewSlots(r.entries, c)
	r.waitArg = getEventsArg{ts: uint64(uintptr(unsafe.Pointer(&r.waitTS)))}
	ok = true
	go r.issue()
	return r, nil
}

// probe checks that the kernel offers the operations the engine uses.
func (r *ring) probe() error {
	var pr probe
	if err := sysRegister(r.fd, registerProbe, unsafe.Pointer(&pr), uint32(len(pr.ops))); err != nil {
		return fmt.Errorf("io_uring: probe: %w", err)
	}
	for _, op := range []uint8{opRead, opWrite, opFsync, opReadFixed, opWriteFixd} {
		if op > pr.lastOp || pr.ops[op].flags&probeOpSupported == 0 {
			return fmt.Errorf("io_uring: kernel lacks opcode %d: %w", op, core.ErrUnsupported)
		}
	}
	return nil
}

// release frees what newRing acquired (the issuer is not running).
func (r *ring) release() {
	if r.bufs != nil {
		r.bufs.unmap()
	}
	if r.sqeMem != nil {
		unix.Munmap(r.sqeMem)
	}
	if r.cqMem != nil && &r.cqMem[0] != &r.sqMem[0] {
		unix.Munmap(r.cqMem)
	}
	if r.sqMem != nil {
		unix.Munmap(r.sqMem)
	}
	if r.fd >= 0 {
		unix.Close(r.fd)
	}
}

// Close waits for the submissions in flight, stops the issuer and tears
// the ring down.
func (r *ring) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	close(r.stop) // nothing is in flight: the issuer is parked or parking
	<-r.done
	r.release()
	return nil
}

// issue is the engine's issuer: while requests are queued or in the
// kernel it submits everything queued and waits for completions in one
// io_uring_enter, then completes what the completion queue holds, waking
// the submitters; when nothing is left it parks until a submitter kicks
// it. Submitters only write SQEs, so at depth the kernel sees few, large
// submissions from one thread, as with fio's single submit-and-reap loop.
func (r *ring) issue() {
	defer close(r.done)
	r.owner.Lock()
	for {
		if r.unsubmitted.Load() == 0 && r.inKernel == 0 {
			r.owner.Unlock()
			r.parked.Store(true)
			if r.unsubmitted.Load() == 0 {
				select {
				case <-r.kick:
				case <-r.stop:
					return
				}
			}
			r.parked.Store(false)
			r.owner.Lock()
			continue
		}
		if r.enter(issuerWaitSlice, reapPerTurn) > 0 && (r.inKernel > 0 || r.unsubmitted.Load() > 0) {
			// Let the submitter just woken run and queue its next
			// request, so that the next enter carries it at once. When
			// nothing is left the issuer parks instead, so that a
			// submitter at low depth finds it parked and serves itself.
			runtime.Gosched()
		}
	}
}

// enter submits the queued SQEs and, when anything is in the kernel and
// the completion queue is empty, waits up to slice for a completion; then
// it completes at most reap requests from the completion queue and returns
// how many. With nothing to submit and completions at hand it makes no
// system call. The caller holds owner.
func (r *ring) enter(slice time.Duration, reap int) int {
	n := r.unsubmitted.Load()
	if n > 0 || r.cqEmpty() {
		var minComplete, flags uintptr
		var arg, argSize uintptr
		if r.inKernel+int(n) > 0 {
			minComplete, flags = 1, enterGetEvents
			if r.features.Flags&featExtArg != 0 {
				// Without EXT_ARG the wait has no timeout: requests queued
				// meanwhile are submitted after the next completion.
				r.waitTS = unix.NsecToTimespec(int64(slice))
				flags |= enterExtArg
				arg, argSize = uintptr(unsafe.Pointer(&r.waitArg)), unsafe.Sizeof(r.waitArg)
			}
		}
		got, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n), minComplete, flags, arg, argSize)
		switch {
		case errno == 0 && got > 0:
			r.unsubmitted.Add(-int64(got))
			r.inKernel += int(got)
			r.c.Submitted(int(got))
		case errno == 0, errno == unix.ETIME, errno == unix.EINTR:
			// Nothing submitted, the slice ended or a signal came.
		default:
			// EAGAIN or EBUSY: the kernel is short of memory or of
			// completion room; nothing else is expected with valid
			// entries. Reap, and retry after a pause (no spinning).
			r.inKernel -= r.drain(r.entries)
			time.Sleep(50 * time.Microsecond)
		}
	}
	done := r.drain(reap)
	r.inKernel -= done
	return done
}

// cqEmpty reports whether the completion queue holds no completion.
func (r *ring) cqEmpty() bool {
	return atomic.LoadUint32(r.cqHead) == atomic.LoadUint32(r.cqTail)
}

// drain completes at most limit requests from the completion queue and
// returns how many. The caller holds owner.
func (r *ring) drain(limit int) int {
	head := atomic.LoadUint32(r.cqHead)
	tail := atomic.LoadUint32(r.cqTail)
	n := 0
	for ; head != tail && n < limit; head++ {
		c := r.cqes[head&r.cqMask]
		atomic.StoreUint32(r.cqHead, head+1)
		r.slots.Complete(c.userData, int64(c.res))
		n++
	}
	return n
}

// wake kicks the issuer if it is parked.
func (r *ring) wake() {
	if r.parked.Load() {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// serve submits and waits in place of the parked issuer until bt has
// completed, completing every request that arrives (also other
// goroutines'), the way a single-threaded program does: at low depth the
// trip to the issuer and back is most of the latency. The caller holds
// owner, and hands what is left to the issuer afterwards. It stops early
// when the queue has grown past kernelWaitDepth: the issuer, which waits
// in shorter slices, serves deeper queues.
func (r *ring) serve(bt *fileengine.Waiter) {
	for bt.Pending() && r.c.InFlight() <= kernelWaitDepth {
		r.enter(kernelWaitSlice, r.entries)
	}
}

// submit queues one SQE per request (fill sets the operation) and waits
// for all of them.
func (r *ring) submit(reqs []core.IORequest, fill func(i int, s *sqe)) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return fmt.Errorf("io_uring: %w", core.ErrClosed)
	}
	n := len(reqs)
	bt := fileengine.NewWaiter(n)
	var small [32]uint64
	tokens := small[:]
	if n > len(small) {
		tokens = make([]uint64, n)
	}
	for i := 0; i < n; {
		// At least one free slot, waiting if the queue is full, and as
		// many more as are free without waiting.
		k := r.slots.Take(bt, reqs[i:], tokens[i:])
		r.fillMu.Lock()
		for j := i; j < i+k; j++ {
			e := &r.sqes[r.tail&r.sqMask]
			*e = sqe{userData: tokens[j]}
			fill(j, e)
			r.tail++
		}
		atomic.StoreUint32(r.sqTail, r.tail)
		r.unsubmitted.Add(int64(k))
		r.fillMu.Unlock()
		i += k
		if i < n || !r.parked.Load() || r.c.InFlight() > kernelWaitDepth || !r.owner.TryLock() {
			r.wake()
			continue
		}
		// The issuer is parked and the queue is short: serve ourselves.
		r.serve(bt)
		left := r.unsubmitted.Load() > 0 || r.inKernel > 0
		r.owner.Unlock()
		if left {
			select {
			case r.kick <- struct{}{}:
			default:
			}
		}
	}
	bt.Wait()
	return nil
}

// Attach registers fd in the file table when there is room.
func (r *ring) Attach(fd int, name string) (fileengine.Target, error) {
	t := &target{r: r, fd: int32(fd), index: -1}
	if !r.features.FixedFiles {
		return t, nil
	}
	r.filesMu.Lock()
	defer r.filesMu.Unlock()
	if len(r.freeFiles) == 0 {
		return t, nil
	}
	idx := r.freeFiles[len(r.freeFiles)-1]
	if err := r.updateFile(idx, int32(fd)); err != nil {
		return t, nil
	}
	r.freeFiles = r.freeFiles[:len(r.freeFiles)-1]
	t.index = idx
	return t, nil
}

func (r *ring) updateFile(idx, fd int32) error {
	fds := []int32{fd}
	u := filesUpdate{offset: uint32(idx), fds: uint64(uintptr(unsafe.Pointer(&fds[0])))}
	err := sysRegister(r.fd, registerFilesUpdate, unsafe.Pointer(&u), 1)
	_ = fds[0]
	return err
}

type target struct {
	r     *ring
	fd    int32
	index int32 // in the registered file table, or -1
}

func (t *target) setFile(s *sqe) {
	if t.index >= 0 {
		s.fd = t.index
		s.flags |= sqeFixedFile
	} else {
		s.fd = t.fd
	}
}

// Submit implements fileengine.Target.
func (t *target) Submit(reqs []core.IORequest) error {
	if len(reqs) == 0 {
		return nil
	}
	var pin pinner
	defer pin.unpin()
	return t.r.submit(reqs, func(i int, s *sqe) {
		req := &reqs[i]
		t.setFile(s)
		s.off = uint64(req.Off)
		s.len = uint32(len(req.Buf))
		if len(req.Buf) > 0 {
			s.addr = pin.pin(req.Buf)
		}
		if idx, ok := t.r.bufs.index(req.Buf); ok {
			s.bufIndex = idx
			s.opcode = opReadFixed
			if req.Op == core.OpWrite {
				s.opcode = opWriteFixd
			}
		} else {
			s.opcode = opRead
			if req.Op == core.OpWrite {
				s.opcode = opWrite
			}
		}
	})
}

// Sync implements fileengine.Target.
func (t *target) Sync() error {
	r := []core.IORequest{{}}
	err := t.r.submit(r, func(i int, s *sqe) {
		t.setFile(s)
		s.opcode = opFsync
		s.opFlags = fsyncDatasync
	})
	if err != nil {
		return err
	}
	return r[0].Err
}

// Detach implements fileengine.Target.
func (t *target) Detach() error {
	if t.index < 0 {
		return nil
	}
	r := t.r
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return nil
	}
	r.filesMu.Lock()
	defer r.filesMu.Unlock()
	err := r.updateFile(t.index, -1)
	r.freeFiles = append(r.freeFiles, t.index)
	t.index = -1
	if err != nil {
		return fmt.Errorf("io_uring: unregister file: %w", err)
	}
	return nil
}

// Buffer implements fileengine.BufferSource with the registered buffers.
func (t *target) Buffer(n int) ([]byte, bool) { return t.r.bufs.get(n) }

// Release implements fileengine.BufferSource.
func (t *target) Release(b []byte) { t.r.bufs.put(b) }

// Owns implements fileengine.BufferSource.
func (t *target) Owns(b []byte) bool {
	_, ok := t.r.bufs.index(b)
	return ok
}
