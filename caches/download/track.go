package download

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// A Tracker holds the spans of one download file that writers are in the
// middle of writing. Every writer of a ".download" file in this process —
// the cache's fills and the background download (core/remote) — claims a
// span before writing it and releases it once the write has returned;
// the cache's reads wait for claims over their span and trust what they
// read only when no claim was active and none began meanwhile (see
// docs/caches.md). Trackers are shared per file (device and inode): every
// TrackFile of the same file returns the same Tracker until all of them
// are closed.
type Tracker struct {
	id  fileID
	mu  sync.Mutex
	in  []*claim // claims in flight, never overlapping
	ref int      // under trackers.mu

	// begun counts the claims taken, active those held: a read that saw
	// none active before it and none begun during it read no page a
	// writer was writing.
	begun   atomic.Uint64
	active  atomic.Int64
	waiting atomic.Int64
}

// claim is one span in flight; done is closed when it is released. A
// claim that is not write only keeps writers out (Hold).
type claim struct {
	off, end int64
	write    bool
	done     chan struct{}
}

// fileID names a file independently of the path it was opened by.
type fileID struct{ dev, ino uint64 }

// trackers are the Trackers of the files open in this process.
var trackers struct {
	mu sync.Mutex
	m  map[fileID]*Tracker
}

// WholeFile is the end of a claim that covers the whole file, whatever its
// size (for truncation).
const WholeFile = math.MaxInt64

// TrackFile returns the Tracker of the open file fd (a download file), the
// one every other holder of the same file shares. Close releases it.
func TrackFile(fd int) (*Tracker, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("track download file: %w", err)
	}
	id := fileID{dev: uint64(st.Dev), ino: st.Ino}
	trackers.mu.Lock()
	defer trackers.mu.Unlock()
	if trackers.m == nil {
		trackers.m = map[fileID]*Tracker{}
	}
	t := trackers.m[id]
	if t == nil {
		t = &Tracker{id: id}
		trackers.m[id] = t
	}
	t.ref++
	return t, nil
}

// Close releases the Tracker; it must be called once per TrackFile, after
// the holder's last claim is released.
func (t *Tracker) Close() {
	trackers.mu.Lock()
	defer trackers.mu.Unlock()
	if t.ref--; t.ref == 0 {
		delete(trackers.m, t.id)
	}
}

// Claim waits until no other claim overlaps [off, end), then claims it for
// the caller, who writes (or punches, or truncates) the span and then calls
// release. Claims are short: take them around the write, not around
// fetching the data.
func (t *Tracker) Claim(off, end int64) (release func()) {
	release, _ = t.claim(off, end, true)
	return release
}

// Hold waits until no other claim overlaps [off, end), then keeps writers
// out of it until release is called, for reading it whole (the download's
// digest check). Unlike a claim it does not make the cache's readers wait
// or distrust what they read.
func (t *Tracker) Hold(off, end int64) (release func()) {
	release, _ = t.claim(off, end, false)
	return release
}

// Waiting returns the number of goroutines waiting for a claim to be
// released (readers and writers).
func (t *Tracker) Waiting() int64 { return t.waiting.Load() }

// claim is Claim that also reports whether it waited for another claim.
func (t *Tracker) claim(off, end int64, write bool) (release func(), waited bool) {
	for {
		t.mu.Lock()
		c := t.overlap(off, end)
		if c == nil {
			c = &claim{off: off, end: end, write: write, done: make(chan struct{})}
			t.in = append(t.in, c)
			if write {
				t.begun.Add(1)
				t.active.Add(1)
			}
			t.mu.Unlock()
			return func() { t.release(c) }, waited
		}
		t.mu.Unlock()
		t.wait(c.done)
		waited = true
	}
}

// release ends claim c.
func (t *Tracker) release(c *claim) {
	t.mu.Lock()
	for i, x := range t.in {
		if x == c {
			t.in = append(t.in[:i], t.in[i+1:]...)
			break
		}
	}
	if c.write {
		t.active.Add(-1)
	}
	t.mu.Unlock()
	close(c.done)
}

// overlap returns a claim in flight that overlaps [off, end) (nil: none).
// t.mu is held.
func (t *Tracker) overlap(off, end int64) *claim {
	for _, c := range t.in {
		if c.off < end && off < c.end {
			return c
		}
	}
	return nil
}

// settle waits for the write claims in flight over [off, end) and reports
// whether there were any. With none active it takes no lock.
func (t *Tracker) settle(off, end int64) (waited bool) {
	if t.active.Load() == 0 {
		return false
	}
	t.mu.Lock()
	var dones []chan struct{}
	for _, c := range t.in {
		if c.write && c.off < end && off < c.end {
			dones = append(dones, c.done)
		}
	}
	t.mu.Unlock()
	for _, d := range dones {
		t.wait(d)
	}
	return len(dones) > 0
}

// wait waits for the claim whose channel is done to be released.
func (t *Tracker) wait(done chan struct{}) {
	t.waiting.Add(1)
	defer t.waiting.Add(-1)
	if hooks.waiting != nil {
		hooks.waiting(t)
	}
	<-done
}
