package main

import (
	"testing"

	"github.com/overlaybd-go/overlaybd/conformance"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/zfile"
	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
)

// zfileKind is the conformance suite's read-only cell "a ZFile written and
// read with the codec registered under algorithm".
type zfileKind struct {
	algorithm string
	blockSize int
}

func (k zfileKind) Name() string { return "zfile/" + k.algorithm + "/plugin" }

func (k zfileKind) Build(_ string, m *conformance.Model) (core.File, error) {
	out := zfiletest.NewMemFile(nil)
	// 64 KiB blocks of incompressible data are larger than upstream reads;
	// this reader reads them, and the codec must handle them.
	w, err := zfile.NewWriterAt(out, zfile.Options{Algorithm: k.algorithm, BlockSize: k.blockSize, AllowUnreadable: true})
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(m.Bytes()); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return zfile.Open(zfiletest.NewMemFile(out.Bytes()))
}

// TestConformanceThroughPlugin runs the conformance suite's read-only
// scenario (random concurrent reads compared with the reference model) on
// ZFiles whose zstd blocks are written and read by the plugin.
func TestConformanceThroughPlugin(t *testing.T) {
	p := loadPlugin(t, pluginBin)
	before := decoded(t, p)
	opts := conformance.ReadOnlyOptions{Reads: 1000, VirtualSize: 4 << 20, Logf: t.Logf}
	if conformance.Long() {
		opts = conformance.ReadOnlyOptions{Logf: t.Logf}
	}
	for _, bs := range []int{4096, 65536} {
		if err := conformance.RunReadOnly(zfileKind{"zstd", bs}, t.TempDir(), opts); err != nil {
			t.Fatalf("block size %d: %v", bs, err)
		}
	}
	if served := decoded(t, p) - before; served == 0 {
		t.Fatal("the plugin decoded nothing")
	} else {
		t.Logf("the plugin decoded %d blocks", served)
	}
}
