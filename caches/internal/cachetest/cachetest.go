// Package cachetest holds what the cache implementations' tests share: an
// in-memory core.Source that counts what is fetched from it and can
// misbehave, and checks every core.Cache must pass.
package cachetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/core"
)

// Data returns n deterministic pseudo-random bytes for seed.
func Data(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed*0x9e3779b97f4a7c15+1))
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// Source is an in-memory core.Source keyed by its sha256 digest.
type Source struct {
	data []byte
	key  string
	dir  string
	// Reads and Bytes count ReadAtContext calls and bytes returned.
	Reads, Bytes atomic.Int64
	// Delay is slept before every read (for crash tests).
	Delay time.Duration
	// Corrupt, when set, flips a byte of every read that covers offset
	// Corrupt-1 (1-based so that the zero value means off).
	Corrupt atomic.Int64
	// Fail, when set, makes reads fail.
	Fail atomic.Bool
	mu   sync.Mutex
}

// NewSource returns a source over data.
func NewSource(data []byte) *Source {
	s := sha256.Sum256(data)
	return &Source{data: data, key: "sha256:" + hex.EncodeToString(s[:])}
}

// WithDir sets the layer directory the source reports (core.LayerDirSource).
func (s *Source) WithDir(dir string) *Source { s.dir = dir; return s }

// LayerDir implements core.LayerDirSource.
func (s *Source) LayerDir() string { return s.dir }

// Data returns the source's content.
func (s *Source) Data() []byte { return s.data }

// Size implements core.Source.
func (s *Source) Size() int64 { return int64(len(s.data)) }

// Key implements core.Source.
func (s *Source) Key() string { return s.key }

// ReadAtContext implements core.Source.
func (s *Source) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if s.Delay > 0 {
		select {
		case <-time.After(s.Delay):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if s.Fail.Load() {
		return 0, errors.New("source failure (injected)")
	}
	s.Reads.Add(1)
	if off >= int64(len(s.data)) {
		return 0, io.EOF
	}
	n := copy(p, s.data[off:])
	s.Bytes.Add(int64(n))
	if c := s.Corrupt.Load() - 1; c >= off && c < off+int64(n) {
		p[c-off] ^= 0x5a
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// DirBytes returns the bytes the regular files under dir occupy on disk.
func DirBytes(t testing.TB, dir string) int64 {
	var total int64
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			total += allocated(p)
		}
		return nil
	})
	return total
}

// ReadAll reads f in chunks of n bytes at random order and compares.
func Check(t testing.TB, f core.File, want []byte, reads int, maxLen int, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	for i := 0; i < reads; i++ {
		off := r.Int64N(int64(len(want)))
		n := 1 + r.IntN(maxLen)
		p := make([]byte, n)
		k, err := f.ReadAt(p, off)
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("read %d@%d: %v", n, off, err)
		}
		exp := want[off:min(off+int64(n), int64(len(want)))]
		if k != len(exp) || !bytes.Equal(p[:k], exp) {
			t.Fatalf("read %d@%d: %d bytes, content differs", n, off, k)
		}
	}
}

// Suite runs the checks every cache passes. open makes a cache over dir
// with the given capacity in bytes (0: unbounded).
func Suite(t *testing.T, open func(t testing.TB, dir string, capacity int64) core.Cache) {
	t.Run("correct-concurrent", func(t *testing.T) {
		c := open(t, t.TempDir(), 0)
		defer c.Close()
		src := NewSource(Data(3<<20+1234, 11)).WithDir(t.TempDir())
		f, err := c.Open(context.Background(), src)
		if err != nil {
			t.Fatal(err)
		}
		if f.Size() != src.Size() {
			t.Fatalf("size %d", f.Size())
		}
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				Check(t, f, src.Data(), 200, 70000, uint64(g))
			}()
		}
		wg.Wait()
		if _, err := f.WriteAt([]byte{1}, 0); !errors.Is(err, core.ErrReadOnly) {
			t.Fatalf("write: %v", err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		st := c.Stats()
		if st.ServedBytes == 0 || st.FetchedBytes == 0 || st.Misses == 0 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("warm-after-restart", func(t *testing.T) {
		dir, ldir := t.TempDir(), t.TempDir()
		data := Data(1<<20, 12)
		c := open(t, dir, 0)
		src := NewSource(data).WithDir(ldir)
		f, err := c.Open(context.Background(), src)
		if err != nil {
			t.Fatal(err)
		}
		Check(t, f, data, 50, 100000, 1)
		p := make([]byte, len(data))
		f.ReadAt(p, 0)
		f.Close()
		c.Close()
		c = open(t, dir, 0)
		defer c.Close()
		src2 := NewSource(data).WithDir(ldir)
		f, err = c.Open(context.Background(), src2)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		Check(t, f, data, 50, 100000, 2)
		if src2.Bytes.Load() != 0 {
			t.Fatalf("fully cached blob fetched %d bytes again after restart", src2.Bytes.Load())
		}
	})
	t.Run("bound", func(t *testing.T) {
		const capacity = 3 << 20
		dir := t.TempDir()
		c := open(t, dir, capacity)
		defer c.Close()
		for i := 0; i < 8; i++ {
			data := Data(1<<20+i*4096, uint64(100+i))
			src := NewSource(data).WithDir(t.TempDir())
			f, err := c.Open(context.Background(), src)
			if err != nil {
				t.Fatal(err)
			}
			Check(t, f, data, 40, 200000, uint64(i))
			f.Close()
			if st := c.Stats(); st.UsedBytes > capacity {
				t.Fatalf("after blob %d: used %d > capacity %d", i, st.UsedBytes, capacity)
			}
			if d := DirBytes(t, dir); d > capacity {
				t.Fatalf("after blob %d: %d bytes on disk > capacity %d", i, d, capacity)
			}
		}
		if c.Stats().Evictions == 0 {
			t.Fatal("no evictions under a workload larger than the bound")
		}
	})
	t.Run("source-errors-are-not-cached", func(t *testing.T) {
		c := open(t, t.TempDir(), 0)
		defer c.Close()
		data := Data(600000, 13)
		src := NewSource(data).WithDir(t.TempDir())
		f, err := c.Open(context.Background(), src)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		src.Fail.Store(true)
		if _, err := f.ReadAt(make([]byte, 100), 5000); err == nil {
			t.Fatal("read succeeded while the source fails")
		}
		src.Fail.Store(false)
		Check(t, f, data, 30, 50000, 3)
	})
	t.Run("invalidate-refetches", func(t *testing.T) {
		c := open(t, t.TempDir(), 0)
		defer c.Close()
		data := Data(1<<20, 14)
		src := NewSource(data).WithDir(t.TempDir())
		f, err := c.Open(context.Background(), src)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		inv, ok := f.(core.Invalidator)
		if !ok {
			t.Skip("cache files do not implement core.Invalidator")
		}
		// A bad byte comes from the source once; the layer above notices
		// and invalidates; the next read is correct.
		src.Corrupt.Store(300001)
		p := make([]byte, 4096)
		f.ReadAt(p, 299008)
		if bytes.Equal(p, data[299008:299008+4096]) {
			t.Fatal("corruption not injected")
		}
		src.Corrupt.Store(0)
		if err := inv.Invalidate(299008, 4096); err != nil {
			t.Fatal(err)
		}
		if _, err := f.ReadAt(p, 299008); err != nil || !bytes.Equal(p, data[299008:299008+4096]) {
			t.Fatalf("after invalidate: %v, equal=%v", err, bytes.Equal(p, data[299008:299008+4096]))
		}
	})
}

// Must fails the test on err.
func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var _ = fmt.Sprint
