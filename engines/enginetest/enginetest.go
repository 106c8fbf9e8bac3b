// Package enginetest is the conformance suite of IO engines: every engine
// runs the same checks against a reference model of the file — random
// reads and writes of many sizes, offsets and buffer alignments, batches,
// EOF and short reads, concurrent readers and writers, fsync, close with IO
// in flight — with O_DIRECT on and off, and its own counters are checked
// against what the test did (including, for asynchronous engines, the
// queue depth the kernel really saw). The project-wide matrix in
// conformance/ runs it too.
package enginetest

import (
	"bytes"
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
	"go.uber.org/goleak"
)

// Config describes the engine under test.
type Config struct {
	// New returns a fresh engine made with cfg; the suite closes it.
	New func(t testing.TB, cfg core.EngineConfig) core.Engine
	// MinDepth, when positive, is the number of requests that a batch of
	// 32 O_DIRECT reads must have had in the kernel at once, according to
	// the engine's MaxInFlight counter.
	MinDepth int
	// Dir is where test files are made (default: t.TempDir()). It must
	// accept O_DIRECT for the direct checks to mean anything.
	Dir string
	// Seed makes the random workload reproducible (0: a fixed default).
	Seed uint64
	// Name, when set, is the engine name New is expected to give; an
	// engine that reports another name fell back (e.g. to psync) and is
	// not held to MinDepth.
	Name string
}

// minDepth is the depth e's engine must reach.
func (e *env) minDepth(t *testing.T) int {
	if e.cfg.Name != "" && e.eng.Name() != e.cfg.Name {
		t.Logf("engine %s runs as %s here: depth not checked", e.cfg.Name, e.eng.Name())
		return 0
	}
	return e.cfg.MinDepth
}

// Run runs the whole suite as subtests of t.
func Run(t *testing.T, cfg Config) {
	for _, direct := range []bool{false, true} {
		mode := "buffered"
		if direct {
			mode = "direct"
		}
		t.Run(mode, func(t *testing.T) {
			for _, c := range []struct {
				name string
				fn   func(*testing.T, *env)
			}{
				{"RandomIO", testRandomIO},
				{"Batch", testBatch},
				{"EOF", testEOF},
				{"Concurrent", testConcurrent},
				{"Sync", testSync},
				{"CloseInFlight", testCloseInFlight},
				{"Depth", testDepth},
				{"ConcurrentDepth", testConcurrentDepth},
				{"DepthPhases", testDepthPhases},
				{"Counters", testCounters},
				{"OtherDescriptor", testOtherDescriptor},
			} {
				t.Run(c.name, func(t *testing.T) {
					ignore := goleak.IgnoreCurrent()
					e := newEnv(t, cfg, direct)
					c.fn(t, e)
					e.closeEngine(t)
					goleak.VerifyNone(t, ignore)
				})
			}
		})
	}
}

type env struct {
	cfg    Config
	eng    core.Engine
	dir    string
	direct bool
	rng    *rand.Rand
	closed bool
}

func newEnv(t *testing.T, cfg Config, direct bool) *env {
	dir := cfg.Dir
	if dir == "" {
		dir = t.TempDir()
	} else {
		d, err := os.MkdirTemp(dir, "enginetest")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = 0x0b0d
	}
	e := &env{cfg: cfg, eng: cfg.New(t, core.EngineConfig{}), dir: dir, direct: direct, rng: rand.New(rand.NewPCG(seed, uint64(len(t.Name()))))}
	t.Cleanup(func() {
		if !e.closed {
			e.eng.Close()
		}
	})
	return e
}

func (e *env) closeEngine(t *testing.T) {
	e.closed = true
	if err := e.eng.Close(); err != nil {
		t.Errorf("engine Close: %v", err)
	}
}

func (e *env) opts(flag int) core.OpenOptions {
	return core.OpenOptions{Flag: flag, Perm: 0o644, Direct: e.direct, Buffered: !e.direct}
}

// open creates (or opens) name in the test directory for reading and
// writing.
func (e *env) open(t *testing.T, name string) core.File {
	t.Helper()
	f, err := e.eng.Open(filepath.Join(e.dir, name), e.opts(os.O_RDWR|os.O_CREATE))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if d, ok := f.(interface{ Direct() bool }); ok && d.Direct() != e.direct {
		t.Fatalf("file Direct() = %v, want %v", d.Direct(), e.direct)
	}
	return f
}

// model is the reference contents of a file.
type model struct{ b []byte }

