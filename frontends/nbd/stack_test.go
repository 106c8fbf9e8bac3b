package nbd

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

// openStack stacks the vectors A and B under the writable layer in dir
// (created when create is set).
func openStack(t *testing.T, dir string, create bool) *lsmt.Stack {
	t.Helper()
	eng := psync.New(core.EngineConfig{})
	open := func(p string, flag int) core.File {
		f, err := eng.Open(p, core.OpenOptions{Flag: flag, Perm: 0o644})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	data, index := filepath.Join(dir, "data"), filepath.Join(dir, "index")
	var w *lsmt.Writable
	var err error
	if create {
		w, err = lsmt.Create(open(data, os.O_RDWR|os.O_CREATE|os.O_EXCL), open(index, os.O_RDWR|os.O_CREATE|os.O_EXCL), lsmt.CreateOptions{})
	} else {
		w, err = lsmt.OpenWritable(open(data, os.O_RDWR), open(index, os.O_RDWR))
	}
	if err != nil {
		t.Fatal(err)
	}
	st, err := lsmt.OpenStack([]core.File{
		open(testvectors.Path(t, "stack/A.commit"), os.O_RDONLY),
		open(testvectors.Path(t, "stack/B.commit"), os.O_RDONLY),
	}, w)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestRandomOpsOnLayerStack drives an LSMT stack (two committed layers and
// an append-only upper) through the server with random reads, writes,
// trims and zeroing, aligned and not, over two connections, against a byte
// model; then reopens the layers and compares everything.
func TestRandomOpsOnLayerStack(t *testing.T) {
	dir := t.TempDir()
	st := openStack(t, dir, true)
	model := make([]byte, st.Size())
	if _, err := st.ReadAt(model, 0); err != nil {
		t.Fatal(err)
	}
	srv, sock := startServer(t, []Export{{File: st, Alignment: core.SectorSize, FastReads: true}}, Options{})
	conns := []*rawClient{dialRaw(t, sock), dialRaw(t, sock)}
	conns[0].goExport("", true)
	conns[1].goExport("", false)
	seed := uint64(20261126)
	rng := rand.New(rand.NewPCG(seed, 7))
	size := int64(len(model))
	ops := 600
	if testing.Short() {
		ops = 150
	}
	for i := range ops {
		rc := conns[rng.IntN(2)]
		structured := rc == conns[0]
		off := rng.Int64N(size)
		n := min(rng.Int64N(256<<10)+1, size-off)
		if rng.IntN(2) == 0 { // half the requests are sector-aligned
			off &^= 511
			n = max(n&^511, 512)
			n = min(n, size-off)
		}
		reply := func() uint32 {
			if structured {
				return rc.chunk().errno()
			}
			e, _, _ := rc.simpleReply(0)
			return e
		}
		var errno uint32
		switch op := rng.IntN(10); {
		case op < 4: // write
			p := make([]byte, n)
			for j := range p {
				p[j] = byte(rng.Uint32())
			}
			rc.request(0, cmdWrite, uint64(i), uint64(off), uint32(n), p)
			copy(model[off:], p)
			errno = reply()
		case op < 5:
			rc.request(0, cmdTrim, uint64(i), uint64(off), uint32(n), nil)
			// A trim discards whole sectors only; they read as zeros.
			if s, e := (off+511)&^511, (off+n)&^511; e > s {
				clear(model[s:e])
			}
			errno = reply()
		case op < 6:
			rc.request(0, cmdWriteZeroes, uint64(i), uint64(off), uint32(n), nil)
			clear(model[off : off+n])
			errno = reply()
		case op < 7:
			rc.request(cmdFlagFUA, cmdWrite, uint64(i), uint64(off), 512, bytes.Repeat([]byte{byte(i)}, 512))
			if off+512 <= size {
				copy(model[off:], bytes.Repeat([]byte{byte(i)}, 512))
				errno = reply()
			} else if reply() != errnoNoSpc {
				t.Fatalf("op %d: write past the end accepted", i)
			}
		case op < 8:
			rc.request(0, cmdFlush, uint64(i), 0, 0, nil)
			errno = reply()
		default: // read and compare
			rc.request(0, cmdRead, uint64(i), uint64(off), uint32(n), nil)
			var data []byte
			if structured {
				ch := rc.chunk()
				errno = ch.errno()
				if errno == 0 {
					data = ch.payload[8:]
				}
			} else {
				errno, _, data = rc.simpleReply(int(n))
			}
			if errno == 0 && !bytes.Equal(data, model[off:off+n]) {
				t.Fatalf("seed %d op %d: read [%d, +%d) differs from the model", seed, i, off, n)
			}
		}
		if errno != 0 {
			t.Fatalf("seed %d op %d: errno %d", seed, i, errno)
		}
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = openStack(t, dir, false)
	defer st.Close()
	got := make([]byte, st.Size())
	st.ReadAt(got, 0)
	if !bytes.Equal(got, model) {
		t.Fatalf("seed %d: reopened layers differ from the model", seed)
	}
}
