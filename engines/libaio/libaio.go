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
// One kernel AIO context serves every file of an engine, and one issuer
// goroutine, owned by the engine and stopped by Close, drives it the way
// fio's single thread does: goroutines queue their control blocks and wait;
// the issuer hands everything queued to one io_submit, waits for
// completions in io_getevents, and completes them one per turn, letting
// the woken goroutine queue its next request before it submits again, so
// the queue stays full. At low depth, while the issuer is parked, a
// submitter instead submits and waits inside io_getevents itself, as a
// single-threaded program would. At most the engine's queue depth is in
// flight. Buffers handed to the kernel are pinned (runtime.Pinner) until
// their request completes.
//
// When the kernel refuses native AIO (ENOSYS; EPERM or EACCES under a
// seccomp filter; EAGAIN when fs.aio-max-nr is used up), the registered
// factory returns the psync engine instead, with one log line and a counted
// fallback.
package libaio

import (
	"errors"
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

	slots *fileengine.Slots // the requests in flight, at most depth

	// Control blocks queued for io_submit by any goroutine; the owner
	// submits all of them.
	queueMu sync.Mutex
	queue   []*iocb
	spare   []*iocb
	queued  atomic.Int64

	// owner is the right to call io_submit and io_getevents: the issuer
	// holds it while it runs; while the issuer is parked, a submitter at
	// low depth may take it and serve itself (see submit).
	owner    sync.Mutex
	inKernel int // submitted and not yet collected; under owner
	waitTS   unix.Timespec
	// events[evHead:evTail] were collected from the kernel and are not yet
	// completed; under owner.
	events         []ioEvent
	evHead, evTail int
	parked         atomic.Bool   // the issuer sleeps until kicked
	kick           chan struct{} // wakes the parked issuer (capacity 1)
	stop           chan struct{} // closed by Close: the issuer returns

	mu     sync.RWMutex // shared by submissions, exclusive in Close
	closed bool
	done   chan struct{} // closed when the issuer has returned
}

