package lsmt

import (
	"math/bits"
	"sort"
)

// radixIndex finds the first of a sorted array of keys that is greater than
// a query. A table indexed by the query's high bits (about two buckets per
// key) gives the range of positions the answer can be in. Buckets that
// hold many keys (keys crowd into narrow regions: file system metadata, hot
// files) get a table of their own over their narrower span, the same way.
// The answer is then found by a short scan, or by a binary search in the
// rare bucket that is still crowded. A lookup is typically two or three
// cache misses on a large index and a handful of instructions on a small
// one; it is exact for any key (no width limit) and never worse than a
// binary search by more than the table reads.
type radixIndex struct {
	keys   []uint64 // sorted
	start  []uint32 // start[i]: first position whose key is ≥ i<<shift
	subOf  []int32  // subOf[i]: index in subs of bucket i's table, or -1
	subs   []radixSub
	shift  uint
	maxKey uint64
}

// radixSub is the table of one crowded bucket.
type radixSub struct {
	start []uint32 // start[j]: first position whose key is ≥ base + j<<shift
	shift uint
}

// radixScan is the largest range searched by a linear scan.
const radixScan = 8

func newRadixIndex(keys []uint64) *radixIndex {
	x := &radixIndex{keys: keys}
	n := len(keys)
	if n == 0 {
		x.start = []uint32{0, 0}
		x.subOf = []int32{-1}
		return x
	}
	x.maxKey = keys[n-1]
	x.shift = shiftFor(bits.Len64(x.maxKey), n)
	nb := int(x.maxKey>>x.shift) + 1
	x.start = fillStarts(keys, 0, n, 0, x.shift, nb)
	x.subOf = make([]int32, nb)
	for i := range x.subOf {
		x.subOf[i] = -1
		lo, hi := int(x.start[i]), int(x.start[i+1])
		if hi-lo <= radixScan || x.shift == 0 {
			continue
		}
		sh := shiftFor(int(x.shift), hi-lo)
		x.subOf[i] = int32(len(x.subs))
		x.subs = append(x.subs, radixSub{
			start: fillStarts(keys, lo, hi, uint64(i)<<x.shift, sh, 1<<(x.shift-sh)),
			shift: sh,
		})
	}
	return x
}

// shiftFor returns the shift that splits a span of 2^spanBits into about
// two buckets per key for n keys.
func shiftFor(spanBits, n int) uint {
	want := bits.Len(uint(2*n - 1))
	if spanBits > want {
		return uint(spanBits - want)
	}
	return 0
}

// fillStarts returns nb+1 bucket starts over keys[lo:hi]: entry j is the
// first position p (absolute) whose key is ≥ base + j<<shift, hi if none.
func fillStarts(keys []uint64, lo, hi int, base uint64, shift uint, nb int) []uint32 {
	st := make([]uint32, nb+1)
	p := lo
	for j := 0; j <= nb; j++ {
		b := base + uint64(j)<<shift
		for p < hi && keys[p] < b {
			p++
		}
		st[j] = uint32(p)
	}
	st[nb] = uint32(hi)
	return st
}

// upper returns the position of the first key > q (len(keys) if none).
func (x *radixIndex) upper(q uint64) int {
	if q >= x.maxKey {
		return len(x.keys)
	}
	i := q >> x.shift
	lo, hi := int(x.start[i]), int(x.start[i+1])
	if hi-lo > radixScan {
		if s := x.subOf[i]; s >= 0 {
			sub := &x.subs[s]
			j := (q - i<<x.shift) >> sub.shift
			lo, hi = int(sub.start[j]), int(sub.start[j+1])
		}
	}
	// The key at hi (if any) is above the bucket, so > q: the answer is in
	// [lo, hi].
	keys := x.keys
	if hi-lo > radixScan {
		return lo + sort.Search(hi-lo, func(j int) bool { return keys[lo+j] > q })
	}
	for lo < hi && keys[lo] <= q {
		lo++
	}
	return lo
}
