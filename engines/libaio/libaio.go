// Package libaio is the engine that uses Linux native asynchronous IO
// (upstream's ioEngine 1): io_setup, io_submit and io_getevents, called as
// raw system calls without cgo.
//
// As upstream does, files are opened O_DIRECT (native AIO is only
// asynchronous for O_DIRECT files), and requests of any alignment are
// served through an aligned bounce buffer; core.OpenOptions.Buffered opens a
// file without O_DIRECT, and a filesystem that refuses O_DIRECT gets a
// buffered file with one log line.
//
// One kernel AIO context serves every file of an engine. Goroutines queue
// their control blocks and whichever finds the submitter role free hands
// everything queued to one io_submit call, so concurrent readers share
// system calls; at most the engine's queue depth is in flight. Completions
// signal an eventfd that the Go runtime's poller watches; one reaper
// goroutine, owned by the engine and stopped by Close, collects them with a
// non-blocking io_getevents and wakes the submitters. At low depth one
// submitter instead waits inside io_getevents and completes whatever
// arrives, which saves the trip through the eventfd and the poller. Buffers
// handed to the kernel are pinned (runtime.Pinner) until their request
// completes.
//
// When the kernel refuses native AIO (ENOSYS; EPERM or EACCES under a
// seccomp filter; EAGAIN when fs.aio-max-nr is used up), the registered
// factory returns the psync engine instead, with one log line and a counted
// fallback.
package libaio

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/engines/internal/fileengine"
	"golang.org/x/sys/unix"
)

// Name is the registry name of this engine.
const Name = "libaio"

// Number is upstream's ioEngine number of this engine.
const Number = 1

// DefaultQueueDepth is the number of requests in flight when the
// configuration does not say.
const DefaultQueueDepth = 128

func init() {
	core.Engines.Register(Name, Number, Factory)
}

// Factory is the registered factory: a native AIO engine, or the psync
// engine when the kernel refuses native AIO.
func Factory(cfg core.EngineConfig) (core.Engine, error) {
	e, err := New(cfg)
	if err != nil {
		if Refused(err) {
			return fileengine.NewFallback(Name, err, cfg), nil
		}
		return nil, err
	}
	return e, nil
}

// Refused reports whether err means that the kernel does not let this
// process use native AIO: it lacks it (ENOSYS), forbids it (EPERM, EACCES:
// seccomp) or has no AIO events left (EAGAIN: fs.aio-max-nr reached).
func Refused(err error) bool {
	return errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) ||
		errors.Is(err, unix.EAGAIN)
}

// Engine is a native AIO engine.
type Engine struct {
	*fileengine.Engine
	be *backend
}

// New returns a native AIO engine, or an error (wrapping the errno) when
// the kernel refuses to create an AIO context.
func New(cfg core.EngineConfig) (*Engine, error) {
	depth := cfg.QueueDepth
	if depth <= 0 {
		depth = DefaultQueueDepth
	}
	c := new(fileengine.Counters)
	be, err := newBackend(depth, c)
	if err != nil {
		return nil, err
	}
	return &Engine{
		Engine: fileengine.New(Name, cfg.Logger, be, c, fileengine.Options{DirectByDefault: true}),
		be:     be,
	}, nil
}

// QueueDepth returns the number of requests the engine keeps in flight at
// most.
func (e *Engine) QueueDepth() int { return e.be.depth }

// Kernel ABI (include/uapi/linux/aio_abi.h), x86-64 and arm64 layout.
const (
	cmdPread  = 0
	cmdPwrite = 1
	cmdFdsync = 3

	flagResfd = 1 << 0
)

type iocb struct {
	data      uint64
	key       uint32
	rwFlags   int32
	opcode    uint16
	reqprio   int16
	fd        uint32
	buf       uint64
	nbytes    uint64
	offset    int64
	reserved2 uint64
	flags     uint32
	resfd     uint32
}

type ioEvent struct {
	data uint64
	obj  uint64
	res  int64
	res2 int64
}

type backend struct {
	c     *fileengine.Counters
	ctx   uintptr
	depth int
	efd   *os.File
	efdN  int

	slots *fileengine.Slots // the requests in flight, at most depth

	// Control blocks queued for io_submit by any goroutine; whoever takes
	// the submitter role submits all of them (see flush).
	queueMu    sync.Mutex
	queue      []*iocb
	spare      []*iocb
	queued     atomic.Int64
	submitting atomic.Bool

	// kwait is set while a submitter waits for completions inside
	// io_getevents (see waitInKernel); the reaper then leaves them to it.
	kwait      atomic.Bool
	waitTS     unix.Timespec
	waitEvents []ioEvent

	mu     sync.RWMutex // shared by submissions, exclusive in Close
	closed bool
	reaped chan struct{}
}

