package main

import (
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
)

const benchSize = 64 << 20

// denseStack writes three committed layers whose merged view is fully
// mapped (every 64 KiB piece is written by one of the layers, some pieces
// rewritten higher up), and the same image as one raw file.
func denseStack(b *testing.B) (layers []string, raw string) {
	dir := b.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	img := make([]byte, benchSize)
	for i := range img {
		img[i] = byte(rng.Uint32())
	}
	const piece = 64 << 10
	for l := 0; l < 3; l++ {
		open := func(name string) core.File {
			f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
			if err != nil {
				b.Fatal(err)
			}
			return psync.NewFile(f, nil)
		}
		w, err := lsmt.Create(open("data"+string(rune('0'+l))), open("index"+string(rune('0'+l))), lsmt.CreateOptions{VirtualSize: benchSize})
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < benchSize; off += piece {
			// Layer 0 writes everything; layers 1 and 2 rewrite a third
			// of the pieces each with the final data.
			if l == 0 || rng.IntN(3) == 0 {
				if _, err := w.WriteAt(img[off:off+piece], int64(off)); err != nil {
					b.Fatal(err)
				}
			}
		}
		p := filepath.Join(dir, "layer"+string(rune('0'+l))+".commit")
		out, err := os.Create(p)
		if err != nil {
			b.Fatal(err)
		}
		if err := w.Commit(out, lsmt.CommitOptions{}); err != nil {
			b.Fatal(err)
		}
		out.Close()
		w.Close()
		layers = append(layers, p)
	}
	raw = filepath.Join(dir, "raw")
	if err := os.WriteFile(raw, img, 0o644); err != nil {
		b.Fatal(err)
	}
	return layers, raw
}

// BenchmarkCatDenseStack writes the 64 MiB view of a fully mapped
// three-layer stack to io.Discard (opening included); BenchmarkCatDenseRaw
// is the peer: the same image as one page-cached raw file, read with 1 MiB
// preads. Compare the MB/s of the two.
func BenchmarkCatDenseStack(b *testing.B) {
	layers, _ := denseStack(b)
	b.SetBytes(benchSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if code := run(context.Background(), layers, io.Discard, io.Discard); code != 0 {
			b.Fatalf("exit %d", code)
		}
	}
}

func BenchmarkCatDenseRaw(b *testing.B) {
	_, raw := denseStack(b)
	f, err := os.Open(raw)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, chunk)
	b.SetBytes(benchSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for off := int64(0); off < benchSize; off += chunk {
			if _, err := f.ReadAt(buf, off); err != nil {
				b.Fatal(err)
			}
			if _, err := io.Discard.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
	}
}
