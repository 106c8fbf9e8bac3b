package fileengine

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"golang.org/x/sys/unix"
)

func TestSlotsCompleteOnce(t *testing.T) {
	c := new(Counters)
	s := NewSlots(4, c)
	reqs := make([]core.IORequest, 3)
	tokens := make([]uint64, 3)
	w := NewWaiter(3)
	if k := s.Take(w, reqs, tokens); k != 3 {
		t.Fatalf("Take = %d, want 3", k)
	}
	if c.InFlight() != 3 {
		t.Fatalf("in flight %d, want 3", c.InFlight())
	}
	if !s.Complete(tokens[1], 4096) || !s.Complete(tokens[0], -int64(unix.EIO)) {
		t.Fatal("first completions refused")
	}
	if s.Complete(tokens[1], 1) {
		t.Fatal("a token completed twice")
	}
	if !w.Pending() {
		t.Fatal("waiter done with one request outstanding")
	}
	if s.Complete(0, 1) || s.Complete(99, 1) || s.Complete(tokens[2]^(1<<32), 1) {
		t.Fatal("unknown token completed")
	}
	if !s.Complete(tokens[2], 7) {
		t.Fatal("last completion refused")
	}
	w.Wait()
	if reqs[1].N != 4096 || reqs[1].Err != nil || reqs[0].N != 0 || !errors.Is(reqs[0].Err, unix.EIO) || reqs[2].N != 7 {
		t.Fatalf("results %+v", reqs)
	}
	if c.InFlight() != 0 || c.Snapshot().MaxInFlight != 3 {
		t.Fatalf("in flight %d, max %d", c.InFlight(), c.Snapshot().MaxInFlight)
	}
}

func TestSlotsStaleTokenAfterReuse(t *testing.T) {
	s := NewSlots(1, new(Counters))
	var r1, r2 core.IORequest
	var t1, t2 [1]uint64
	w1 := NewWaiter(1)
	s.Take(w1, []core.IORequest{r1}, t1[:])
	if !s.Complete(t1[0], 1) {
		t.Fatal("completion refused")
	}
	w1.Wait()
	reqs := []core.IORequest{r2}
	w2 := NewWaiter(1)
	s.Take(w2, reqs, t2[:])
	if uint32(t1[0]) != uint32(t2[0]) || t1[0] == t2[0] {
		t.Fatalf("tokens %#x, %#x: want the same slot, another generation", t1[0], t2[0])
	}
	if s.Complete(t1[0], 1) {
		t.Fatal("the old request's token completed the slot's new request")
	}
	if !w2.Pending() {
		t.Fatal("new request finished by a stale token")
	}
	s.Complete(t2[0], 2)
	w2.Wait()
	if reqs[0].N != 2 {
		t.Fatalf("N = %d", reqs[0].N)
	}
}

// TestSlotsTakeBounded checks that Take takes only free slots and waits for
// one when none is.
func TestSlotsTakeBounded(t *testing.T) {
	s := NewSlots(2, new(Counters))
	reqs := make([]core.IORequest, 5)
	tokens := make([]uint64, 5)
	w := NewWaiter(5)
	if k := s.Take(w, reqs, tokens); k != 2 {
		t.Fatalf("Take = %d, want 2 (the table's size)", k)
	}
	got := make(chan int)
	go func() { got <- s.Take(w, reqs[2:], tokens[2:]) }()
	s.Complete(tokens[0], 1)
	if k := <-got; k != 1 {
		t.Fatalf("Take after one completion = %d, want 1", k)
	}
	go func() { got <- s.Take(w, reqs[3:], tokens[3:]) }()
	s.Complete(tokens[1], 1)
	s.Complete(tokens[2], 1)
	k := <-got
	if k < 1 {
		t.Fatalf("Take = %d", k)
	}
	for i := 3; i < 3+k; i++ {
		s.Complete(tokens[i], 1)
	}
	if 3+k < 5 {
		s.Take(w, reqs[3+k:], tokens[3+k:])
		s.Complete(tokens[4], 1)
	}
	w.Wait()
	for i, r := range reqs {
		if r.N != 1 {
			t.Fatalf("request %d: N = %d", i, r.N)
		}
	}
}

// TestSlotsConcurrentCompleters reaps every event twice from two goroutines
// at once (the libaio race this table guards against): each request
// completes exactly once and every waiter wakes.
func TestSlotsConcurrentCompleters(t *testing.T) {
	const depth, rounds = 8, 2000
	s := NewSlots(depth, new(Counters))
	var completed atomic.Int64
	for range rounds {
		reqs := make([]core.IORequest, depth)
		tokens := make([]uint64, depth)
		w := NewWaiter(depth)
		for i := 0; i < depth; {
			i += s.Take(w, reqs[i:], tokens[i:])
		}
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				for _, tk := range tokens {
					if s.Complete(tk, 512) {
						completed.Add(1)
					}
				}
			})
		}
		w.Wait()
		wg.Wait()
		for i, r := range reqs {
			if r.N != 512 || r.Err != nil {
				t.Fatalf("request %d: %d, %v", i, r.N, r.Err)
			}
		}
	}
	if n := completed.Load(); n != depth*rounds {
		t.Fatalf("%d completions, want %d", n, depth*rounds)
	}
}
