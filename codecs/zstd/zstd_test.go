package zstd

import (
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
	dst := make([]byte, 65536)
	f.Fuzz(func(t *testing.T, src []byte) {
		for _, c := range []core.Codec{mustGo(t), mustDefault(t)} {
			n, err := c.Decompress(dst, src)
			if err == nil && (n < 0 || n > len(dst)) {
				t.Fatalf("length %d", n)
			}
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
