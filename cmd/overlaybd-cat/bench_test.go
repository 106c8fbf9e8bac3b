package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

// BenchmarkCatStack writes the 64 MiB view of the three-layer stack A+B+C
// to io.Discard (opening included); BenchmarkCatRawPeer reads the same
// image, as one plain page-cached file, with 1 MiB preads. Compare the MB/s.
func BenchmarkCatStack(b *testing.B) {
	args := []string{testvectors.Path(b, "stack/A.commit"), testvectors.Path(b, "stack/B.commit"), testvectors.Path(b, "stack/C.commit")}
	b.SetBytes(64 << 20)
	for i := 0; i < b.N; i++ {
		if code := run(context.Background(), args, io.Discard, io.Discard); code != 0 {
			b.Fatalf("exit %d", code)
		}
	}
}

func BenchmarkCatRawPeer(b *testing.B) {
	zf, err := os.Open(testvectors.Path(b, "stack/merged.raw.zst"))
	if err != nil {
		b.Fatal(err)
	}
	defer zf.Close()
	dec, err := zstd.NewReader(zf)
	if err != nil {
		b.Fatal(err)
	}
	p := filepath.Join(b.TempDir(), "raw")
	out, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(out, dec); err != nil {
		b.Fatal(err)
	}
	dec.Close()
	out.Close()
	f, err := os.Open(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, chunk)
	b.SetBytes(64 << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for off := int64(0); off < 64<<20; off += chunk {
			if _, err := f.ReadAt(buf, off); err != nil {
				b.Fatal(err)
			}
			if _, err := io.Discard.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
	}
}
