package plugins

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/overlaybd-go/overlaybd/codecs/all"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/zfile"
	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
	"github.com/overlaybd-go/overlaybd/plugins/internal/plugintest"
)

// TestVectorsThroughPlugin reads every ZFile vector with both lz4 and zstd
// served by a plugin process and checks the content and that the plugin
// decoded every block.
func TestVectorsThroughPlugin(t *testing.T) {
	h, err := Load(context.Background(), []Config{{Path: filepath.Base(faultBin), Algorithms: []string{"lz4", "zstd"}}}, filepath.Dir(faultBin))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	p := h.Plugins()[0]
	for _, alg := range []string{"lz4", "zstd"} {
		f, err := core.Codecs.Lookup(alg)
		if err != nil {
			t.Fatal(err)
		}
		if c, err := f(); err != nil || c.Name() != alg {
			t.Fatalf("%s: %v", alg, err)
		} else if _, ok := c.(*codec); !ok {
			t.Fatalf("%s resolves to %T", alg, c)
		}
	}
	for rel, want := range plugintest.Vectors(t) {
		t.Run(rel, func(t *testing.T) {
			r := plugintest.OpenVector(t, rel)
			defer r.Close()
			before, err := p.Stats(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			plugintest.ReadAll(t, r, want)
			after, err := p.Stats(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			alg := r.Algorithm()
			if got := after.Codecs[alg].Decompressed - before.Codecs[alg].Decompressed; got < uint64(r.BlockCount()) {
				t.Fatalf("plugin decoded %d %s blocks of %d", got, alg, r.BlockCount())
			}
			// The reader batches the blocks of a large read: a doorbell
			// carries many blocks (the Stats calls count one each).
			if batches := after.Batches - before.Batches; r.BlockCount() >= 64 && 2*batches > uint64(r.BlockCount()) {
				t.Fatalf("%d blocks in %d batches", r.BlockCount(), batches)
			}
		})
	}
}

// TestReaderNeverGetsWrongData reads a ZFile through core/zfile's reader
// while the plugin serving its codec misbehaves: every read fails or returns
// the right bytes, and reads succeed again once the plugin behaves.
func TestReaderNeverGetsWrongData(t *testing.T) {
	control := filepath.Join(t.TempDir(), "control")
	setMode(t, control, "ok")
	h, err := Load(context.Background(), []Config{{Path: faultBin, Algorithms: []string{"zstd"}, Args: []string{"-control", control}}}, "",
		WithCallTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	want := plugintest.Vectors(t)["zfile/plain.zstd-bs4.zfile"]
	for _, mode := range []string{"corrupt", "badsum", "short", "long", "short-msg", "long-msg", "wrongseq", "crash", "hang"} {
		t.Run(mode, func(t *testing.T) {
			r := plugintest.OpenVector(t, "zfile/plain.zstd-bs4.zfile")
			defer r.Close()
			// Three blocks (one batch), and 74 (batches of several).
			for _, size := range []int{10000, 300_000} {
				setMode(t, control, mode)
				buf := make([]byte, size)
				n, err := r.ReadAt(buf, 100_000)
				if err == nil {
					t.Fatalf("%d-byte read through a plugin in mode %s succeeded", size, mode)
				}
				if !errors.Is(err, core.ErrCorrupt) {
					t.Fatalf("err %v does not wrap core.ErrCorrupt", err)
				}
				if !strings.HasPrefix(err.Error(), "zfile: block ") {
					t.Fatalf("err %v does not name the block", err)
				}
				if !bytes.Equal(buf[:n], want[100_000:100_000+n]) {
					t.Fatalf("the %d bytes returned with the error are wrong", n)
				}
				setMode(t, control, "ok")
				if n, err := r.ReadAt(buf, 100_000); err != nil || !bytes.Equal(buf[:n], want[100_000:100_000+n]) || n != len(buf) {
					t.Fatalf("after the plugin recovered: %d, %v", n, err)
				}
			}
		})
	}
}

// TestDamagedBlockThroughPlugin reads a ZFile with one damaged block (its
// CRC fails) through the plugin and in process: reads of every shape
// around it fail with the same error, which names the block and its
// offset, and the other reads return the same bytes.
func TestDamagedBlockThroughPlugin(t *testing.T) {
	z, err := os.ReadFile(testvectors.Path(t, "zfile/plain.lz4-bs4.zfile"))
	if err != nil {
		t.Fatal(err)
	}
	inproc, err := zfile.Open(zfiletest.NewMemFile(z))
	if err != nil {
		t.Fatal(err)
	}
	defer inproc.Close()
	off, _ := inproc.StoredBlock(100)
	z[off+9] ^= 0x40
	inproc, err = zfile.Open(zfiletest.NewMemFile(z))
	if err != nil {
		t.Fatal(err)
	}
	defer inproc.Close()
	h, err := Load(context.Background(), []Config{{Path: faultBin, Algorithms: []string{"lz4"}}}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	through, err := zfile.Open(zfiletest.NewMemFile(z), zfile.WithWorkers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer through.Close()
	want := fmt.Sprintf("zfile: block 100 at %d: stored CRC", off)
	for _, rc := range []struct{ off, n int64 }{{100 * 4096, 4096}, {100*4096 + 1, 10}, {99*4096 + 5, 8192}, {97 * 4096, 5 * 4096}, {0, 1 << 20}, {90 * 4096, 4096}, {101 * 4096, 200 * 4096}} {
		a, b := make([]byte, rc.n), make([]byte, rc.n)
		n1, err1 := inproc.ReadAt(a, rc.off)
		n2, err2 := through.ReadAt(b, rc.off)
		if n1 != n2 || fmt.Sprint(err1) != fmt.Sprint(err2) || err1 == nil && !bytes.Equal(a, b) {
			t.Fatalf("ReadAt(%d, %d): in process %d, %v; through the plugin %d, %v", rc.n, rc.off, n1, err1, n2, err2)
		}
		if overlaps := rc.off < 101*4096 && rc.off+rc.n > 100*4096; overlaps != (err2 != nil) || err2 != nil && !strings.HasPrefix(err2.Error(), want) {
			t.Fatalf("ReadAt(%d, %d): %v", rc.n, rc.off, err2)
		}
	}
}

// TestBatchedReadsSplitOverSmallLanes reads ZFiles through a plugin whose
// lanes hold only a few blocks, so that every batch the reader hands over
// is split into several doorbell exchanges, with one lane per worker and
// fewer lanes than workers.
func TestBatchedReadsSplitOverSmallLanes(t *testing.T) {
	h, err := Load(context.Background(), []Config{{Path: faultBin, Algorithms: []string{"lz4", "zstd"}}}, "",
		WithLanes(2, 64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	p := h.Plugins()[0]
	vectors := plugintest.Vectors(t)
	for _, rel := range []string{"zfile/plain.lz4-bs4.zfile", "zfile/plain.zstd-bs16-nocrc.zfile", "lsmt/rw-log.zstd-bs4.zcommit"} {
		for _, workers := range []int{1, 4} {
			f, err := os.Open(testvectors.Path(t, rel))
			if err != nil {
				t.Fatal(err)
			}
			r, err := zfile.Open(psync.NewFile(f, nil), zfile.WithWorkers(workers))
			if err != nil {
				t.Fatal(err)
			}
			before, err := p.Stats(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			plugintest.ReadAll(t, r, vectors[rel])
			after, err := p.Stats(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			// One exchange carries less than a lane of output.
			if alg := r.Algorithm(); after.Codecs[alg].Decompressed-before.Codecs[alg].Decompressed < uint64(r.BlockCount()) ||
				after.Batches-before.Batches < uint64(r.BlockCount())*uint64(r.Header().BlockSize)/(64<<10) {
				t.Fatalf("%s, %d workers: %d blocks in %d batches", rel, workers, r.BlockCount(), after.Batches-before.Batches)
			}
			r.Close()
		}
	}
}
