package matrix

import (
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/engines/psync"
)

// Deliberately broken engines, registered for the tests in core.Engines:
//
//   - broken-flip-byte flips one byte of some reads;
//   - broken-reorder-flush lets a flush overtake the write issued just
//     before it, so a power loss after the flush loses that write;
//   - durable-psync is the control: psync with the same power-loss
//     simulation and a correct flush.
const (
	flipByte     = "broken-flip-byte"
	reorderFlush = "broken-reorder-flush"
	durable      = "durable-psync"
)

func init() {
	for _, name := range []string{flipByte, reorderFlush, durable} {
		core.Engines.Register(name, core.NoNumber, func(cfg core.EngineConfig) (core.Engine, error) {
			return &brokenEngine{Engine: psync.New(cfg), mode: name}, nil
		})
	}
}

type brokenEngine struct {
	core.Engine
	mode     string
	reads    atomic.Uint64
	crashing atomic.Bool
}

func (e *brokenEngine) Name() string { return e.mode }

func (e *brokenEngine) Open(path string, o core.OpenOptions) (core.File, error) {
	f, err := e.Engine.Open(path, o)
	if err != nil {
		return nil, err
	}
	return &brokenFile{File: f, eng: e}, nil
}

// Crash implements CrashSimulator.
func (e *brokenEngine) Crash(reopen func() error) error {
	e.crashing.Store(true)
	defer e.crashing.Store(false)
	return reopen()
}

type brokenFile struct {
	core.File
	eng *brokenEngine

	mu      sync.Mutex
	durable []byte // content at the last Sync (nil: never synced)
	undo    *undo  // the last write since the last Sync
}

type undo struct {
	off     int64
	old     []byte
	oldSize int64
}

func (f *brokenFile) Fd() uintptr { return f.File.(interface{ Fd() uintptr }).Fd() }

func (f *brokenFile) Truncate(n int64) error {
	return f.File.(interface{ Truncate(int64) error }).Truncate(n)
}

func (f *brokenFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.File.ReadAt(p, off)
	if f.eng.mode == flipByte && n >= 512 && f.eng.reads.Add(1)%97 == 0 {
		p[n/2] ^= 0x40
	}
	return n, err
}

func (f *brokenFile) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	size := f.File.Size()
	u := &undo{off: off, oldSize: size}
	if off < size {
		u.old = make([]byte, min(int64(len(p)), size-off))
		if _, err := f.File.ReadAt(u.old, off); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
	}
	f.undo = u
	return f.File.WriteAt(p, off)
}

func (f *brokenFile) content() ([]byte, error) {
	b := make([]byte, f.File.Size())
	if _, err := f.File.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b, nil
}

func (f *brokenFile) Sync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, err := f.content()
	if err != nil {
		return err
	}
	if u := f.undo; f.eng.mode == reorderFlush && u != nil {
		// The flush completes before the write issued just before it.
		copy(b[u.off:], u.old)
		b = b[:min(int64(len(b)), max(u.oldSize, u.off+int64(len(u.old))))]
	}
	f.durable, f.undo = b, nil
	return f.File.Sync()
}

func (f *brokenFile) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.eng.crashing.Load() && f.durable != nil {
		// Power loss: the file holds what the last flush made durable.
		if _, err := f.File.WriteAt(f.durable, 0); err != nil {
			return errors.Join(err, f.File.Close())
		}
		if err := f.Truncate(int64(len(f.durable))); err != nil {
			return errors.Join(err, f.File.Close())
		}
	}
	return f.File.Close()
}

// dropDiscard is a device view that acknowledges valid discards without
// performing them (invalid ones still get the device's error).
type dropDiscard struct{ core.File }

func (d dropDiscard) Discard(off, n int64) error {
	if off < 0 || n < 0 || off+n > d.Size() || off%512 != 0 || n%512 != 0 {
		return d.File.(core.Discarder).Discard(off, n)
	}
	return nil
}
func (d dropDiscard) WriteZeroes(off, n int64) error {
	return d.File.(core.ZeroWriter).WriteZeroes(off, n)
}

