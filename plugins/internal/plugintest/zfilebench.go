package plugintest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/zfile"
	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
	"github.com/overlaybd-go/overlaybd/engines/psync"
)

// perBlock hides a codec's batching: the reader then decodes one block per
// call, as it did before it batched.
type perBlock struct{ core.Codec }

// ZFileReadRatios measures reads of a 16 MiB ZFile of 64 KiB blocks (the
// compressible part of the plain test input repeated, written with inproc) through core/zfile's
// reader, from the page cache, with three codecs taking turns within each
// round: inproc ("inprocess"), the plugin's codec ("plugin", batched
// multi-block reads), and the plugin's codec one block per call
// ("plugin-perblock", the reader before batching). Shapes: sequential
// aligned 1 MiB and 64 KiB reads, and 64 KiB reads starting half-way into
// a block (two partial blocks each); with one worker and with two. The
// decoded-block cache is off, so every read decodes what it covers. It
// reports each peer's MB/s and plugin/inprocess, plugin-perblock/inprocess.
// The codec registered for algo is restored at the end.
func ZFileReadRatios(b *testing.B, algo string, inproc, plugin core.Codec) {
	num, ok := core.Codecs.NumberOf(algo)
	if !ok {
		b.Fatalf("%s has no ZFile number", algo)
	}
	prev, err := core.Codecs.Lookup(algo)
	if err != nil {
		b.Fatal(err)
	}
	defer core.Codecs.Register(algo, num, prev)
	use := func(c core.Codec) { core.Codecs.Register(algo, num, func() (core.Codec, error) { return c, nil }) }

	const size = 16 << 20
	// The patterned, zero and text parts of the plain input: its random
	// tail would make 64 KiB blocks upstream cannot read.
	plain := zfiletest.Plain()[:3<<19]
	in := make([]byte, 0, size)
	for len(in) < size {
		in = append(in, plain[:min(len(plain), size-len(in))]...)
	}
	path := filepath.Join(b.TempDir(), "bench."+algo+".zfile")
	out, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	use(inproc)
	w, err := zfile.NewWriter(out, zfile.Options{Algorithm: algo, BlockSize: 64 << 10})
	if err == nil {
		_, err = w.Write(in)
	}
	if err == nil {
		err = w.Close()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		b.Fatal(err)
	}
	open := func(c core.Codec, workers int) *zfile.Reader {
		use(c)
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		r, err := zfile.Open(psync.NewFile(f, nil), zfile.WithWorkers(workers), zfile.WithCacheBytes(0))
		if err != nil {
			b.Fatal(err)
		}
		return r
	}

	for _, shape := range []struct {
		name       string
		n, skew    int64
		opsPerTurn int
	}{{"1MiB", 1 << 20, 0, 2}, {"64KiB", 64 << 10, 0, 32}, {"64KiB-unaligned", 64 << 10, 32 << 10, 32}} {
		for _, workers := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/workers%d", shape.name, workers), func(b *testing.B) {
				peers := []struct {
					name string
					r    *zfile.Reader
					buf  []byte
					ns   time.Duration
				}{
					{name: "inprocess", r: open(inproc, workers)},
					{name: "plugin", r: open(plugin, workers)},
					{name: "plugin-perblock", r: open(perBlock{plugin}, workers)},
				}
				for k := range peers {
					defer peers[k].r.Close()
					peers[k].buf = make([]byte, shape.n)
				}
				// Every peer reads the same ranges, in the same order.
				var off int64
				next := func() int64 {
					o := shape.skew + off
					if o+shape.n > size {
						off, o = 0, shape.skew
					}
					off += shape.n
					return o
				}
				for range b.N {
					start := off
					for k := range peers {
						off = start
						p := &peers[k]
						t0 := time.Now()
						for range shape.opsPerTurn {
							if _, err := p.r.ReadAt(p.buf, next()); err != nil {
								b.Fatalf("%s: %v", p.name, err)
							}
						}
						p.ns += time.Since(t0)
					}
				}
				b.StopTimer()
				for k := range peers[1:] {
					if !bytes.Equal(peers[k+1].buf, peers[0].buf) {
						b.Fatalf("%s read other bytes than %s", peers[k+1].name, peers[0].name)
					}
				}
				bytes := float64(int64(b.N*shape.opsPerTurn) * shape.n)
				mbps := map[string]float64{}
				for _, p := range peers {
					mbps[p.name] = bytes / p.ns.Seconds() / 1e6
					b.ReportMetric(mbps[p.name], p.name+"-MB/s")
				}
				b.ReportMetric(mbps["plugin"]/mbps["inprocess"], "plugin/inprocess")
				b.ReportMetric(mbps["plugin-perblock"]/mbps["inprocess"], "perblock/inprocess")
			})
		}
	}
}