func newBackend(depth int, c *fileengine.Counters) (*backend, error) {
	var ctx uintptr
	if _, _, errno := unix.Syscall(unix.SYS_IO_SETUP, uintptr(depth), uintptr(unsafe.Pointer(&ctx)), 0); errno != 0 {
		return nil, fmt.Errorf("libaio: io_setup(%d): %w", depth, errno)
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Syscall(unix.SYS_IO_DESTROY, ctx, 0, 0)
		return nil, fmt.Errorf("libaio: eventfd: %w", err)
	}
	b := &backend{
		c: c, ctx: ctx, depth: depth,
		efd: os.NewFile(uintptr(efd), "libaio-eventfd"), efdN: efd,
		slots:      fileengine.NewSlots(depth, c),
		waitEvents: make([]ioEvent, 64),
		reaped:     make(chan struct{}),
	}
	go b.reap()
	return b, nil
}

// Attach implements fileengine.Backend.
func (b *backend) Attach(fd int, name string) (fileengine.Target, error) {
	return &target{b: b, fd: fd}, nil
}

// Close waits for the submissions in flight, stops the reaper and destroys
// the AIO context.
func (b *backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	errF := b.efd.Close() // wakes the reaper
	<-b.reaped
	var errD error
	if _, _, errno := unix.Syscall(unix.SYS_IO_DESTROY, b.ctx, 0, 0); errno != 0 {
		errD = fmt.Errorf("libaio: io_destroy: %w", errno)
	}
	return errors.Join(errF, errD)
}

func (b *backend) reap() {
	defer close(b.reaped)
	var counter [8]byte
	events := make([]ioEvent, 256)
	zero := unix.Timespec{}
	for {
		if _, err := b.efd.Read(counter[:]); err != nil {
			// Close closed the eventfd; nothing is in flight then.
			return
		}
		if b.kwait.Load() {
			// A submitter is waiting in the kernel and reaps once more
			// after it stops waiting.
			continue
		}
		b.reapNow(events, &zero)
	}
}

// reapNow completes every event the context has now.
func (b *backend) reapNow(events []ioEvent, zero *unix.Timespec) {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_IO_GETEVENTS, b.ctx, 0, uintptr(len(events)),
			uintptr(unsafe.Pointer(&events[0])), uintptr(unsafe.Pointer(zero)), 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 || n == 0 {
			return
		}
		for _, ev := range events[:n] {
			b.slots.Complete(ev.data, ev.res)
		}
		if int(n) < len(events) {
			return
		}
	}
}

// kernelWaitSlice bounds one wait in io_getevents, so that a waiter whose
// completion the reaper took cannot sleep long.
const kernelWaitSlice = 200 * time.Microsecond

// kernelWaitDepth is the most requests in flight at which a submitter waits
// in the kernel; deeper queues are served by the reaper, which measured as
// fast there.
const kernelWaitDepth = 4

// waitInKernel waits for bt's completions inside io_getevents, the way a
// single-threaded program does, completing every event that arrives (also
// other goroutines'), instead of going through the eventfd, the runtime's
// poller and the reaper: at low depth that round trip is most of the
// latency. Only one goroutine at a time waits so (kwait).
func (b *backend) waitInKernel(bt *fileengine.Waiter) {
	b.waitTS = unix.NsecToTimespec(int64(kernelWaitSlice))
	for bt.Pending() {
		n, _, errno := unix.Syscall6(unix.SYS_IO_GETEVENTS, b.ctx, 1, uintptr(len(b.waitEvents)),
			uintptr(unsafe.Pointer(&b.waitEvents[0])), uintptr(unsafe.Pointer(&b.waitTS)), 0)
		if errno == 0 {
			for _, ev := range b.waitEvents[:n] {
				b.slots.Complete(ev.data, ev.res)
			}
		}
	}
	b.kwait.Store(false)
	// Events that arrived while kwait was set may have been left by the
	// reaper: take them now (later ones wake the reaper). b.waitEvents
	// belongs to whoever holds kwait, which another goroutine may take as
	// soon as it is released, so this reap uses a buffer of its own.
	var events [16]ioEvent
	b.reapNow(events[:], &unix.Timespec{})
}

type target struct {
	b  *backend
	fd int
}

// Detach implements fileengine.Target.
func (t *target) Detach() error { return nil }

// Submit implements fileengine.Target.
func (t *target) Submit(reqs []core.IORequest) error {
	if len(reqs) == 0 {
		return nil
	}
	return t.b.submit(t.fd, reqs, false)
}

