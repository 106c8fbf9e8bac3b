package lsmt

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

// benchRecords returns n sorted records with gaps, as the merged index of
// a fragmented image looks. Clustered records crowd into a few narrow
// regions (like file system metadata) separated by wide gaps.
func benchRecords(n int, clustered bool) []Mapping {
	r := rand.New(rand.NewPCG(1, 2))
	recs := make([]Mapping, n)
	off := uint64(0)
	for i := range recs {
		off += r.Uint64N(16)
		if clustered && i%1000 == 999 {
			off += 1 << 24 // 8 GiB gap every 1000 records
		}
		l := 1 + r.Uint64N(64)
		recs[i] = Mapping{Offset: off, Length: uint32(l), MOffset: 8 + off, Tag: uint8(i % 3)}
		off += l
	}
	return recs
}

var benchSizes = []int{1000, 10_000, 100_000, 1_000_000}

// BenchmarkIndexLookup measures point lookups (the record holding or
// following a random sector) in a merged index: "radix" is this package's
// lookup structure, "binary" a binary search over the same sorted records
// (upstream's method), in the same run.
func BenchmarkIndexLookup(b *testing.B) {
	for _, dist := range []string{"uniform", "clustered"} {
		for _, n := range benchSizes {
			recs := benchRecords(n, dist == "clustered")
			ix := newFlatIndex(recs)
			end := recs[n-1].End()
			qs := make([]uint64, 4096)
			r := rand.New(rand.NewPCG(3, 4))
			for i := range qs {
				if dist == "clustered" {
					// Query where the records are, not the empty gaps.
					qs[i] = recs[r.IntN(n)].Offset + r.Uint64N(16)
				} else {
					qs[i] = r.Uint64N(end)
				}
			}
			b.Run(fmt.Sprintf("%s/radix/%d", dist, n), func(b *testing.B) {
				lookupRounds(b, qs, ix.first)
			})
			b.Run(fmt.Sprintf("%s/binary/%d", dist, n), func(b *testing.B) {
				lookupRounds(b, qs, func(q uint64) int {
					return sort.Search(len(recs), func(j int) bool { return recs[j].End() > q })
				})
			})
		}
	}
}

// lookupRounds runs rounds of len(qs) lookups (one round per benchmark
// iteration; ns/op is per round) and reports the mean and the best round's
// throughput. On a shared machine the best round is the figure that
// compares with an idle core; the mean includes time the benchmark was
// descheduled.
func lookupRounds(b *testing.B, qs []uint64, f func(uint64) int) {
	best := time.Duration(1 << 62)
	sink := 0
	for b.Loop() {
		t0 := time.Now()
		for _, q := range qs {
			sink += f(q)
		}
		best = min(best, time.Since(t0))
	}
	b.ReportMetric(float64(b.N*len(qs))/b.Elapsed().Seconds()/1e6, "Mlookups/s")
	b.ReportMetric(float64(len(qs))/best.Seconds()/1e6, "best-Mlookups/s")
	_ = sink
}

// BenchmarkIndexLookupRange measures the lookup of a random 4 KiB range
// (the records it touches, clipped), as a read does.
func BenchmarkIndexLookupRange(b *testing.B) {
	for _, n := range benchSizes {
		recs := benchRecords(n, false)
		ix := newFlatIndex(recs)
		end := recs[n-1].End()
		qs := make([]uint64, 1<<16)
		r := rand.New(rand.NewPCG(3, 4))
		for i := range qs {
			qs[i] = r.Uint64N(end)
		}
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var arr [8]Mapping
			sink := 0
			for i := 0; b.Loop(); i++ {
				q := qs[i&(len(qs)-1)]
				sink += len(ix.Lookup(arr[:0], q, q+8))
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/1e6, "Mlookups/s")
			_ = sink
		})
	}
}
