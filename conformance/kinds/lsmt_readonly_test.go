package kinds

import (
	"bytes"
	"os"
	"path/filepath"

	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"testing"

	"github.com/overlaybd-go/overlaybd/conformance"
	"github.com/overlaybd-go/overlaybd/core/zfile"
)

// Committed and sealed layers, alone and stacked, plain, compressed and
// tar-wrapped, run the read-only scenarios against the model.
func TestLSMTReadOnlyConformance(t *testing.T) {
	kinds := []conformance.ReadOnlyKind{
		LSMTReadOnly{},
		LSMTReadOnly{Seal: true},
		LSMTReadOnly{Sparse: true},
		LSMTReadOnly{Layers: 3},
		LSMTReadOnly{Layers: 2, Seal: true, Sparse: true},
		LSMTReadOnly{ZFile: &zfile.Options{}},
		LSMTReadOnly{ZFile: &zfile.Options{Algorithm: "zstd", BlockSize: 32 << 10}, Tar: true},
		LSMTReadOnly{Tar: true},
		LSMTReadOnly{Layers: 3, ZFile: &zfile.Options{Algorithm: "lz4", BlockSize: 16 << 10, NoCRC: true}},
	}
	seeds := 1
	if conformance.Long() {
		seeds = 4
	}
	for _, kind := range kinds {
		t.Run(kind.Name(), func(t *testing.T) {
			t.Parallel()
			for i := 0; i < seeds; i++ {
				seed, err := conformance.Seed()
				if err != nil {
					t.Fatal(err)
				}
				reads := 0 // the default
				if testing.Short() {
					reads = 400
				}
				if err := conformance.RunReadOnly(kind, t.TempDir(), conformance.ReadOnlyOptions{Seed: seed + int64(i), Reads: reads, ZeroStatus: true, Logf: t.Logf}); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// The stacked build really spreads the content: the bottom layer alone holds
// stale data the model does not have, and the stack hides it.
func TestLSMTReadOnlyBuildIsLayered(t *testing.T) {
	m := conformance.NewModel(4 << 20)
	for i := range m.Bytes()[:1<<20] {
		m.Bytes()[i] = byte(i*7 + 1)
	}
	dir := t.TempDir()
	f, err := LSMTReadOnly{Layers: 3}.Build(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, m.Size())
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, m.Bytes()) {
		t.Fatal("stack differs from the model")
	}
	lf, err := os.Open(filepath.Join(dir, "layer-0"))
	if err != nil {
		t.Fatal(err)
	}
	bottom, err := lsmt.OpenReadOnly(psync.NewFile(lf, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer bottom.Close()
	if _, err := bottom.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(got, m.Bytes()) {
		t.Fatal("the bottom layer alone equals the model: nothing is stacked")
	}
}
