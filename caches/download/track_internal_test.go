package download

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// openTracked opens path and returns its Tracker.
func openTracked(t *testing.T, path string) *Tracker {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	tr, err := TrackFile(int(fh.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestTrackerSharedPerFile: two opens of one file by different paths (a
// hard link) share a Tracker; another file has its own; the last Close
// forgets it.
func TestTrackerSharedPerFile(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	t1 := openTracked(t, a)
	if err := os.Link(a, filepath.Join(dir, "a2")); err != nil {
		t.Fatal(err)
	}
	t2 := openTracked(t, filepath.Join(dir, "a2"))
	t3 := openTracked(t, b)
	if t1 != t2 {
		t.Error("two opens of one file got different trackers")
	}
	if t1 == t3 {
		t.Error("two files share a tracker")
	}
	t1.Close()
	t2.Close()
	t3.Close()
	trackers.mu.Lock()
	_, left1 := trackers.m[t1.id]
	_, left3 := trackers.m[t3.id]
	trackers.mu.Unlock()
	if left1 || left3 {
		t.Error("a tracker is left after every Close")
	}
}

// TestTrackerClaims: a claim waits for an overlapping one and not for a
// disjoint one; claims count for readers, holds do not, and settle waits
// only for claims.
func TestTrackerClaims(t *testing.T) {
	tr := openTracked(t, filepath.Join(t.TempDir(), "f"))
	defer tr.Close()
	r1 := tr.Claim(0, 4096)
	if tr.begun.Load() != 1 || tr.active.Load() != 1 {
		t.Fatalf("after a claim: begun %d active %d", tr.begun.Load(), tr.active.Load())
	}
	r2 := tr.Claim(4096, 8192) // disjoint: no wait
	got, done := make(chan struct{}), make(chan struct{})
	go func() {
		release := tr.Claim(4000, 4100)
		close(got)
		release()
		close(done)
	}()
	for tr.Waiting() == 0 {
		select {
		case <-got:
			t.Fatal("an overlapping claim was granted while another was held")
		case <-time.After(time.Millisecond):
		}
	}
	r1()
	select {
	case <-got:
		t.Fatal("an overlapping claim was granted while another was held")
	default:
	}
	r2()
	<-done
	if tr.active.Load() != 0 || tr.begun.Load() != 3 {
		t.Fatalf("after the claims: begun %d active %d", tr.begun.Load(), tr.active.Load())
	}
	h := tr.Hold(0, WholeFile)
	if tr.begun.Load() != 3 || tr.active.Load() != 0 {
		t.Errorf("a hold counted as a claim: begun %d active %d", tr.begun.Load(), tr.active.Load())
	}
	if tr.settle(0, 1<<20) {
		t.Error("settle waited for a hold")
	}
	granted := make(chan struct{})
	go func() {
		release := tr.Claim(1<<20, 2<<20)
		close(granted)
		release()
	}()
	for tr.Waiting() == 0 {
		select {
		case <-granted:
			t.Fatal("a claim was granted inside a hold")
		case <-time.After(time.Millisecond):
		}
	}
	h()
	<-granted
}
