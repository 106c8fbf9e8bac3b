package logging

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
)

// MaxRotateNum is the largest number of rotated files a Rotator keeps, the
// cap upstream's logging library applies.
const MaxRotateNum = 30

// Rotator is an io.WriteCloser appending to a file that it rotates by size:
// when a write would make the file exceed the limit, <path>.N-1 is renamed to
// <path>.N, …, <path> to <path>.1, and a new <path> is created. Files beyond
// the number kept are removed. Rotation renames; it never truncates data that
// was written. A single write larger than the limit goes whole into a fresh
// file. Rotator is safe for concurrent use; each Write lands whole in one
// file.
type Rotator struct {
	path  string
	limit int64
	keep  int

	mu   sync.Mutex
	f    *os.File
	size int64
	err  error // of the last rotation
}

// OpenRotator opens (creating, appending to) path, rotating it when it would
// grow beyond limit bytes and keeping keep rotated files (0 to
// MaxRotateNum).
func OpenRotator(path string, limit int64, keep int) (*Rotator, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("log file %s: rotation size %d must be positive", path, limit)
	}
	if keep < 0 || keep > MaxRotateNum {
		return nil, fmt.Errorf("log file %s: rotated files to keep %d out of range 0..%d", path, keep, MaxRotateNum)
	}
	r := &Rotator{path: path, limit: limit, keep: keep}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Rotator) open() error {
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat log file: %w", err)
	}
	r.f, r.size = f, st.Size()
	return nil
}

// Path returns the path of the current file.
func (r *Rotator) Path() string { return r.path }

// Write appends p to the current file, rotating first when p would take the
// file beyond the limit.
func (r *Rotator) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return 0, os.ErrClosed
	}
	if r.size > 0 && r.size+int64(len(p)) > r.limit {
		// A failed rotation does not lose the line: it goes to the
		// current file, and Err reports the failure.
		r.err = r.rotate()
		if r.f == nil {
			return 0, r.err
		}
	}
	n, err := r.f.Write(p)
	r.size += int64(n)
	return n, err
}

// Err returns the error of the last rotation, nil when it succeeded.
func (r *Rotator) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Rotate rotates the files now, whatever the current size.
func (r *Rotator) Rotate() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return os.ErrClosed
	}
	return r.rotate()
}

func (r *Rotator) rotate() error {
	cerr := r.f.Close()
	r.f = nil
	if err := r.shift(); err != nil || cerr != nil {
		// Keep logging into the current file whatever went wrong.
		if oerr := r.open(); oerr != nil {
			return errors.Join(cerr, err, oerr)
		}
		return errors.Join(cerr, err)
	}
	return r.open()
}

// shift renames <path>.N-1 → <path>.N … <path> → <path>.1, dropping the
// oldest.
func (r *Rotator) shift() error {
	name := func(i int) string {
		if i == 0 {
			return r.path
		}
		return r.path + "." + strconv.Itoa(i)
	}
	// The oldest kept file is dropped; then every file moves up by one.
	if err := os.Remove(name(r.keep)); err != nil && !os.IsNotExist(err) && r.keep > 0 {
		return fmt.Errorf("rotate log file: %w", err)
	}
	if r.keep == 0 {
		if err := os.Remove(r.path); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("rotate log file: %w", err)
		}
	}
	for i := r.keep - 1; i >= 0; i-- {
		if err := os.Rename(name(i), name(i+1)); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("rotate log file: %w", err)
		}
	}
	return nil
}

// Close closes the current file.
func (r *Rotator) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}
