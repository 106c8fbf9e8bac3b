package iouring

import (
	"fmt"
	"os"
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

	// kernelWaitSlice bounds one wait in io_uring_enter, so that a waiter
	// whose completion another goroutine reaped cannot sleep long.
	kernelWaitSlice = 200 * time.Microsecond
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
	efd      *os.File
	efdN     int
	features Features

	cqMu sync.Mutex // serialises readers of the completion queue
	// kwait is set while a submitter waits for completions inside
	// io_uring_enter; the reaper then leaves the completion queue to it.
	kwait       atomic.Bool
	waitTS      unix.Timespec // the kwait holder's timeout; fixed address
	waitArg     getEventsArg  // points at waitTS
	fillMu      sync.Mutex    // serialises writers of the submission queue
	tail        uint32        // our copy of the SQ tail, under fillMu
	unsubmitted atomic.Int64
	submitting  atomic.Bool

	slots *fileengine.Slots // the requests in flight, bounded by the SQ size

	filesMu   sync.Mutex
	freeFiles []int32 // free indexes of the registered file table

	bufs *arena

	mu     sync.RWMutex // shared by submissions, exclusive in Close
	closed bool
	reaped chan struct{}
}

func sysRegister(fd int, op uint32, arg unsafe.Pointer, nr uint32) error {
	_, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(fd), uintptr(op), uintptr(arg), uintptr(nr), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func newRing(o Options, c *fileengine.Counters) (*ring, error) {
	r := &ring{c: c, fd: -1, efdN: -1, reaped: make(chan struct{})}
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

	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("io_uring: eventfd: %w", err)
	}
	r.efdN = efd
	e32 := int32(efd)
	if err := sysRegister(r.fd, registerEventfd, unsafe.Pointer(&e32), 1); err != nil {
		return nil, fmt.Errorf("io_uring: register eventfd: %w", err)
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
	r.efd = os.NewFile(uintptr(efd), "io_uring-eventfd")
	ok = true
	go r.reap()
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

// release frees what newRing acquired (the reaper is not running).
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
	if r.efd != nil {
		r.efd.Close()
	} else if r.efdN >= 0 {
		unix.Close(r.efdN)
	}
}

// Close waits for the submissions in flight, stops the reaper and tears
// the ring down.
func (r *ring) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	err := r.efd.Close() // wakes the reaper
	<-r.reaped
	r.efd = nil
	r.efdN = -1
	r.release()
	return err
}

func (r *ring) reap() {
	defer close(r.reaped)
	var counter [8]byte
	for {
		if _, err := r.efd.Read(counter[:]); err != nil {
			return // Close closed the eventfd; nothing is in flight then.
		}
		if r.kwait.Load() {
			// A submitter is waiting in the kernel and drains the queue
			// once more after it stops waiting.
			continue
		}
		r.cqMu.Lock()
		for r.drain() > 0 {
		}
		r.cqMu.Unlock()
	}
}

// drain completes every request in the completion queue. The caller holds
// cqMu.
func (r *ring) drain() int {
	head := atomic.LoadUint32(r.cqHead)
	tail := atomic.LoadUint32(r.cqTail)
	n := 0
	for ; head != tail; head++ {
		c := r.cqes[head&r.cqMask]
		atomic.StoreUint32(r.cqHead, head+1)
		r.slots.Complete(c.userData, int64(c.res))
		n++
	}
	return n
}

// waitInKernel waits for bt's completions inside io_uring_enter, the way a
// single-threaded program does, reaping every completion that arrives
// (also other goroutines'), instead of going through the eventfd, the
// runtime's poller and the reaper: at low depth that round trip is most of
// the latency. Only one goroutine at a time waits so (kwait); the others
// and the reaper stand by. Waits are bounded, because the reaper may have
// taken the completion just before kwait was set.
func (r *ring) waitInKernel(bt *fileengine.Waiter) {
	// The arguments live in the ring (a heap object that does not move),
	// not on this goroutine's stack, which may move: the kernel follows the
	// pointer to the timeout.
	r.waitTS = unix.NsecToTimespec(int64(kernelWaitSlice))
	r.waitArg = getEventsArg{ts: uint64(uintptr(unsafe.Pointer(&r.waitTS)))}
	for bt.Pending() {
		unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), 0, 1, enterGetEvents|enterExtArg,
			uintptr(unsafe.Pointer(&r.waitArg)), unsafe.Sizeof(r.waitArg))
		r.cqMu.Lock()
		r.drain()
		r.cqMu.Unlock()
	}
	r.kwait.Store(false)
	// Completions that arrived while kwait was set may have been left by
	// the reaper: take them now (later ones wake the reaper).
	r.cqMu.Lock()
	r.drain()
	r.cqMu.Unlock()
}

// flush submits the queued entries. Whoever finds the submitter role free
// takes it and submits every entry queued so far, also other goroutines';
// the others return at once, so concurrent submitters share enters.
func (r *ring) flush() {
	for r.unsubmitted.Load() > 0 {
		if !r.submitting.CompareAndSwap(false, true) {
			return
		}
		backoff := 10 * time.Microsecond
		for {
			n := r.unsubmitted.Load()
			if n == 0 {
				break
			}
			got, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n), 0, 0, 0, 0)
			if errno != 0 {
				// EINTR, EAGAIN and EBUSY are transient; nothing else is
				// expected with valid entries. Retry without spinning.
				time.Sleep(backoff)
				backoff = min(2*backoff, 10*time.Millisecond)
				continue
			}
			if got > 0 {
				r.unsubmitted.Add(-int64(got))
				r.c.Submitted(int(got))
			}
		}
		r.submitting.Store(false)
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
		r.flush()
		i += k
	}
	// Requests the kernel completed during the enter (page-cache hits)
	// are already in the completion queue: reap them here rather than
	// wait for the reaper to be scheduled.
	if r.cqMu.TryLock() {
		r.drain()
		r.cqMu.Unlock()
	}
	if bt.Pending() && r.c.InFlight() <= kernelWaitDepth && r.features.Flags&featExtArg != 0 && r.kwait.CompareAndSwap(false, true) {
		r.waitInKernel(bt)
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