func (m *model) write(p []byte, off int64) {
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	copy(m.b[off:], p)
}

// read returns what a ReadAt of n bytes at off must return.
func (m *model) read(n int, off int64) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	if off >= int64(len(m.b)) {
		return nil, io.EOF
	}
	end := min(int(off)+n, len(m.b))
	var err error
	if end-int(off) < n {
		err = io.EOF
	}
	return m.b[off:end], err
}

var sizes = []int{1, 7, 511, 512, 513, 1000, 4095, 4096, 4097, 8192, 12288 + 5, 65536, 131072 + 3, 1 << 20}

// buffer returns n bytes whose address is aligned to 4096 or deliberately
// not, at random.
func (e *env) buffer(n int) []byte {
	raw := make([]byte, n+8192)
	start := 0
	for start < len(raw) && uintptrOf(raw[start:])%4096 != 0 {
		start++
	}
	switch e.rng.IntN(3) {
	case 1:
		start += 1 + e.rng.IntN(511)
	case 2:
		start += 512
	}
	return raw[start : start+n]
}

func (e *env) offset(limit int64) int64 {
	off := e.rng.Int64N(limit)
	switch e.rng.IntN(3) {
	case 0:
		return off &^ 4095
	case 1:
		return off &^ 511
	}
	return off
}

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for k := 0; k < 8 && i+k < n; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b
}

func checkRead(t *testing.T, what string, got []byte, n int, err error, m *model, off int64) {
	t.Helper()
	want, wantErr := m.read(len(got), off)
	if n != len(want) || !errors.Is(err, wantErr) && !(err == nil && wantErr == nil) {
		t.Fatalf("%s: ReadAt(len %d, off %d) = %d, %v; want %d, %v", what, len(got), off, n, err, len(want), wantErr)
	}
	if !bytes.Equal(got[:n], want) {
		t.Fatalf("%s: ReadAt(len %d, off %d): data differs from the reference", what, len(got), off)
	}
}

func checkWhole(t *testing.T, f core.File, m *model, path string) {
	t.Helper()
	if got := f.Size(); got != int64(len(m.b)) {
		t.Fatalf("Size() = %d, want %d", got, len(m.b))
	}
	disk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(disk, m.b) {
		t.Fatalf("file on disk (%d bytes) differs from the reference (%d bytes)", len(disk), len(m.b))
	}
}

func testRandomIO(t *testing.T, e *env) {
	f := e.open(t, "random")
	defer f.Close()
	m := &model{}
	ops := 400
	if testing.Short() {
		ops = 150
	}
	const span = 4 << 20
	for i := range ops {
		n := sizes[e.rng.IntN(len(sizes))]
		off := e.offset(span)
		if e.rng.IntN(2) == 0 {
			p := e.buffer(n)
			copy(p, randomBytes(e.rng, n))
			got, err := f.WriteAt(p, off)
			if got != n || err != nil {
				t.Fatalf("op %d: WriteAt(len %d, off %d) = %d, %v", i, n, off, got, err)
			}
			m.write(p, off)
			continue
		}
		p := e.buffer(n)
		got, err := f.ReadAt(p, off)
		checkRead(t, fmt.Sprintf("op %d", i), p, got, err, m, off)
	}
	checkWhole(t, f, m, filepath.Join(e.dir, "random"))
}

