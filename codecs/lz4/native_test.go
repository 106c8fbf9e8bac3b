//go:build cgo_codecs && cgo

package lz4

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
)

// TestNativeDecompressBatch checks that a batch decodes every block as
// Decompress does, whatever its place in the groups of eight: good blocks
// of several sizes, damaged, truncated and empty inputs, destinations too
// short and empty, in batches of 1 to 21 blocks.
func TestNativeDecompressBatch(t *testing.T) {
	c := Native()
	bc, ok := c.(core.BatchCodec)
	if !ok {
		t.Fatal("the liblz4 flavour does not batch")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	type input struct {
		src  []byte
		dstN int
	}
	var inputs []input
	for _, n := range []int{1, 100, 4096, 4096, 32768, 65536, 7} {
		orig := make([]byte, n)
		for i := range orig {
			orig[i] = byte(i / 7 % 13)
		}
		comp := make([]byte, c.CompressBound(n))
		m, err := c.Compress(comp, orig)
		if err != nil {
			t.Fatal(err)
		}
		bad := bytes.Clone(comp[:m])
		bad[rng.IntN(m)] ^= 0xff
		inputs = append(inputs,
			input{comp[:m], n},     // good
			input{comp[:m], n - 1}, // destination too short
			input{bad, n},          // damaged
			input{comp[:m/2+1], n}, // truncated
			input{nil, n},          // empty
			input{comp[:m], 0},     // no room at all
		)
	}
	for _, size := range []int{1, 7, 8, 9, 16, 21} {
		for round := range 20 {
			blocks := make([]core.CodecBlock, size)
			want := make([]core.CodecBlock, size)
			for i := range blocks {
				in := inputs[rng.IntN(len(inputs))]
				blocks[i] = core.CodecBlock{Dst: make([]byte, in.dstN), Src: in.src, N: -1, Err: errors.New("stale")}
				want[i] = core.CodecBlock{Dst: make([]byte, in.dstN), Src: in.src}
				want[i].N, want[i].Err = c.Decompress(want[i].Dst, want[i].Src)
			}
			if err := bc.DecompressBatch(blocks); err != nil {
				t.Fatal(err)
			}
			for i := range blocks {
				g, w := blocks[i], want[i]
				if g.N != w.N || fmt.Sprint(g.Err) != fmt.Sprint(w.Err) || (w.Err == nil && !bytes.Equal(g.Dst[:g.N], w.Dst[:w.N])) {
					t.Fatalf("batch of %d, round %d, block %d: got %d, %v; Decompress gave %d, %v", size, round, i, g.N, g.Err, w.N, w.Err)
				}
				if g.Err != nil && !errors.Is(g.Err, core.ErrCorrupt) {
					t.Fatalf("block %d: %v does not wrap ErrCorrupt", i, g.Err)
				}
			}
		}
	}
	// CompressBatch writes what Compress writes.
	src := bytes.Repeat([]byte("overlaybd "), 500)
	blocks := []core.CodecBlock{{Dst: make([]byte, c.CompressBound(len(src))), Src: src}}
	if err := bc.CompressBatch(blocks); err != nil || blocks[0].Err != nil {
		t.Fatal(err, blocks[0].Err)
	}
	one := make([]byte, c.CompressBound(len(src)))
	m, _ := c.Compress(one, src)
	if !bytes.Equal(one[:m], blocks[0].Dst[:blocks[0].N]) {
		t.Fatal("CompressBatch differs from Compress")
	}
}