func newBackend(depth int, c *fileengine.Counters) (*backend, error) {
	var ctx uintptr
	if _, _, errno := unix.Syscall(unix.SYS_IO_SETUP, uintptr(depth), uintptr(unsafe.Pointer(&ctx)), 0); errno != 0 {
		return nil, fmt.Errorf("libaio: io_setup(%d): %w", depth, errno)
	}
	b := &backend{
		c: c, ctx: ctx, depth: depth,
		slots:  fileengine.NewSlots(depth, c),
		events: make([]ioEvent, depth),
		kick:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go b.issue()
	return b, nil
}

// Attach implements fileengine.Backend.
func (b *backend) Attach(fd int, name string) (fileengine.Target, error) {
	return &target{b: b, fd: fd}, nil
}

// Close waits for the submissions in flight, stops the issuer and
// destroys the AIO context.
func (b *backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	close(b.stop) // nothing is in flight: the issuer is parked or parking
	<-b.done
	if _, _, errno := unix.Syscall(unix.SYS_IO_DESTROY, b.ctx, 0, 0); errno != 0 {
		return fmt.Errorf("libaio: io_destroy: %w", errno)
	}
	return nil
}

// issuerWaitSlice bounds one wait of the issuer in io_getevents: requests
// queued meanwhile wait at most that long for submission.
const issuerWaitSlice = 50 * time.Microsecond

// kernelWaitSlice bounds one wait of a serving submitter in io_getevents.
const kernelWaitSlice = 200 * time.Microsecond

// kernelWaitDepth is the most requests in flight at which a submitter
// serves itself when the issuer is parked.
const kernelWaitDepth = 4

// reapPerTurn is how many completions the issuer hands back before it
// submits again. One, as fio does: the woken submitter's next request goes
// to the kernel right away. Handing back everything collected made the
// successors of ~20 completions wait for each other, and the queue swung
// between 12 and 32 requests (see docs/engines.md).
const reapPerTurn = 1

// issue is the engine's issuer: while control blocks are queued or in the
// kernel it submits everything queued in one io_submit and waits for
// completions in io_getevents, completing the requests and waking their
// submitters; when nothing is left it parks until a submitter kicks it.
// Submitters only queue control blocks, so at depth the kernel sees few,
// large submissions from one thread, as with fio's single loop.
func (b *backend) issue() {
	defer close(b.done)
	b.owner.Lock()
	for {
		if b.queued.Load() == 0 && b.inKernel == 0 && b.evHead == b.evTail {
			b.owner.Unlock()
			b.parked.Store(true)
			if b.queued.Load() == 0 {
				select {
				case <-b.kick:
				case <-b.stop:
					return
				}
			}
			b.parked.Store(false)
			b.owner.Lock()
			continue
		}
		if b.step(issuerWaitSlice, reapPerTurn) > 0 && (b.inKernel > 0 || b.evHead < b.evTail || b.queued.Load() > 0) {
			// Let the submitter just woken run and queue its next
			// request, so that the next io_submit carries it at once.
			// When nothing is left the issuer parks instead, so that a
			// submitter at low depth finds it parked and serves itself.
			runtime.Gosched()
		}
	}
}

// step submits the queued control blocks, collects completions from the
// kernel when none are at hand (waiting up to slice for one) and completes
// at most reap of them. It returns how many it completed. The caller holds
// owner.
func (b *backend) step(slice time.Duration, reap int) int {
	b.flush()
	if b.evHead == b.evTail && b.inKernel > 0 {
		b.collect(1, slice)
	}
	return b.complete(reap)
}

// collect waits up to slice for at least minEvents events and takes every
// event that has arrived into b.events, which must hold none. The caller
// holds owner.
func (b *backend) collect(minEvents int, slice time.Duration) {
	b.waitTS = unix.NsecToTimespec(int64(slice))
	n, _, errno := unix.Syscall6(unix.SYS_IO_GETEVENTS, b.ctx, uintptr(minEvents), uintptr(len(b.events)),
		uintptr(unsafe.Pointer(&b.events[0])), uintptr(unsafe.Pointer(&b.waitTS)), 0)
	b.evHead, b.evTail = 0, 0
	if errno != 0 {
		return // EINTR
	}
	b.evTail = int(n)
	b.inKernel -= int(n)
}

// complete completes at most limit of the collected events and returns
// how many. The caller holds owner.
func (b *backend) complete(limit int) int {
	n := 0
	for ; b.evHead < b.evTail && n < limit; n++ {
		ev := b.events[b.evHead]
		b.evHead++
		b.slots.Complete(ev.data, ev.res)
	}
	return n
}

// wake kicks the issuer if it is parked.
func (b *backend) wake() {
	if b.parked.Load() {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
}

// serve submits and waits in place of the parked issuer until bt has
// completed, completing every event that arrives (also other goroutines'),
// the way a single-threaded program does: at low depth the trip to the
// issuer and back is most of the latency. The caller holds owner, and
// hands what is left to the issuer afterwards. It stops early when the
// queue has grown past kernelWaitDepth: the issuer, which waits in shorter
// slices, serves deeper queues.
func (b *backend) serve(bt *fileengine.Waiter) {
	for bt.Pending() && b.c.InFlight() <= kernelWaitDepth {
		b.step(kernelWaitSlice, len(b.events))
	}
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

// flush submits every queued control block. The caller holds owner.
func (b *backend) flush() {
	for b.queued.Load() > 0 {
		b.queueMu.Lock()
		cbs := b.queue
		b.queue, b.spare = b.spare[:0], nil
		b.queued.Add(-int64(len(cbs)))
		b.queueMu.Unlock()
		b.submitAll(cbs)
		clear(cbs)
		b.spare = cbs
	}
}

// submitAll hands cbs to the kernel, retrying what io_submit did not take.
// The caller holds owner.
func (b *backend) submitAll(cbs []*iocb) {
	for len(cbs) > 0 {
		got, _, errno := unix.Syscall(unix.SYS_IO_SUBMIT, b.ctx, uintptr(len(cbs)), uintptr(unsafe.Pointer(&cbs[0])))
		switch {
		case errno == 0:
			b.c.Submitted(int(got))
			b.inKernel += int(got)
			cbs = cbs[got:]
		case errno == unix.EAGAIN || errno == unix.EINTR:
			// Completions not yet collected may hold the context's
			// room: collect them, and pause if there were none.
			b.complete(len(b.events))
			got := 0
			if b.inKernel > 0 {
				b.collect(0, 0)
				got = b.complete(len(b.events))
			}
			if got == 0 {
				time.Sleep(50 * time.Microsecond)
			}
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
		i += k
		if i < n || !b.parked.Load() || b.c.InFlight() > kernelWaitDepth || !b.owner.TryLock() {
			b.wake()
			continue
		}
		// The issuer is parked and the queue is short: serve ourselves.
		b.serve(bt)
		left := b.queued.Load() > 0 || b.inKernel > 0 || b.evHead < b.evTail
		b.owner.Unlock()
		if left {
			select {
			case b.kick <- struct{}{}:
			default:
			}
		}
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
