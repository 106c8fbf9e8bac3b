package remote_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/caches/download"
	"github.com/overlaybd-go/overlaybd/caches/file"
	"github.com/overlaybd-go/overlaybd/caches/ocf"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/core/remote"
	"github.com/overlaybd-go/overlaybd/internal/registrytest"
)

// slowRegistry is a registry behind a proxy that adds latency to every
// request.
func slowRegistry(b *testing.B, size int, latency time.Duration) (u string, data []byte, px *registrytest.FaultProxy) {
	reg := registrytest.New(b, registrytest.Options{})
	data = layer(size, 31)
	dgst := reg.PushBlob(b, "bench/app", data)
	px = registrytest.NewFaultProxy(b, reg.URL)
	px.SetLatency(latency)
	return remote.BlobURL(px.URL+"/v2/bench/app/blobs", dgst), data, px
}

// BenchmarkColdRandom4K: random 4 KiB reads of a layer (no cache, so every
// read is cold) through a loopback proxy adding 50 ms per request, issued
// one at a time versus 16 at a time.
func BenchmarkColdRandom4K(b *testing.B) {
	u, data, _ := slowRegistry(b, 16<<20, 50*time.Millisecond)
	for _, qd := range []int{1, 16} {
		b.Run(fmt.Sprintf("inflight=%d", qd), func(b *testing.B) {
			c, _ := newClient(b, remote.Options{ReadAhead: -1, MaxInFlight: qd})
			blob, err := c.Open(context.Background(), u)
			if err != nil {
				b.Fatal(err)
			}
			defer blob.Close()
			b.SetBytes(4096)
			b.ResetTimer()
			var wg sync.WaitGroup
			next := make(chan int64)
			for g := 0; g < qd; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					p := make([]byte, 4096)
					for off := range next {
						if _, err := blob.ReadAtContext(context.Background(), p, off); err != nil {
							b.Error(err)
						}
					}
				}()
			}
			r := rand.New(rand.NewPCG(1, 2))
			for i := 0; i < b.N; i++ {
				next <- r.Int64N(int64(len(data))/4096) * 4096
			}
			close(next)
			wg.Wait()
		})
	}
}

// BenchmarkColdSequential reads a layer from start to end in 256 KiB reads
// through the 50 ms proxy: one 256 KiB request at a time (upstream's
// pattern) versus read-ahead of 8 × 1 MiB chunks.
func BenchmarkColdSequential(b *testing.B) {
	const size = 8 << 20
	u, _, _ := slowRegistry(b, size, 50*time.Millisecond)
	for _, mode := range []string{"one-at-a-time", "pipelined"} {
		b.Run(mode, func(b *testing.B) {
			o := remote.Options{ReadAhead: -1, MaxInFlight: 1, ChunkSize: 256 << 10}
			if mode == "pipelined" {
				o = remote.Options{ReadAhead: 8, ChunkSize: 1 << 20}
			}
			b.SetBytes(size)
			for i := 0; i < b.N; i++ {
				c, _ := newClient(b, o)
				blob, err := c.Open(context.Background(), u)
				if err != nil {
					b.Fatal(err)
				}
				p := make([]byte, 256<<10)
				for off := int64(0); off < size; off += int64(len(p)) {
					if _, err := blob.ReadAtContext(context.Background(), p, off); err != nil {
						b.Fatal(err)
					}
				}
				blob.Close()
			}
		})
	}
}

// BenchmarkFetchAmplification reads random 4 KiB pages of a 32 MiB layer
// through each cache and reports bytes fetched from the registry per byte
// read.
func BenchmarkFetchAmplification(b *testing.B) {
	reg := registrytest.New(b, registrytest.Options{})
	data := layer(32<<20, 32)
	dgst := reg.PushBlob(b, "amp/app", data)
	u := remote.BlobURL(reg.RepoBlobURL("amp/app"), dgst)
	mk := map[string]func(dir string) core.Cache{
		"none": func(string) core.Cache { return nil },
		"file": func(d string) core.Cache { c, _ := file.New(file.Options{Dir: d, MinFreeBytes: -1}); return c },
		"download": func(string) core.Cache {
			c, _ := download.New(download.Options{})
			return c
		},
		"ocf": func(d string) core.Cache { c, _ := ocf.New(ocf.Options{Dir: d, CapacityBytes: 64 << 20}); return c },
	}
	for _, name := range []string{"none", "file", "download", "ocf"} {
		b.Run(name, func(b *testing.B) {
			cache := mk[name](b.TempDir())
			if cache != nil {
				defer cache.Close()
			}
			c, _ := newClient(b, remote.Options{ReadAhead: -1})
			lo := remote.NewLayerOpener(c, remote.LayerOpenerOptions{Cache: cache})
			defer lo.Close()
			f, err := lo.OpenRemote(context.Background(), u, config.Layer{Digest: dgst, Size: uint64(len(data)), Dir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			reg.ResetCounts()
			r := rand.New(rand.NewPCG(3, 4))
			p := make([]byte, 4096)
			b.SetBytes(4096)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := f.ReadAt(p, r.Int64N(int64(len(data))/4096)*4096); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(reg.Counts().BlobBytes)/float64(4096*b.N), "fetched/read")
		})
	}
}

// BenchmarkDownload downloads a 32 MiB layer with and without a maxMBps
// cap of 64 MiB/s.
func BenchmarkDownload(b *testing.B) {
	reg := registrytest.New(b, registrytest.Options{})
	data := layer(32<<20, 33)
	dgst := reg.PushBlob(b, "dl/app", data)
	u := remote.BlobURL(reg.RepoBlobURL("dl/app"), dgst)
	for _, capMB := range []int64{0, 64} {
		b.Run(fmt.Sprintf("maxMBps=%d", capMB), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for i := 0; i < b.N; i++ {
				c, _ := newClient(b, remote.Options{})
				blob, err := c.Open(context.Background(), u)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := remote.DownloadLayer(context.Background(), blob, b.TempDir(), dgst,
					remote.DownloadOptions{MaxBytesPerSecond: capMB << 20}, false); err != nil {
					b.Fatal(err)
				}
				blob.Close()
			}
		})
	}
}
