package download

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/caches/internal/cachetest"
)

// The tests below stop a fill after it has taken its span and before it
// writes the data, with the span in the state a buffered write leaves it in
// while the kernel copies the data: the file system already reports the
// span as data (SEEK_DATA), but its pages still read as zeros. (A write into
// a large folio does that: the whole folio becomes data, zero-filled, when
// the first page of it is copied.) The filling hook puts the span in that
// state by writing zeros over it, then holds the fill there while another
// reader reads the same span. That reader must either wait for the fill or
// return the source's bytes; returning while the fill is held means it
// served the zeros.

// fillRace is one cold download file, its source's bytes, and the hooks'
// signals.
type fillRace struct {
	t    *testing.T
	f    *File
	data []byte

	held     chan struct{} // closed when the fill is held (span reads as zeros)
	release  chan struct{} // closed to let the fill write its data
	waiting  chan struct{} // closed when a read waits for a fill in flight
	holdOnce sync.Once
	waitOnce sync.Once
}

const raceRefill = 1 << 20

// newFillRace opens a cold download file whose first fill is held after
// leave(f, s0, s1) has put its span in the state the test wants readers to
// find.
func newFillRace(t *testing.T, leave func(r *fillRace, s0, s1 int64) error) *fillRace {
	data := cachetest.Data(4*raceRefill, 96)
	c, err := New(Options{RefillSize: raceRefill})
	if err != nil {
		t.Fatal(err)
	}
	src := cachetest.NewSource(data).WithDir(t.TempDir())
	cf, err := c.Open(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	r := &fillRace{t: t, f: cf.(*File), data: data,
		held: make(chan struct{}), release: make(chan struct{}), waiting: make(chan struct{})}
	hooks.filling = func(f *File, s0, s1 int64) {
		if f != r.f {
			return
		}
		r.holdOnce.Do(func() {
			if err := leave(r, s0, s1); err != nil {
				t.Errorf("prepare the held span: %v", err)
			}
			close(r.held)
			<-r.release
		})
	}
	hooks.waiting = func(t *Tracker) {
		if t == r.f.t {
			r.waitOnce.Do(func() { close(r.waiting) })
		}
	}
	t.Cleanup(func() {
		hooks.probing, hooks.filling, hooks.waiting = nil, nil, nil
		r.letGo()
		cf.Close()
		c.Close()
	})
	return r
}

// allocated leaves the span as a write into a large folio does before it
// has copied the data: data to SEEK_DATA, zeros to reads.
func allocated(r *fillRace, s0, s1 int64) error {
	_, err := r.f.fh.WriteAt(make([]byte, s1-s0), s0)
	return err
}

// letGo lets the held fill write its data.
func (r *fillRace) letGo() {
	select {
	case <-r.release:
	default:
		close(r.release)
	}
}

// read starts a read of n bytes at off; its result arrives on the channel.
func (r *fillRace) read(off int64, n int) <-chan error {
	done := make(chan error, 1)
	go func() {
		p := make([]byte, n)
		if _, err := r.f.ReadAt(p, off); err != nil {
			done <- fmt.Errorf("read at %d: %w", off, err)
			return
		}
		if i := firstDiff(p, r.data[off:]); i >= 0 {
			done <- fmt.Errorf("read at %d returned %#02x at %d, the source has %#02x", off, p[i], off+int64(i), r.data[off+int64(i)])
			return
		}
		done <- nil
	}()
	return done
}

func firstDiff(got, want []byte) int {
	if bytes.Equal(got, want[:len(got)]) {
		return -1
	}
	for i := range got {
		if got[i] != want[i] {
			return i
		}
	}
	return -1
}

// settleOrServe waits until the second reader either waits for the held
// fill (right) or returns while the fill is held (it can only have served
// the span's zeros), then lets the fill go and checks both reads.
func (r *fillRace) settleOrServe(filler, reader <-chan error) {
	t := r.t
	select {
	case err := <-reader:
		if err == nil {
			err = fmt.Errorf("returned the source's bytes")
		}
		t.Errorf("a read of a span whose fill was held (its span not yet written) returned without waiting: %v", err)
		r.letGo()
		if err := <-filler; err != nil {
			t.Error(err)
		}
		return
	case <-r.waiting:
	case <-time.After(time.Minute):
		t.Fatal("the second read neither returned nor waited for the held fill")
	}
	r.letGo()
	for _, ch := range []<-chan error{filler, reader} {
		if err := <-ch; err != nil {
			t.Error(err)
		}
	}
}

// TestReadWaitsForHeldFill: a read arrives while a fill of its span is held
// between allocating the span and writing it.
func TestReadWaitsForHeldFill(t *testing.T) {
	r := newFillRace(t, allocated)
	filler := r.read(0, 64<<10)
	<-r.held
	reader := r.read(512<<10, 64<<10)
	r.settleOrServe(filler, reader)
}

// TestFillStartsDuringProbe: a read has found no fill in flight over its
// span and is about to ask the file system for holes when a fill of the
// span starts and is held after allocating it.
func TestFillStartsDuringProbe(t *testing.T) {
	r := newFillRace(t, allocated)
	probing := make(chan struct{})
	probe := make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-probe:
		default:
			close(probe)
		}
	})
	var calls atomic.Int32
	hooks.probing = func(f *File) {
		if f == r.f && calls.Add(1) == 1 {
			close(probing)
			<-probe
		}
	}
	reader := r.read(512<<10, 64<<10)
	<-probing // the reader has settled and not yet probed
	filler := r.read(0, 64<<10)
	<-r.held
	close(probe)
	r.settleOrServe(filler, reader)
}

// TestReadOfPartlyWrittenPage: a fill is held while it has written its span
// up to the middle of a page (a buffered write copies page by page, and a
// reader of the page cache may see a page half copied). A read that ends in
// that page finds data in every page it touches, yet part of it is still
// zeros: it must not trust its first read.
func TestReadOfPartlyWrittenPage(t *testing.T) {
	const torn = 128<<10 + 1024 // written up to here
	r := newFillRace(t, func(r *fillRace, s0, s1 int64) error {
		_, err := r.f.fh.WriteAt(r.data[s0:torn], s0)
		return err
	})
	filler := r.read(0, 4096)
	<-r.held
	reader := r.read(64<<10, torn+1024-64<<10)
	r.settleOrServe(filler, reader)
}
