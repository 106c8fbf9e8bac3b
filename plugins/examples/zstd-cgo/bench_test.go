package main

import (
	"fmt"
	"testing"
	"time"

	gozstd "github.com/overlaybd-go/overlaybd/codecs/zstd"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
	"github.com/overlaybd-go/overlaybd/plugins/examples/zstd-cgo/libzstd"
	"github.com/overlaybd-go/overlaybd/plugins/internal/plugintest"
)

// benchBlocks cuts the plain ZFile test input into blocks of bs bytes and
// compresses them as upstream does.
func benchBlocks(b *testing.B, bs int) (comp, orig [][]byte) {
	plain := zfiletest.Plain()
	c := libzstd.Codec{}
	for off := 0; off+bs <= len(plain); off += bs {
		blk := plain[off : off+bs]
		buf := make([]byte, c.CompressBound(bs))
		n, err := c.Compress(buf, blk)
		if err != nil {
			b.Fatal(err)
		}
		comp, orig = append(comp, buf[:n]), append(orig, blk)
	}
	return comp, orig
}

// pluginCodecs starts the plugin and returns its zstd codec on the data plane
// (shared memory) and through one control-service call per block.
func pluginCodecs(b *testing.B) (shm, call core.Codec) {
	p := startPlugin(b)
	shm, err := p.Codec("zstd")
	if err != nil {
		b.Fatal(err)
	}
	call, err = p.CallCodec("zstd")
	if err != nil {
		b.Fatal(err)
	}
	return shm, call
}

// BenchmarkDecode measures zstd decode throughput (decompressed bytes) of
// the plugin's data plane against the same libzstd codec in process, the
// pure-Go codec in process, and one go-plugin gRPC call per block: 4 KiB
// blocks in batches of 64, and 64 KiB blocks one at a time.
//
//	go test -run '^$' -bench Decode -benchtime 2s ./plugins/examples/zstd-cgo/
func BenchmarkDecode(b *testing.B) {
	shm, call := pluginCodecs(b)
	goz, err := gozstd.Go()
	if err != nil {
		b.Fatal(err)
	}
	peers := []struct {
		name  string
		codec core.Codec
		batch bool // one DecompressBatch call per op
	}{
		{"inprocess-libzstd", libzstd.Codec{}, false},
		{"inprocess-go", goz, false},
		{"plugin-shm", shm, true},
		{"plugin-shm-per-block", shm, false},
		{"plugin-grpc-per-block", call, false},
	}
	for _, shape := range []struct {
		name       string
		bs, blocks int
	}{{"4KiB-batch64", 4096, 64}, {"64KiB", 65536, 1}} {
		comp, orig := benchBlocks(b, shape.bs)
		for _, peer := range peers {
			if peer.batch && shape.blocks == 1 {
				continue // a batch of one is a single call
			}
			b.Run(shape.name+"/"+peer.name, func(b *testing.B) {
				blocks := make([]core.CodecBlock, shape.blocks)
				for i := range blocks {
					blocks[i].Dst = make([]byte, shape.bs)
				}
				b.SetBytes(int64(shape.bs * shape.blocks))
				b.ResetTimer()
				next := 0
				for range b.N {
					for i := range blocks {
						blocks[i].Src = comp[next]
						next = (next + 1) % len(comp)
					}
					if peer.batch {
						if err := peer.codec.(core.BatchCodec).DecompressBatch(blocks); err != nil {
							b.Fatal(err)
						}
					} else {
						for i := range blocks {
							blocks[i].N, blocks[i].Err = peer.codec.Decompress(blocks[i].Dst, blocks[i].Src)
						}
					}
					for i := range blocks {
						if blocks[i].Err != nil || blocks[i].N != shape.bs {
							b.Fatalf("block: %d, %v", blocks[i].N, blocks[i].Err)
						}
					}
				}
				b.StopTimer()
				// Spot-check the content once.
				k := (next - 1 + len(comp)) % len(comp)
				if string(blocks[len(blocks)-1].Dst) != string(orig[k]) {
					b.Fatal("wrong content")
				}
			})
		}
	}
}

// BenchmarkDecodeRatios measures the same peers as BenchmarkDecode but
// interleaved, so that the bursts of load of a shared machine hit all peers
// alike: every round gives each peer a turn of opsPerTurn operations, and
// the benchmark reports each peer's throughput (MB/s of decompressed data)
// and the ratios the data plane is judged by. A turn of one operation
// measures every plugin request cold (its process asleep since its last
// turn); longer turns measure it warm, as during a sequential read.
//
//	go test -run '^$' -bench DecodeRatios -benchtime 300x -count 3 ./plugins/examples/zstd-cgo/
func BenchmarkDecodeRatios(b *testing.B) {
	shm, call := pluginCodecs(b)
	for _, shape := range []struct {
		name       string
		bs, blocks int
	}{{"4KiB-batch64", 4096, 64}, {"64KiB", 65536, 1}} {
		comp, _ := benchBlocks(b, shape.bs)
		for _, opsPerTurn := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/turn%d", shape.name, opsPerTurn), func(b *testing.B) {
				blocks := make([]core.CodecBlock, shape.blocks)
				for i := range blocks {
					blocks[i].Dst = make([]byte, shape.bs)
				}
				check := func() {
					for i := range blocks {
						if blocks[i].Err != nil || blocks[i].N != shape.bs {
							b.Fatalf("block: %d, %v", blocks[i].N, blocks[i].Err)
						}
					}
				}
				perBlock := func(c core.Codec) func() {
					return func() {
						for i := range blocks {
							blocks[i].N, blocks[i].Err = c.Decompress(blocks[i].Dst, blocks[i].Src)
						}
					}
				}
				peers := []struct {
					name string
					run  func()
					ns   time.Duration
				}{
					{name: "inprocess", run: perBlock(libzstd.Codec{})},
					{name: "plugin", run: func() {
						if shape.blocks == 1 {
							perBlock(shm)()
							return
						}
						if err := shm.(core.BatchCodec).DecompressBatch(blocks); err != nil {
							b.Fatal(err)
						}
					}},
					{name: "grpc", run: perBlock(call)},
				}
				next := 0
				for range b.N {
					for k := range peers {
						var ns time.Duration
						for range opsPerTurn {
							for i := range blocks {
								blocks[i].Src = comp[next]
								next = (next + 1) % len(comp)
							}
							t0 := time.Now()
							peers[k].run()
							ns += time.Since(t0)
							check()
						}
						peers[k].ns += ns
					}
				}
				bytes := float64(b.N * opsPerTurn * shape.bs * shape.blocks)
				mbps := map[string]float64{}
				for _, pr := range peers {
					mbps[pr.name] = bytes / pr.ns.Seconds() / 1e6
					b.ReportMetric(mbps[pr.name], pr.name+"-MB/s")
				}
				b.ReportMetric(mbps["plugin"]/mbps["grpc"], "plugin/grpc")
				b.ReportMetric(mbps["plugin"]/mbps["inprocess"], "plugin/inprocess")
			})
		}
	}
}

// BenchmarkZFileRatios measures ZFile reads of 64 KiB-block files through
// the plugin (batched, and one block per call) against libzstd in process
// (see plugintest.ZFileReadRatios).
//
//	go test -run '^$' -bench ZFileRatios -benchtime 100x -count 5 ./plugins/examples/zstd-cgo/
func BenchmarkZFileRatios(b *testing.B) {
	shm, err := startPlugin(b).Codec("zstd")
	if err != nil {
		b.Fatal(err)
	}
	plugintest.ZFileReadRatios(b, "zstd", libzstd.Codec{}, shm)
}
