package lz4

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
	codectest.RoundTrip(t, Go())
	codectest.RoundTrip(t, registered(t))
}

func TestInterop(t *testing.T) {
	codectest.Interop(t, Go(), Default())
	codectest.Interop(t, Default(), Go())
}

func TestCorrupt(t *testing.T) {
	codectest.Corrupt(t, Go())
	codectest.Corrupt(t, Default())
}

func FuzzDecompress(f *testing.F) {
	for _, in := range codectest.Inputs() {
		if len(in) == 0 {
			continue
		}
		comp := make([]byte, Go().CompressBound(len(in)))
		n, _ := Go().Compress(comp, in)
		f.Add(comp[:n])
	}
	dst := make([]byte, 65536)
	f.Fuzz(func(t *testing.T, src []byte) {
		for _, c := range []core.Codec{Go(), Default()} {
			n, err := c.Decompress(dst, src)
			if err == nil && (n < 0 || n > len(dst)) {
				t.Fatalf("length %d", n)
			}
		}
	})
}
