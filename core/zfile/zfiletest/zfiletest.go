// Package zfiletest provides what tests of ZFile readers and writers share:
// the generator of the plain input of the zfile/ test vectors and an
// in-memory core.File, which the tests of LSMT layers use too.
package zfiletest

import (
	"fmt"
	"io"
	"sync"

	"github.com/overlaybd-go/overlaybd/core"
)

// PlainSize is the size of the zfile/ vectors' plain input.
const PlainSize = 1847353

// PlainSHA256 is the sha256 of the plain input.
const PlainSHA256 = "4e960ca613c73e80cc02e22f244ca7eabb99e3bacdc010da732019b0078db410"

// Plain returns the plain input of the zfile/ vectors (gen_plain.py):
// [0, 512 KiB) the multiplicative pattern, [512 KiB, 1 MiB) zeros,
// [1 MiB, 1.5 MiB) numbered text lines, then xorshift32 bytes.
func Plain() []byte {
	const (
		k512 = 512 << 10
		m1   = 1 << 20
		m15  = 3 << 19
	)
	b := make([]byte, 0, PlainSize)
	for i := 0; i < k512; i++ {
		b = append(b, byte((uint32(i)*2654435761)>>24))
	}
	b = append(b, make([]byte, m1-k512)...)
	for n := 0; len(b) < m15; n++ {
		b = fmt.Appendf(b, "overlaybd zfile test vector line %08d\n", n)
	}
	b = b[:m15]
	s := uint32(0x9E3779B9)
	for len(b) < PlainSize {
		s ^= s << 13
		s ^= s >> 17
		s ^= s << 5
		b = append(b, byte(s))
	}
	return b
}

// Xorshift returns n incompressible bytes from xorshift32 seeded with seed.
func Xorshift(seed uint32, n int) []byte {
	b := make([]byte, n)
	s := seed | 1
	for i := range b {
		s ^= s << 13
		s ^= s >> 17
		s ^= s << 5
		b[i] = byte(s)
	}
	return b
}

// MemFile is a growable in-memory core.File, safe for concurrent use. It
// has Truncate (which LSMT's writable layers use) and no Fd.
type MemFile struct {
	mu     sync.RWMutex
	data   []byte
	closed bool
}

// NewMemFile returns a MemFile holding a copy of b.
func NewMemFile(b []byte) *MemFile { return &MemFile{data: append([]byte(nil), b...)} }

// Bytes returns a copy of the contents.
func (m *MemFile) Bytes() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]byte(nil), m.data...)
}

// ReadAt implements io.ReaderAt.
func (m *MemFile) ReadAt(p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return 0, core.ErrClosed
	}
	if off < 0 {
		return 0, core.ErrOutOfRange
	}
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt implements io.WriterAt, growing the file as needed.
func (m *MemFile) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, core.ErrClosed
	}
	if off < 0 {
		return 0, core.ErrOutOfRange
	}
	if end := off + int64(len(p)); end > int64(len(m.data)) {
		m.data = append(m.data, make([]byte, end-int64(len(m.data)))...)
	}
	return copy(m.data[off:], p), nil
}

// Truncate changes the size to n, dropping the bytes past it or adding
// zeros.
func (m *MemFile) Truncate(n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return core.ErrClosed
	}
	if n < 0 {
		return core.ErrOutOfRange
	}
	if n <= int64(len(m.data)) {
		m.data = m.data[:n]
	} else {
		m.data = append(m.data, make([]byte, n-int64(len(m.data)))...)
	}
	return nil
}

// Size implements core.File.
func (m *MemFile) Size() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return int64(len(m.data))
}

// Sync implements core.File.
func (m *MemFile) Sync() error { return nil }

// Close implements core.File.
func (m *MemFile) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}
