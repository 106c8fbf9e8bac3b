package matrix

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
)

// harness gives the in-process test registry (internal/registrytest, which
// takes a testing.TB) what it needs outside a test: temporary folders,
// cleanups run when the cell ends, and fatal errors that end the cell with
// an error instead of the process. Only the methods below are provided; the
// embedded interface is nil.
type harness struct {
	testing.TB
	name string

	mu       sync.Mutex
	cleanups []func()
	dirs     []string
	failed   bool
}

// fatal is the panic value of Fatal, recovered by guard.
type fatal struct{ msg string }

func newHarness(name string) *harness { return &harness{name: name} }

func (h *harness) Helper()      {}
func (h *harness) Name() string { return h.name }

func (h *harness) Cleanup(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cleanups = append(h.cleanups, f)
}

func (h *harness) TempDir() string {
	d, err := os.MkdirTemp("", "overlaybd-conformance-registry-")
	if err != nil {
		h.Fatal(err)
	}
	h.mu.Lock()
	h.dirs = append(h.dirs, d)
	h.mu.Unlock()
	return d
}

func (h *harness) Fatal(args ...any) { h.fail(fmt.Sprint(args...)) }

func (h *harness) Fatalf(format string, args ...any) { h.fail(fmt.Sprintf(format, args...)) }

func (h *harness) Error(args ...any) { h.Fatal(args...) }

func (h *harness) Errorf(format string, args ...any) { h.Fatalf(format, args...) }

func (h *harness) Log(...any)               {}
func (h *harness) Logf(string, ...any)      {}
func (h *harness) Failed() bool             { h.mu.Lock(); defer h.mu.Unlock(); return h.failed }
func (h *harness) Skip(args ...any)         { h.Fatal(append([]any{"skip: "}, args...)...) }
func (h *harness) Skipf(f string, a ...any) { h.Fatalf("skip: "+f, a...) }

func (h *harness) fail(msg string) {
	h.mu.Lock()
	h.failed = true
	h.mu.Unlock()
	panic(fatal{msg})
}

// guard runs f and turns a Fatal inside it into an error.
func (h *harness) guard(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			ft, ok := r.(fatal)
			if !ok {
				panic(r)
			}
			err = errors.New(ft.msg)
		}
	}()
	f()
	return nil
}

// close runs the cleanups, last registered first, and removes the
// temporary folders.
func (h *harness) close() {
	h.mu.Lock()
	cl, dirs := slices.Clone(h.cleanups), slices.Clone(h.dirs)
	h.cleanups, h.dirs = nil, nil
	h.mu.Unlock()
	for i := len(cl) - 1; i >= 0; i-- {
		cl[i]()
	}
	for _, d := range dirs {
		os.RemoveAll(d)
	}
}