func testBatch(t *testing.T, e *env) {
	f := e.open(t, "batch")
	defer f.Close()
	bf, ok := f.(core.BatchFile)
	if !ok {
		t.Fatal("file does not implement core.BatchFile")
	}
	m := &model{}
	for round := range 20 {
		// A batch of writes to disjoint ranges, then a batch of reads.
		var reqs []core.IORequest
		off := int64(0)
		for range 1 + e.rng.IntN(24) {
			n := sizes[e.rng.IntN(len(sizes)-1)]
			off += int64(e.rng.IntN(3) * 511)
			p := e.buffer(n)
			copy(p, randomBytes(e.rng, n))
			reqs = append(reqs, core.IORequest{Op: core.OpWrite, Buf: p, Off: off})
			off += int64(n)
		}
		if err := bf.Batch(reqs); err != nil {
			t.Fatalf("round %d: write Batch: %v", round, err)
		}
		for _, r := range reqs {
			if r.N != len(r.Buf) || r.Err != nil {
				t.Fatalf("round %d: write of %d at %d = %d, %v", round, len(r.Buf), r.Off, r.N, r.Err)
			}
			m.write(r.Buf, r.Off)
		}
		reqs = reqs[:0]
		for range 1 + e.rng.IntN(32) {
			n := sizes[e.rng.IntN(len(sizes))]
			reqs = append(reqs, core.IORequest{Op: core.OpRead, Buf: e.buffer(n), Off: e.offset(int64(len(m.b)) + 8192)})
		}
		if err := bf.Batch(reqs); err != nil {
			t.Fatalf("round %d: read Batch: %v", round, err)
		}
		for i, r := range reqs {
			checkRead(t, fmt.Sprintf("round %d read %d", round, i), r.Buf, r.N, r.Err, m, r.Off)
		}
	}
	// An empty batch and a bad request in a batch.
	if err := bf.Batch(nil); err != nil {
		t.Fatalf("empty Batch: %v", err)
	}
	reqs := []core.IORequest{{Op: core.OpRead, Buf: make([]byte, 10), Off: -1}, {Op: core.OpRead, Buf: make([]byte, 10), Off: 0}}
	if err := bf.Batch(reqs); err != nil {
		t.Fatalf("Batch: %v", err)
	}
	if !errors.Is(reqs[0].Err, core.ErrOutOfRange) || reqs[1].Err != nil || reqs[1].N != 10 {
		t.Fatalf("negative offset in a batch: %v; neighbour: %d, %v", reqs[0].Err, reqs[1].N, reqs[1].Err)
	}
	checkWhole(t, f, m, filepath.Join(e.dir, "batch"))
}