// holesAsData is a device view whose block status reports every range as
// data (a conservative answer that loses the holes the device has).
type holesAsData struct{ core.File }

func (d holesAsData) Discard(off, n int64) error { return d.File.(core.Discarder).Discard(off, n) }
func (d holesAsData) WriteZeroes(off, n int64) error {
	return d.File.(core.ZeroWriter).WriteZeroes(off, n)
}
func (d holesAsData) BlockStatus(off, n int64) ([]core.Extent, error) {
	ext, err := d.File.(core.BlockStatuser).BlockStatus(off, n)
	for i := range ext {
		ext[i].Flags = 0
	}
	return ext, err
}

// The matrix catches each deliberately broken implementation, with a
// message that names the cell and the operation, while the control passes.
func TestBrokenImplementationsAreCaught(t *testing.T) {
	seed := testSeed(t)
	quick := Filter{Codec: "none", Envelope: "plain", Cache: "local", Frontend: "inprocess", Layer: "committed"}
	cases := []struct {
		name   string
		engine string
		filter Filter
		wrap   func(core.File) core.File
		want   []string // in the failure message
	}{
		{name: "flip a byte", engine: flipByte, filter: quick, want: []string{"cell " + flipByte + "/none/crc/plain/local/committed/upper-", "differs"}},
		{name: "drop a discard", engine: "psync", filter: withUpper(quick, "append-only"),
			wrap: func(f core.File) core.File { return dropDiscard{f} },
			want: []string{"cell psync/none/crc/plain/local/committed/upper-append-only/inprocess", "discard(off=", "after the discard"}},
		{name: "lose holes in block status (through NBD)", engine: "psync", filter: Filter{Codec: "none", Envelope: "plain", Cache: "local",
			Frontend: "nbd", Layer: "committed", Upper: "append-only"},
			wrap: func(f core.File) core.File { return holesAsData{f} },
			want: []string{"cell psync/none/crc/plain/local/committed/upper-append-only/nbd", "block-status(off=", "holds data"}},
		{name: "reorder a flush", engine: reorderFlush, filter: withUpper(quick, "append-only"),
			want: []string{"cell " + reorderFlush + "/none/crc/plain/local/committed/upper-append-only/inprocess", "crash+reopen"}},
		// The simulated power loss restores content, not holes, so it
		// runs on append-only uppers only (sparse layers read their
		// allocation).
		{name: "control", engine: durable, filter: withUpper(quick, "append-only")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.filter.Engine = tc.engine
			// Several seeds: one run may by chance not reach the
			// broken path; the case passes when any seed catches it.
			var msgs []string
			for i := int64(0); i < 4; i++ {
				rs, err := Run(tc.filter, Options{Seed: seed + i, Engines: []string{tc.engine}, WrapFile: tc.wrap, Ops: 3000})
				if err != nil {
					t.Fatal(err)
				}
				ran := 0
				for _, r := range rs {
					switch r.Status {
					case Fail:
						msgs = append(msgs, r.Reason)
					case Pass:
						ran++
					}
				}
				if tc.want == nil {
					if len(msgs) > 0 {
						t.Fatalf("seed %d: the control failed:\n%s", seed+i, strings.Join(msgs, "\n"))
					}
					if ran == 0 {
						t.Fatal("no cell ran")
					}
					continue
				}
				if len(msgs) > 0 {
					break
				}
			}
			if tc.want == nil {
				return
			}
			if len(msgs) == 0 {
				t.Fatalf("the broken implementation passed every cell (seeds %d..%d)", seed, seed+3)
			}
			for _, w := range tc.want {
				if !strings.Contains(msgs[0], w) {
					t.Errorf("failure message lacks %q:\n%s", w, msgs[0])
				}
			}
			t.Logf("caught: %s", firstLine(msgs[0]))
		})
	}
}

func withUpper(f Filter, upper string) Filter { f.Upper = upper; return f }

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }
