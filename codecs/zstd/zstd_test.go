package zstd

import (
	"bytes"
	"testing"

	"github.com/overlaybd-go/overlaybd/codecs/internal/codectest"
	"github.com/overlaybd-go/overlaybd/core"
)

func registered(t testing.TB) core.Codec {
	name, f, err := core.Codecs.LookupNumber(Number)
	if err != nil || name != Name {
		t.Fatalf("number %d: %q, %v", Number, name, err)
	}
	c, err := f()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRoundTrip(t *testing.T) {
	codectest.RoundTrip(t, mustGo(t))
	codectest.RoundTrip(t, registered(t))
}

func TestInterop(t *testing.T) {
	codectest.Interop(t, mustGo(t), mustDefault(t))
	codectest.Interop(t, mustDefault(t), mustGo(t))
}

func TestCorrupt(t *testing.T) {
	codectest.Corrupt(t, mustGo(t))
	codectest.Corrupt(t, mustDefault(t))
}

func FuzzDecompress(f *testing.F) {
	for _, in := range codectest.Inputs() {
		if len(in) == 0 {
			continue
		}
		comp := make([]byte, mustGo(f).CompressBound(len(in)))
		n, _ := mustGo(f).Compress(comp, in)
		f.Add(comp[:n])
	}
	for _, b := range codectest.VectorBlocks(f, "zfile/plain.zstd-bs4.zfile", 4) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		// Both flavours bound their output; when both accept a block they
		// must agree on its content.
		var outs [2][]byte
		for k, c := range []core.Codec{mustGo(t), mustDefault(t)} {
			dst := make([]byte, 65536)
			n, err := c.Decompress(dst, src)
			if err != nil {
				continue
			}
			if n < 0 || n > len(dst) {
				t.Fatalf("length %d", n)
			}
			outs[k] = dst[:n]
		}
		if outs[0] != nil && outs[1] != nil && !bytes.Equal(outs[0], outs[1]) {
			t.Fatalf("flavours decode the same block differently")
		}
	})
}

func mustGo(t testing.TB) core.Codec {
	c, err := Go()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustDefault(t testing.TB) core.Codec {
	c, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	return c
}