func testEOF(t *testing.T, e *env) {
	f := e.open(t, "eof")
	defer f.Close()
	m := &model{}
	data := randomBytes(e.rng, 10000)
	if n, err := f.WriteAt(data, 0); n != len(data) || err != nil {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	m.write(data, 0)
	for _, c := range []struct {
		n   int
		off int64
	}{{2000, 9000}, {4096, 8192}, {1, 9999}, {1, 10000}, {4096, 10000}, {4096, 12288}, {100, 1 << 30}, {20000, 0}, {0, 0}, {0, 20000}} {
		p := e.buffer(c.n)
		n, err := f.ReadAt(p, c.off)
		checkRead(t, "EOF", p, n, err, m, c.off)
	}
	if _, err := f.ReadAt(make([]byte, 10), -1); !errors.Is(err, core.ErrOutOfRange) {
		t.Fatalf("ReadAt(off -1) error = %v, want core.ErrOutOfRange", err)
	}
	if _, err := f.WriteAt(make([]byte, 10), -5); !errors.Is(err, core.ErrOutOfRange) {
		t.Fatalf("WriteAt(off -5) error = %v, want core.ErrOutOfRange", err)
	}
	// Writes inside the last block and past it keep the size exact.
	for _, c := range []struct {
		n   int
		off int64
	}{{10, 10000}, {5, 9000}, {3, 12289}, {4096, 16384}} {
		p := randomBytes(e.rng, c.n)
		if n, err := f.WriteAt(p, c.off); n != c.n || err != nil {
			t.Fatalf("WriteAt(len %d, off %d) = %d, %v", c.n, c.off, n, err)
		}
		m.write(p, c.off)
		if got := f.Size(); got != int64(len(m.b)) {
			t.Fatalf("after WriteAt(len %d, off %d): Size() = %d, want %d", c.n, c.off, got, len(m.b))
		}
	}
	checkWhole(t, f, m, filepath.Join(e.dir, "eof"))
}

func testConcurrent(t *testing.T, e *env) {
	f := e.open(t, "concurrent")
	defer f.Close()
	const region = 256 << 10
	const writers, readers = 6, 6
	m := &model{}
	// The first half of the file is written once and then only read; the
	// writers own one region each of the second half.
	base := randomBytes(e.rng, writers*region)
	if n, err := f.WriteAt(base, 0); n != len(base) || err != nil {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	m.write(base, 0)
	m.write(make([]byte, writers*region), int64(len(base)))
	if err := truncate(f, int64(len(m.b))); err != nil {
		t.Fatal(err)
	}
	iters := 60
	if testing.Short() {
		iters = 25
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, writers+readers)
	for w := range writers {
		r := rand.New(rand.NewPCG(uint64(w), 99))
		wg.Go(func() {
			lo := int64(len(base) + w*region)
			for range iters {
				n := sizes[r.IntN(len(sizes)-2)]
				off := lo + r.Int64N(int64(region-n))
				if r.IntN(2) == 0 {
					off &^= 511
				}
				p := randomBytes(r, n)
				if got, err := f.WriteAt(p, off); got != n || err != nil {
					errs <- fmt.Errorf("writer %d: WriteAt(len %d, off %d) = %d, %v", w, n, off, got, err)
					return
				}
				mu.Lock()
				m.write(p, off)
				mu.Unlock()
			}
		})
	}
	for rd := range readers {
		r := rand.New(rand.NewPCG(uint64(rd), 7))
		wg.Go(func() {
			for range iters {
				n := sizes[r.IntN(len(sizes)-1)]
				off := r.Int64N(int64(len(base) - n))
				p := make([]byte, n)
				if got, err := f.ReadAt(p, off); got != n || err != nil {
					errs <- fmt.Errorf("reader %d: ReadAt(len %d, off %d) = %d, %v", rd, n, off, got, err)
					return
				}
				if !bytes.Equal(p, base[off:off+int64(n)]) {
					errs <- fmt.Errorf("reader %d: ReadAt(len %d, off %d): data differs", rd, n, off)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkWhole(t, f, m, filepath.Join(e.dir, "concurrent"))
}

func truncate(f core.File, size int64) error {
	tf, ok := f.(interface{ Truncate(int64) error })
	if !ok {
		return fmt.Errorf("file %T has no Truncate", f)
	}
	return tf.Truncate(size)
}

func testSync(t *testing.T, e *env) {
	f := e.open(t, "sync")
	p := randomBytes(e.rng, 8192)
	if n, err := f.WriteAt(p, 4096); n != len(p) || err != nil {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	before := e.eng.Stats().Syncs
	if err := f.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if got := e.eng.Stats().Syncs; got != before+1 {
		t.Fatalf("Syncs counter = %d, want %d", got, before+1)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := f.Sync(); !errors.Is(err, core.ErrClosed) {
		t.Fatalf("Sync after Close = %v, want core.ErrClosed", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	disk, err := os.ReadFile(filepath.Join(e.dir, "sync"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(disk[4096:], p) || !bytes.Equal(disk[:4096], make([]byte, 4096)) {
		t.Fatal("synced data differs")
	}
}

func testCloseInFlight(t *testing.T, e *env) {
	f := e.open(t, "close")
	if err := truncate(f, 8<<20); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, 16)
	for g := range 16 {
		r := rand.New(rand.NewPCG(uint64(g), 3))
		wg.Go(func() {
			p := make([]byte, 4096*(1+r.IntN(16)))
			<-start
			for {
				off := r.Int64N(8<<20-int64(len(p))) &^ 4095
				var err error
				var n int
				if g%2 == 0 {
					n, err = f.ReadAt(p, off)
				} else {
					n, err = f.WriteAt(p, off)
				}
				if err != nil {
					if !errors.Is(err, core.ErrClosed) {
						errs <- fmt.Errorf("goroutine %d: %w", g, err)
					}
					return
				}
				if n != len(p) {
					errs <- fmt.Errorf("goroutine %d: short transfer %d", g, n)
					return
				}
			}
		})
	}
	close(start)
	time.Sleep(20 * time.Millisecond)
	if err := f.Close(); err != nil {
		t.Fatalf("Close with IO in flight: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if _, err := f.ReadAt(make([]byte, 1), 0); !errors.Is(err, core.ErrClosed) {
		t.Fatalf("ReadAt after Close = %v, want core.ErrClosed", err)
	}
	if bf, ok := f.(core.BatchFile); ok {
		if err := bf.Batch([]core.IORequest{{Op: core.OpRead, Buf: make([]byte, 1)}}); !errors.Is(err, core.ErrClosed) {
			t.Fatalf("Batch after Close = %v, want core.ErrClosed", err)
		}
	}
	// The engine closes while a second file is busy: its IO either
	// completes or fails with core.ErrClosed.
	g := e.open(t, "close2")
	defer g.Close()
	if err := truncate(g, 1<<20); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		p := make([]byte, 4096)
		for {
			if _, err := g.ReadAt(p, 0); err != nil {
				if errors.Is(err, core.ErrClosed) {
					err = nil
				}
				done <- err
				return
			}
		}
	}()
	time.Sleep(5 * time.Millisecond)
	e.closeEngine(t)
	if err := <-done; err != nil {
		t.Fatalf("IO during engine Close: %v", err)
	}
	if _, err := e.eng.Open(filepath.Join(e.dir, "close3"), e.opts(os.O_RDWR|os.O_CREATE)); !errors.Is(err, core.ErrClosed) {
		t.Fatalf("Open after engine Close = %v, want core.ErrClosed", err)
	}
}

func testDepth(t *testing.T, e *env) {
	f := e.open(t, "depth")
	defer f.Close()
	const blocks = 1024
	data := randomBytes(e.rng, blocks*4096)
	if n, err := f.WriteAt(data, 0); n != len(data) || err != nil {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	bf := f.(core.BatchFile)
	reqs := make([]core.IORequest, 32)
	bufs := make([]byte, 32*4096+4096)
	for len(bufs) > 0 && uintptrOf(bufs)%4096 != 0 {
		bufs = bufs[1:]
	}
	for i := range reqs {
		reqs[i] = core.IORequest{Op: core.OpRead, Buf: bufs[i*4096 : (i+1)*4096], Off: int64(e.rng.IntN(blocks)) * 4096}
	}
	before := e.eng.Stats()
	if err := bf.Batch(reqs); err != nil {
		t.Fatalf("Batch: %v", err)
	}
	for i, r := range reqs {
		if r.N != 4096 || r.Err != nil || !bytes.Equal(r.Buf, data[r.Off:r.Off+4096]) {
			t.Fatalf("read %d at %d = %d, %v (or wrong data)", i, r.Off, r.N, r.Err)
		}
	}
	after := e.eng.Stats()
	t.Logf("batch of 32: %d submissions carrying %d requests, max in flight %d",
		after.Submits-before.Submits, after.SubmittedRequests-before.SubmittedRequests, after.MaxInFlight)
	if after.SubmittedRequests-before.SubmittedRequests < 32 {
		t.Fatalf("SubmittedRequests grew by %d for a batch of 32", after.SubmittedRequests-before.SubmittedRequests)
	}
	if d := e.minDepth(t); d > 0 && e.direct && after.MaxInFlight < uint64(d) {
		// A pool of worker threads overlaps requests only when the
		// scheduler runs two of them at once, which a loaded machine may
		// not do for one batch: more batches, until the overlap shows or
		// it is clear that the engine serialises.
		for try := 0; try < 50 && after.MaxInFlight < uint64(d); try++ {
			if err := bf.Batch(reqs); err != nil {
				t.Fatalf("Batch: %v", err)
			}
			after = e.eng.Stats()
		}
		if after.MaxInFlight < uint64(d) {
			t.Fatalf("MaxInFlight = %d after 51 batches of 32 O_DIRECT reads, want at least %d", after.MaxInFlight, d)
		}
	}
}

func testCounters(t *testing.T, e *env) {
	f := e.open(t, "counters")
	defer f.Close()
	before := e.eng.Stats()
	p := make([]byte, 3000)
	for range 5 {
		if _, err := f.WriteAt(p, 100); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if _, err := f.ReadAt(p[:1000], 0); err != nil {
			t.Fatal(err)
		}
	}
	n, _ := f.ReadAt(p, 2500) // 600 bytes and EOF
	after := e.eng.Stats()
	if d := after.Writes - before.Writes; d != 5 {
		t.Errorf("Writes grew by %d, want 5", d)
	}
	if d := after.WriteBytes - before.WriteBytes; d != 15000 {
		t.Errorf("WriteBytes grew by %d, want 15000", d)
	}
	if d := after.Reads - before.Reads; d != 4 {
		t.Errorf("Reads grew by %d, want 4", d)
	}
	if d := after.ReadBytes - before.ReadBytes; d != uint64(3000+n) || n != 600 {
		t.Errorf("ReadBytes grew by %d (last read %d), want %d", d, n, 3600)
	}
	if after.Submits <= before.Submits || after.SubmittedRequests < after.Submits || after.MaxInFlight == 0 {
		t.Errorf("submission counters did not move: %+v", after)
	}
}

func testConcurrentDepth(t *testing.T, e *env) {
	f := e.open(t, "cdepth")
	defer f.Close()
	const blocks = 1024
	// Real data: reads of holes need no device IO and finish at once.
	if n, err := f.WriteAt(randomBytes(e.rng, blocks*4096), 0); n != blocks*4096 || err != nil {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	// Single reads from many goroutines must reach the kernel together,
	// not one after the other. Whether two of them overlap in one round
	// depends on the scheduler of a possibly loaded machine: more rounds,
	// until the overlap shows or it is clear that the engine serialises.
	var st core.EngineStats
	for round := 0; round < 20; round++ {
		var wg sync.WaitGroup
		for g := range 32 {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(g), uint64(5+round)))
				buf := make([]byte, 8192)
				for len(buf) > 4096 && uintptrOf(buf)%4096 != 0 {
					buf = buf[1:]
				}
				buf = buf[:4096]
				for range 16 {
					if n, err := f.ReadAt(buf, r.Int64N(blocks)*4096); n != 4096 || err != nil {
						t.Errorf("ReadAt = %d, %v", n, err)
						return
					}
				}
			})
		}
		wg.Wait()
		st = e.eng.Stats()
		t.Logf("32 goroutines, round %d: %d submissions carrying %d requests, max in flight %d", round, st.Submits, st.SubmittedRequests, st.MaxInFlight)
		if t.Failed() || e.minDepth(t) == 0 || !e.direct || st.MaxInFlight >= 2 {
			return
		}
	}
	t.Fatalf("MaxInFlight = %d after 20 rounds of 32 goroutines reading O_DIRECT, want at least 2", st.MaxInFlight)
}

// testDepthPhases moves one engine back and forth between one goroutine
// reading alone and 32 reading at once, and overlaps the two (one goroutine
// keeps reading while the others start and stop), checking every byte: the
// asynchronous engines serve a lone reader on its own goroutine and deep
// queues on the engine's issuer, and hand the queue from one to the other.
// A lost hand-over shows as a read that never returns, which the phase's
// deadline turns into a failure.
func testDepthPhases(t *testing.T, e *env) {
	f := e.open(t, "phases")
	const blocks = 512
	data := randomBytes(e.rng, blocks*4096)
	if n, err := f.WriteAt(data, 0); n != len(data) || err != nil {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	reader := func(seed uint64, reads int, stop *atomic.Bool) {
		r := rand.New(rand.NewPCG(seed, 9))
		buf := make([]byte, 8192)
		for len(buf) > 4096 && uintptrOf(buf)%4096 != 0 {
			buf = buf[1:]
		}
		buf = buf[:4096]
		for i := 0; i < reads || (stop != nil && !stop.Load()); i++ {
			off := r.Int64N(blocks) * 4096
			if n, err := f.ReadAt(buf, off); n != 4096 || err != nil || !bytes.Equal(buf, data[off:off+4096]) {
				t.Errorf("ReadAt(%d) = %d, %v (or wrong data)", off, n, err)
				return
			}
		}
	}
	phase := func(name string, fn func()) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			fn()
		}()
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
			// Closing the file or the engine would wait for the lost
			// request forever: leave them.
			e.closed = true
			t.Fatalf("phase %s did not finish in 2 minutes: a request was never completed", name)
		}
	}
	many := func(seed uint64) {
		var wg sync.WaitGroup
		for g := range 32 {
			wg.Go(func() { reader(seed+uint64(g), 16, nil) })
		}
		wg.Wait()
	}
	for round := range 3 {
		phase("alone", func() { reader(uint64(round), 64, nil) })
		phase("32 at once", func() { many(uint64(100 * (round + 1))) })
		phase("alone and 32", func() {
			var stop atomic.Bool
			var wg sync.WaitGroup
			wg.Go(func() { reader(uint64(1000+round), 1, &stop) })
			many(uint64(2000 * (round + 1)))
			stop.Store(true)
			wg.Wait()
		})
		if t.Failed() {
			break
		}
	}
	if err := f.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// testOtherDescriptor grows the file through another descriptor and then
// writes inside and past the new end: the engine must go by the file's real
// size (an O_DIRECT read-modify-write must not cut the other writer's data).
func testOtherDescriptor(t *testing.T, e *env) {
	f := e.open(t, "other")
	defer f.Close()
	path := filepath.Join(e.dir, "other")
	m := &model{}
	p := randomBytes(e.rng, 5000)
	if n, err := f.WriteAt(p, 0); n != len(p) || err != nil {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	m.write(p, 0)
	other, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	q := randomBytes(e.rng, 20000)
	if _, err := other.WriteAt(q, 5000); err != nil {
		t.Fatal(err)
	}
	other.Close()
	m.write(q, 5000)
	for _, w := range []struct {
		n   int
		off int64
	}{{10, 4990}, {100, 24000}, {3, 24999}} {
		p := randomBytes(e.rng, w.n)
		if n, err := f.WriteAt(p, w.off); n != w.n || err != nil {
			t.Fatalf("WriteAt(len %d, off %d) = %d, %v", w.n, w.off, n, err)
		}
		m.write(p, w.off)
		checkWhole(t, f, m, path)
	}
}
