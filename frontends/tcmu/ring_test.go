package tcmu

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestRingTakesCommandsInOrder(t *testing.T) {
	k := newFakeKernel(t, 4096, 1<<16)
	r, err := NewRing(k.mem)
	if err != nil {
		t.Fatal(err)
	}
	if r.Flags()&MailboxFlagCapOOOC == 0 {
		t.Fatalf("flags %#x", r.Flags())
	}
	data := bytes.Repeat([]byte{7}, 1024)
	id1, _ := k.queue([]byte{0x28, 0, 0, 0, 0, 1, 0, 0, 2, 0}, data[:512], data[:512])
	id2, _ := k.queue([]byte{0x00, 0, 0, 0, 0, 0})
	c, ok, err := r.Next()
	if err != nil || !ok || c.ID != id1 || len(c.CDB) != 10 || c.CDB[0] != 0x28 || len(c.Iov) != 2 || c.Len() != 1024 {
		t.Fatalf("first command: %+v ok=%v err=%v", c, ok, err)
	}
	if !bytes.Equal(c.Iov[1], data[:512]) {
		t.Fatal("iovec does not alias the data")
	}
	c, ok, err = r.Next()
	if err != nil || !ok || c.ID != id2 || len(c.CDB) != 6 || len(c.Iov) != 0 {
		t.Fatalf("second command: %+v ok=%v err=%v", c, ok, err)
	}
	if _, ok, err = r.Next(); ok || err != nil {
		t.Fatalf("empty ring: ok=%v err=%v", ok, err)
	}
}

// TestRingWrapOutOfOrder runs thousands of commands through a small ring
// (PAD entries and wrap-around) completing them in random order, and checks
// that the kernel reaps every command exactly once with its status.
func TestRingWrapOutOfOrder(t *testing.T) {
	k := newFakeKernel(t, 1024+8*13, 1<<16)
	r, err := NewRing(k.mem)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var inflight []Command
	want := map[uint16]byte{}
	completed, reaped, pads := 0, 0, 0
	for round := 0; round < 3000; round++ {
		// Queue a few commands of random shapes while there is room.
		for n := rng.IntN(4); n > 0; n-- {
			bufs := make([][]byte, rng.IntN(5))
			for i := range bufs {
				bufs[i] = make([]byte, 512)
			}
			cdb := [][]byte{{0x00, 0, 0, 0, 0, 0}, make([]byte, 10), make([]byte, 16), make([]byte, 12)}[rng.IntN(4)]
			cdb = slices.Clone(cdb)
			if len(cdb) == 10 {
				cdb[0] = 0x28
			} else if len(cdb) == 16 {
				cdb[0] = 0x88
			} else if len(cdb) == 12 {
				cdb[0] = 0xa8
			}
			h := k.head()
			if _, room := k.queue(cdb, bufs...); !room {
				break
			}
			if k.head() < h {
				pads++
			}
		}
		for {
			c, ok, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			inflight = append(inflight, c)
		}
		// Complete a random subset in random order.
		rng.Shuffle(len(inflight), func(i, j int) { inflight[i], inflight[j] = inflight[j], inflight[i] })
		n := rng.IntN(len(inflight) + 1)
		for _, c := range inflight[:n] {
			st := byte(StatusGood)
			var sense []byte
			if c.ID%3 == 0 {
				st, sense = StatusCheckCondition, Sense(5, 0x24, 0)
			}
			if err := r.Complete(c.ID, st, sense); err != nil {
				t.Fatal(err)
			}
			want[c.ID] = st
			completed++
		}
		inflight = inflight[n:]
		got, err := k.reap()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range got {
			st, found := want[c.id]
			if !found || st != c.status {
				t.Fatalf("reaped %d with status %d, want %d (found %v)", c.id, c.status, st, found)
			}
			if st == StatusCheckCondition && (c.sense[0] != 0x70 || c.sense[12] != 0x24) {
				t.Fatalf("sense of %d: % x", c.id, c.sense[:14])
			}
			delete(want, c.id)
			reaped++
		}
	}
	if pads == 0 {
		t.Fatal("the test never wrapped the ring")
	}
	if reaped != completed || len(want) != 0 {
		t.Fatalf("completed %d, reaped %d, %d unreaped", completed, reaped, len(want))
	}
	t.Logf("%d commands, %d wraps", completed, pads)
}

