package conformance

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
)

// memFile is a correct in-memory implementation used to test the suite
// itself; the broken variants below must be caught.
type memFile struct {
	mu       sync.RWMutex
	b        []byte
	align    int64
	readOnly bool
	// durable is what survives a crash: b as of the last Sync. With
	// lateFlush (a broken file), Sync leaves out the last write, as if
	// its flush were reordered after the next one.
	durable   []byte
	lateFlush bool
	last      [2]int64
}

func (m *memFile) check(off, n int64) error {
	if off%m.align != 0 || n%m.align != 0 {
		return errors.New("unaligned")
	}
	if off < 0 || off+n > int64(len(m.b)) {
		return core.ErrOutOfRange
	}
	return nil
}

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	if m.readOnly {
		return 0, core.ErrReadOnly
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	m.last = [2]int64{off, int64(len(p))}
	return copy(m.b[off:], p), nil
}

func (m *memFile) Discard(off, n int64) error {
	if m.readOnly {
		return core.ErrReadOnly
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(off, n); err != nil {
		return err
	}
	clear(m.b[off : off+n])
	return nil
}

func (m *memFile) WriteZeroes(off, n int64) error { return m.Discard(off, n) }

func (m *memFile) BlockStatus(off, n int64) ([]core.Extent, error) {
	return []core.Extent{{Offset: off, Length: n}}, nil
}

func (m *memFile) Size() int64 { return int64(len(m.b)) }
func (m *memFile) Sync() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := append([]byte(nil), m.durable...)
	m.durable = append(m.durable[:0], m.b...)
	if m.lateFlush && len(prev) == len(m.b) {
		off, n := m.last[0], m.last[1]
		copy(m.durable[off:off+n], prev[off:off+n])
	}
	return nil
}

// crash drops what was not made durable.
func (m *memFile) crash() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.durable == nil {
		clear(m.b)
		return
	}
	copy(m.b, m.durable)
}
func (m *memFile) Close() error { return nil }

type memDevice struct {
	f    core.File
	wrap func(core.File) core.File
}

func (d *memDevice) File() core.File { return d.f }
func (d *memDevice) Reopen() error   { return nil }
func (d *memDevice) Close() error    { return nil }
func (d *memDevice) Commit() error   { return d.f.Sync() }

// Crash implements Crasher.
func (d *memDevice) Crash() error {
	switch f := d.f.(type) {
	case *memFile:
		f.crash()
	case *flipFile:
		f.memFile.crash()
	case dropDiscard:
		f.memFile.crash()
	case acceptPastEnd:
		f.memFile.crash()
	}
	return nil
}

type memKind struct {
	name string
	wrap func(core.File) core.File
}

func (k memKind) Name() string     { return k.name }
func (k memKind) Alignment() int64 { return 512 }
func (k memKind) Create(dir string, vsize int64) (Device, error) {
	var f core.File = &memFile{b: make([]byte, vsize), align: 512}
	if k.wrap != nil {
		f = k.wrap(f)
	}
	return &memDevice{f: f}, nil
}

func (k memKind) Build(dir string, m *Model) (core.File, error) {
	var f core.File = &memFile{b: append([]byte(nil), m.Bytes()...), align: 512, readOnly: true}
	if k.wrap != nil {
		f = k.wrap(f)
	}
	return f, nil
}

// flipFile flips one byte of the reads that cover a given device offset, once
// the device has seen some writes.
type flipFile struct {
	*memFile
	at     int64
	writes atomic.Int64
}

func (f *flipFile) WriteAt(p []byte, off int64) (int, error) {
	f.writes.Add(1)
	return f.memFile.WriteAt(p, off)
}

func (f *flipFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.memFile.ReadAt(p, off)
	if f.writes.Load() > 50 && off <= f.at && f.at < off+int64(n) {
		p[f.at-off] ^= 0x40
	}
	return n, err
}

// dropDiscard checks discards as a correct file does, then acknowledges
// them without doing them.
type dropDiscard struct{ *memFile }

func (d dropDiscard) Discard(off, n int64) error { return d.check(off, n) }