// Sync implements fileengine.Target.
func (t *target) Sync() error {
	r := []core.IORequest{{}}
	if err := t.b.submit(t.fd, r, true); err != nil {
		return err
	}
	if errors.Is(r[0].Err, unix.EINVAL) {
		// The filesystem does not offer asynchronous fsync.
		return unix.Fdatasync(t.fd)
	}
	return r[0].Err
}

// flush submits the queued control blocks. Whoever finds the submitter
// role free takes it and submits everything queued so far, also other
// goroutines' requests; the others return at once. So concurrent
// submitters share io_submit calls, and one goroutine at a time is in the
// kernel's submission path.
func (b *backend) flush() {
	for b.queued.Load() > 0 {
		if !b.submitting.CompareAndSwap(false, true) {
			return
		}
		for {
			b.queueMu.Lock()
			if len(b.queue) == 0 {
				b.queueMu.Unlock()
				break
			}
			cbs := b.queue
			b.queue, b.spare = b.spare[:0], nil
			b.queued.Add(-int64(len(cbs)))
			b.queueMu.Unlock()
			b.submitAll(cbs)
			clear(cbs)
			b.spare = cbs
		}
		b.submitting.Store(false)
	}
}

// submitAll hands cbs to the kernel, retrying what io_submit did not take.
func (b *backend) submitAll(cbs []*iocb) {
	for len(cbs) > 0 {
		got, _, errno := unix.Syscall(unix.SYS_IO_SUBMIT, b.ctx, uintptr(len(cbs)), uintptr(unsafe.Pointer(&cbs[0])))
		switch {
		case errno == 0:
			b.c.Submitted(int(got))
			cbs = cbs[got:]
		case errno == unix.EAGAIN || errno == unix.EINTR:
			time.Sleep(50 * time.Microsecond)
		default:
			// The first request was refused; it completes with the error
			// and the rest go on.
			b.slots.Complete(cbs[0].data, -int64(errno))
			cbs = cbs[1:]
		}
	}
}

func (b *backend) submit(fd int, reqs []core.IORequest, fdsync bool) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return fmt.Errorf("libaio: %w", core.ErrClosed)
	}
	n := len(reqs)
	bt := fileengine.NewWaiter(n)
	sub := submissions.Get().(*submission)
	defer sub.recycle()
	cbs, ptrs, tokens := sub.get(n)
	var pin runtime.Pinner
	defer pin.Unpin()
	for i := range reqs {
		r := &reqs[i]
		cb := &cbs[i]
		*cb = iocb{}
		cb.fd = uint32(fd)
		cb.flags = flagResfd
		cb.resfd = uint32(b.efdN)
		switch {
		case fdsync:
			cb.opcode = cmdFdsync
		case r.Op == core.OpWrite:
			cb.opcode = cmdPwrite
		default:
			cb.opcode = cmdPread
		}
		if len(r.Buf) > 0 {
			pin.Pin(&r.Buf[0])
			cb.buf = uint64(uintptr(unsafe.Pointer(&r.Buf[0])))
			cb.nbytes = uint64(len(r.Buf))
		}
		cb.offset = r.Off
		ptrs[i] = cb
	}
	for i := 0; i < n; {
		// At least one free slot, waiting if the queue is full, and as
		// many more as are free without waiting.
		k := b.slots.Take(bt, reqs[i:], tokens[i:])
		for j := i; j < i+k; j++ {
			cbs[j].data = tokens[j]
		}
		b.queueMu.Lock()
		b.queue = append(b.queue, ptrs[i:i+k]...)
		b.queued.Add(int64(k))
		b.queueMu.Unlock()
		b.flush()
		i += k
	}
	if bt.Pending() && b.c.InFlight() <= kernelWaitDepth && b.kwait.CompareAndSwap(false, true) {
		b.waitInKernel(bt)
	}
	bt.Wait()
	return nil
}

// submission holds the control blocks of one submit call and the arrays
// that carry them to io_submit, pooled: they must stay on the heap (another
// goroutine may submit them), and allocating them per request costs.
type submission struct {
	cbs    []iocb
	ptrs   []*iocb
	tokens []uint64
}

var submissions = sync.Pool{New: func() any { return new(submission) }}

func (s *submission) get(n int) ([]iocb, []*iocb, []uint64) {
	if cap(s.cbs) < n {
		s.cbs, s.ptrs, s.tokens = make([]iocb, n), make([]*iocb, n), make([]uint64, n)
	}
	return s.cbs[:n], s.ptrs[:n], s.tokens[:n]
}

// recycle returns s to the pool once its requests have completed (the
// kernel reads a control block only during io_submit).
func (s *submission) recycle() {
	if cap(s.cbs) > 1024 {
		return
	}
	clear(s.ptrs[:cap(s.ptrs)])
	submissions.Put(s)
}