func TestRingMarksUnknownOps(t *testing.T) {
	k := newFakeKernel(t, 4096, 4096)
	r, err := NewRing(k.mem)
	if err != nil {
		t.Fatal(err)
	}
	u := k.queueTMR()
	id, _ := k.queue([]byte{0, 0, 0, 0, 0, 0})
	c, ok, err := r.Next()
	if err != nil || !ok || c.ID != id {
		t.Fatalf("next after TMR: %+v %v %v", c, ok, err)
	}
	if k.mem[k.cmdrOff+u+entHdrUFlags]&uflagUnknownOp == 0 {
		t.Fatal("TMR entry not marked UNKNOWN_OP")
	}
	// The completion skips the TMR entry at cmd_tail and lands in the CMD slot.
	if err := r.Complete(c.ID, StatusGood, nil); err != nil {
		t.Fatal(err)
	}
	got, err := k.reap()
	if err != nil || len(got) != 1 || got[0].id != id {
		t.Fatalf("reap: %+v %v", got, err)
	}
	if !r.Idle() {
		t.Fatal("ring not idle after every completion")
	}
}

func TestRingStartsAtTail(t *testing.T) {
	// Commands queued before the device was opened are taken by the first
	// pass (upstream processes the ring right after open).
	k := newFakeKernel(t, 4096, 4096)
	id, _ := k.queue([]byte{0x12, 0, 0, 0, 36, 0}, make([]byte, 36))
	r, err := NewRing(k.mem)
	if err != nil {
		t.Fatal(err)
	}
	c, ok, err := r.Next()
	if err != nil || !ok || c.ID != id {
		t.Fatalf("%+v %v %v", c, ok, err)
	}
}

func TestRingRejectsBrokenRegions(t *testing.T) {
	for name, mutate := range map[string]func(k *fakeKernel){
		"version":        func(k *fakeKernel) { ne.PutUint16(k.mem[mbVersion:], 1) },
		"ring too large": func(k *fakeKernel) { ne.PutUint32(k.mem[mbCmdrSize:], 1<<30) },
		"ring offset":    func(k *fakeKernel) { ne.PutUint32(k.mem[mbCmdrOff:], 8) },
		"tail":           func(k *fakeKernel) { ne.PutUint32(k.mem[mbCmdTail:], 4097) },
	} {
		k := newFakeKernel(t, 4096, 4096)
		mutate(k)
		if _, err := NewRing(k.mem); !errors.Is(err, ErrRingBroken) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := NewRing(make([]byte, 64)); !errors.Is(err, ErrRingBroken) {
		t.Errorf("short region: %v", err)
	}
	for name, mutate := range map[string]func(k *fakeKernel, e []byte){
		"zero length":      func(k *fakeKernel, e []byte) { ne.PutUint32(e, opCmd) },
		"past the ring":    func(k *fakeKernel, e []byte) { ne.PutUint32(e, 8192|opCmd) },
		"iovec count":      func(k *fakeKernel, e []byte) { ne.PutUint32(e[entReqIovCnt:], 1000) },
		"iovec outside":    func(k *fakeKernel, e []byte) { ne.PutUint64(e[entReqIov:], 64) },
		"iovec too long":   func(k *fakeKernel, e []byte) { ne.PutUint64(e[entReqIov+8:], 1<<40) },
		"CDB outside":      func(k *fakeKernel, e []byte) { ne.PutUint64(e[entReqCdbOff:], 1<<40) },
		"head not aligned": func(k *fakeKernel, e []byte) { k.setHead(k.head() + 1) },
	} {
		k := newFakeKernel(t, 4096, 4096)
		k.queue(make([]byte, 10), make([]byte, 512))
		r, err := NewRing(k.mem)
		if err != nil {
			t.Fatal(err)
		}
		mutate(k, k.mem[k.cmdrOff:])
		if _, _, err := r.Next(); !errors.Is(err, ErrRingBroken) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestRingCompleteWithoutEntry(t *testing.T) {
	k := newFakeKernel(t, 4096, 4096)
	r, _ := NewRing(k.mem)
	if err := r.Complete(1, 0, nil); !errors.Is(err, ErrRingBroken) {
		t.Fatalf("completion on an empty ring: %v", err)
	}
}

func TestCDBLength(t *testing.T) {
	for _, c := range []struct {
		op   byte
		b7   byte
		want int
	}{{0x00, 0, 6}, {0x28, 0, 10}, {0x55, 0, 10}, {0x88, 0, 16}, {0xa8, 0, 12}, {0x7f, 24, 32}, {0x60, 0, -1}, {0xc0, 0, -1}, {0xe0, 0, -1}} {
		if got := cdbLen(c.op, func() (byte, bool) { return c.b7, true }); got != c.want {
			t.Errorf("opcode %#x: %d, want %d", c.op, got, c.want)
		}
	}
}