// acceptPastEnd lets writes past the end succeed (and silently drops them).
type acceptPastEnd struct{ *memFile }

func (a acceptPastEnd) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > a.Size() {
		return len(p), nil
	}
	return a.memFile.WriteAt(p, off)
}

// writableROFile claims to be read-only but accepts writes.
type writableRO struct{ *memFile }

func (w writableRO) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }

func TestSuitePassesCorrectImplementation(t *testing.T) {
	ops := 3000
	if testing.Short() {
		ops = 1000
	}
	_, err := RunWritable(memKind{name: "memory"}, t.TempDir(), WritableOptions{Seed: 1, Ops: ops, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if err := RunReadOnly(memKind{name: "memory-ro"}, t.TempDir(), ReadOnlyOptions{Seed: 2, Logf: t.Logf}); err != nil {
		t.Fatal(err)
	}
}

// The suite must be able to fail: deliberately broken implementations are
// caught, and the failure names the cell and the operation.
func TestSuiteCatchesBrokenImplementations(t *testing.T) {
	cases := []struct {
		name    string
		wrap    func(core.File) core.File
		wantOp  string
		wantMsg string
	}{
		{"flip-byte", func(f core.File) core.File { return &flipFile{memFile: f.(*memFile), at: 3 << 20} }, "", "read back differs at device offset 3145728"},
		{"reorder-flush", func(f core.File) core.File { f.(*memFile).lateFlush = true; return f }, "crash", "read back differs"},
		{"drop-discard", func(f core.File) core.File { return dropDiscard{f.(*memFile)} }, "", "read back differs"},
		{"accept-past-end", func(f core.File) core.File { return acceptPastEnd{f.(*memFile)} }, "write-past-end", "succeeded, want an error"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cell := "broken/" + c.name
			_, err := RunWritable(memKind{name: cell, wrap: c.wrap}, t.TempDir(), WritableOptions{Seed: 7, Ops: 5000})
			var f *Failure
			if !errors.As(err, &f) {
				t.Fatalf("suite did not catch %s: %v", c.name, err)
			}
			msg := err.Error()
			if f.Cell != cell || !strings.Contains(msg, "cell "+cell) || !strings.Contains(msg, fmt.Sprintf("op #%d ", f.Step)) ||
				!strings.Contains(msg, SeedEnv+"=7") || !strings.Contains(f.Op, c.wantOp) || !strings.Contains(f.Msg, c.wantMsg) {
				t.Fatalf("failure does not name the cell, the operation and the seed: %v", err)
			}
			t.Logf("caught as expected: %v", err)
		})
	}
	t.Run("read-only-accepts-writes", func(t *testing.T) {
		err := RunReadOnly(memKind{name: "broken/ro", wrap: func(f core.File) core.File { return writableRO{f.(*memFile)} }},
			t.TempDir(), ReadOnlyOptions{Seed: 3})
		if !isFailure(err) || !strings.Contains(err.Error(), "ErrReadOnly") {
			t.Fatalf("suite did not catch a read-only file accepting writes: %v", err)
		}
	})
	t.Run("read-only-flip", func(t *testing.T) {
		err := RunReadOnly(memKind{name: "broken/ro-flip", wrap: func(f core.File) core.File {
			ff := &flipFile{memFile: f.(*memFile), at: 5 << 20}
			ff.writes.Store(100)
			return ff
		}}, t.TempDir(), ReadOnlyOptions{Seed: 4})
		if !isFailure(err) || !strings.Contains(err.Error(), "cell broken/ro-flip") {
			t.Fatalf("suite did not catch a flipped byte: %v", err)
		}
	})
}

func TestSeedFromEnvironment(t *testing.T) {
	t.Setenv(SeedEnv, "12345")
	if s, err := Seed(); err != nil || s != 12345 {
		t.Fatalf("Seed() = %d, %v", s, err)
	}
	t.Setenv(SeedEnv, "x")
	if _, err := Seed(); err == nil {
		t.Fatal("bad seed accepted")
	}
	os.Unsetenv(SeedEnv)
}
