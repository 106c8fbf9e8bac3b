package conformance

import (
	"errors"
	"io"
	"strconv"
	"sync"

	"github.com/overlaybd-go/overlaybd/core"
)

// parallel writes four disjoint ranges from four goroutines at once while
// two more goroutines read other ranges; each writer then reads its range
// back. The model is updated once all are done, so the outcome does not
// depend on the interleaving.
func (r *runner) parallel(f core.File) error {
	type span struct {
		off, n int64
		data   []byte
	}
	var spans []span
	overlaps := func(off, n int64) bool {
		for _, s := range spans {
			if off < s.off+s.n && s.off < off+n {
				return true
			}
		}
		return false
	}
	for tries := 0; len(spans) < 4 && tries < 32; tries++ {
		off, n := r.span()
		n = min(n, 256<<10)
		if overlaps(off, n) {
			continue
		}
		spans = append(spans, span{off: off, n: n, data: append([]byte(nil), r.data(n)...)})
	}
	var readers []span
	for len(readers) < 2 {
		off, n := r.span()
		n = min(n, 256<<10)
		if overlaps(off, n) {
			continue
		}
		readers = append(readers, span{off: off, n: n, data: append([]byte(nil), r.model.Read(off, n)...)})
	}
	desc := ""
	for _, s := range spans {
		desc += " w" + strconv.FormatInt(s.off, 10) + "+" + strconv.FormatInt(s.n, 10)
	}
	for _, s := range readers {
		desc += " r" + strconv.FormatInt(s.off, 10) + "+" + strconv.FormatInt(s.n, 10)
	}
	r.begin("parallel(%s)", desc[1:])

	errs := make([]error, len(spans)+len(readers))
	var wg sync.WaitGroup
	for i, s := range spans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if n, err := f.WriteAt(s.data, s.off); err != nil || n != len(s.data) {
				errs[i] = r.fail("concurrent WriteAt(off=%d) returned %d, %v", s.off, n, err)
				return
			}
			got := make([]byte, s.n)
			if n, err := f.ReadAt(got, s.off); n != len(got) || (err != nil && err != io.EOF) {
				errs[i] = r.fail("concurrent ReadAt(off=%d) returned %d, %v", s.off, n, err)
				return
			}
			if d := firstDiff(got, s.data); d >= 0 {
				errs[i] = r.fail("concurrent write at %d reads back different at device offset %d", s.off, s.off+int64(d))
			}
		}()
	}
	for i, s := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := make([]byte, s.n)
			if n, err := f.ReadAt(got, s.off); n != len(got) || (err != nil && err != io.EOF) {
				errs[len(spans)+i] = r.fail("concurrent ReadAt(off=%d) returned %d, %v", s.off, n, err)
				return
			}
			if d := firstDiff(got, s.data); d >= 0 {
				errs[len(spans)+i] = r.fail("read during concurrent writes differs at device offset %d", s.off+int64(d))
			}
		}()
	}
	wg.Wait()
	for _, s := range spans {
		r.write(s.data, s.off)
		r.markDirty(s.off, s.n)
	}
	return errors.Join(errs...)
}
