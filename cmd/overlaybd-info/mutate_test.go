package main

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/internal/clitest"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

// Mutated vectors (random bytes, flag bits, huge index offsets and sizes,
// truncation) never make describe panic or hang; the fuzz target explores
// further.
func TestInfoMutatedInputs(t *testing.T) {
	n := 1000
	if testing.Short() {
		n = 200
	}
	dir := t.TempDir()
	for _, v := range []string{"lsmt/rw-log.index", "stack/C.commit", "lsmt/tool-created-1g.data", "stack/B.zstd-bs16.zcommit", "zfile/plain.lz4-bs4.zfile.tar"} {
		seed, err := os.ReadFile(testvectors.Path(t, v))
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(1, 1))
		for i := 0; i < n; i++ {
			b := append([]byte(nil), seed...)
			for k := 0; k < 1+rng.IntN(8); k++ {
				b[rng.IntN(len(b))] = byte(rng.Uint32())
			}
			if rng.IntN(5) == 0 {
				b[28] = []byte{0x13, 0x17, 0x03, 0x07, 0x01, 0x11}[rng.IntN(6)] // LSMT flags
			}
			if rng.IntN(3) == 0 { // index_offset, index_size or virtual_size
				f := 32 + 8*rng.IntN(3)
				for k := 0; k < 8; k++ {
					b[f+k] = byte(rng.Uint32())
				}
			}
			if rng.IntN(4) == 0 {
				b = b[:rng.IntN(len(b))]
			}
			p := clitest.WriteFile(t, filepath.Join(dir, "f"), b)
			done := make(chan struct{})
			go func() {
				defer close(done)
				describe(p)
			}()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				clitest.WriteFile(t, filepath.Join(t.TempDir(), "input"), b)
				t.Fatalf("%s, mutation %d: describe does not return", v, i)
			}
		}
	}
}
