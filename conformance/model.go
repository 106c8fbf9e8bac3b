package conformance

import "bytes"

// Model is the reference a File is compared with: a plain byte array of the
// virtual size that starts as zeros.
type Model struct {
	buf []byte
}

// NewModel returns a model of size bytes, all zero.
func NewModel(size int64) *Model { return &Model{buf: make([]byte, size)} }

// Size returns the virtual size.
func (m *Model) Size() int64 { return int64(len(m.buf)) }

// Bytes returns the content; the slice is shared with the model.
func (m *Model) Bytes() []byte { return m.buf }

// Write copies p to off. The range must be inside the model.
func (m *Model) Write(p []byte, off int64) { copy(m.buf[off:], p) }

// Zero zeroes [off, off+n) (a discard or a write-zeroes). The range must be
// inside the model.
func (m *Model) Zero(off, n int64) { clear(m.buf[off : off+n]) }

// Read returns the expected content of [off, off+n) clipped to the size.
func (m *Model) Read(off, n int64) []byte {
	if off >= m.Size() {
		return nil
	}
	return m.buf[off:min(off+n, m.Size())]
}

// IsZero reports whether [off, off+n) holds only zeros.
func (m *Model) IsZero(off, n int64) bool {
	b := m.Read(off, n)
	for len(b) > 0 {
		k := min(len(b), len(zeros))
		if !bytes.Equal(b[:k], zeros[:k]) {
			return false
		}
		b = b[k:]
	}
	return true
}

var zeros = make([]byte, 64<<10)

// firstDiff returns the index of the first byte where a and b differ (or the
// length of the shorter), or -1 when they are equal.
func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}
