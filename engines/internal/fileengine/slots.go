package fileengine

import (
	"sync"
	"sync/atomic"

	"github.com/overlaybd-go/overlaybd/core"
	"golang.org/x/sys/unix"
)

// Slots is the table of an asynchronous backend's requests in the kernel
// (libaio's control blocks, io_uring's SQEs). Its size bounds the requests
// in flight: Take waits while every slot is taken.
//
// Each request gets a token (the slot number and a generation) that the
// backend hands to the kernel as the request's user data and gives back to
// Complete with the kernel's result. A token completes its request once:
// a second completion of the same token, or of a token whose slot has since
// been reused, is ignored. That guards the waiters against a completion
// event read twice (two goroutines reaping the same event buffer once did
// exactly that).
type Slots struct {
	c     *Counters
	free  chan uint32 // free slot numbers: the queue-depth semaphore
	slots []slot
}

type slot struct {
	// state is the token of the request in the slot, 0 while it is free.
	state atomic.Uint64
	// gen, req and w belong to whoever took the slot from free until
	// Complete gives it back.
	gen uint32
	req *core.IORequest
	w   *Waiter
}

// NewSlots returns a table of n slots that counts requests entering and
// leaving the kernel in c.
func NewSlots(n int, c *Counters) *Slots {
	s := &Slots{c: c, free: make(chan uint32, n), slots: make([]slot, n)}
	for i := range n {
		s.free <- uint32(i)
	}
	return s
}

// Len returns the number of slots.
func (s *Slots) Len() int { return len(s.slots) }

// Take gives slots to a prefix of reqs, whose completions w waits for: it
// waits until one slot is free, then takes as many more as are free without
// waiting, at most len(reqs). It writes the requests' tokens to tokens
// (which must hold len(reqs)), counts them as in flight and returns how
// many it took.
func (s *Slots) Take(w *Waiter, reqs []core.IORequest, tokens []uint64) int {
	k := 0
	s.fill(<-s.free, w, &reqs[0], tokens)
	for k = 1; k < len(reqs); k++ {
		select {
		case id := <-s.free:
			s.fill(id, w, &reqs[k], tokens[k:])
			continue
		default:
		}
		break
	}
	s.c.Begin(k)
	return k
}

func (s *Slots) fill(id uint32, w *Waiter, r *core.IORequest, tokens []uint64) {
	sl := &s.slots[id]
	sl.gen++
	if sl.gen == 0 {
		sl.gen = 1 // tokens are never 0, the free state
	}
	sl.req, sl.w = r, w
	t := uint64(sl.gen)<<32 | uint64(id)
	sl.state.Store(t)
	tokens[0] = t
}

// Complete finishes the request of token with the kernel's result res (a
// byte count, or a negative errno) and frees its slot. It reports false,
// and does nothing, when token is not a request in flight: unknown, or
// already completed.
func (s *Slots) Complete(token uint64, res int64) bool {
	id := uint32(token)
	if token == 0 || int(id) >= len(s.slots) {
		return false
	}
	sl := &s.slots[id]
	if !sl.state.CompareAndSwap(token, 0) {
		return false
	}
	r, w := sl.req, sl.w
	sl.req, sl.w = nil, nil
	if res < 0 {
		r.N, r.Err = 0, unix.Errno(-res)
	} else {
		r.N, r.Err = int(res), nil
	}
	s.c.End(1)
	s.free <- id
	w.Done()
	return true
}

// Waiter waits for the completions of one submission.
type Waiter struct {
	pending atomic.Int32
	done    chan struct{}
}

var waiters = sync.Pool{New: func() any { return &Waiter{done: make(chan struct{}, 1)} }}

// NewWaiter returns a waiter for n completions. Call Wait exactly once; the
// waiter must not be used after Wait returns.
func NewWaiter(n int) *Waiter {
	w := waiters.Get().(*Waiter)
	w.pending.Store(int32(n))
	return w
}

// Pending reports whether completions are still outstanding.
func (w *Waiter) Pending() bool { return w.pending.Load() > 0 }

// Wait returns when every completion has arrived, and recycles w.
func (w *Waiter) Wait() {
	<-w.done
	waiters.Put(w)
}

// Done records one completion; the last one wakes Wait. The caller must
// not touch w after its last Done: Wait may recycle it at once.
func (w *Waiter) Done() {
	if w.pending.Add(-1) == 0 {
		w.done <- struct{}{}
	}
}
