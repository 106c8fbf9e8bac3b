package lsmt

import (
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

func m3(o, l, mo uint64) Mapping { return Mapping{Offset: o, Length: uint32(l), MOffset: mo} }

// TestIndex0Insert is upstream's TEST(Index0, insert).
func TestIndex0Insert(t *testing.T) {
	var x rwIndex
	for _, m := range []Mapping{m3(0, 20, 0), m3(10, 15, 50), m3(30, 100, 20), m3(5, 10, 3), m3(40, 10, 123), m3(200, 10, 2133), m3(150, 100, 21)} {
		x.Insert(m)
	}
	want := []Mapping{m3(0, 5, 0), m3(5, 10, 3), m3(15, 10, 55), m3(30, 10, 20), m3(40, 10, 123), m3(50, 80, 40), m3(150, 100, 21)}
	if got := x.All(); !slices.Equal(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}

func m4(o, l, mo uint64, tag uint8) Mapping {
	return Mapping{Offset: o, Length: uint32(l), MOffset: mo, Tag: tag}
}

// TestMergeUpstream is upstream's TEST(Index, merge) with L0 over L1.
func TestMergeUpstream(t *testing.T) {
	l0 := []Mapping{m3(5, 5, 0), m3(10, 10, 50), m3(100, 10, 20)}
	l1 := []Mapping{m3(0, 1, 7), m3(2, 4, 5), m3(15, 10, 22), m3(30, 15, 89), m3(87, 50, 32), m3(150, 10, 84)}
	got, err := mergeIndexes([][]Mapping{l0, l1})
	if err != nil {
		t.Fatal(err)
	}
	// Upstream tags the upper 1 and the lower 0 in its combo index; here
	// the upper is tag 0 and the lower tag 1.
	want := []Mapping{m4(0, 1, 7, 1), m4(2, 3, 5, 1), m4(5, 5, 0, 0), m4(10, 10, 50, 0), m4(20, 5, 27, 1),
		m4(30, 15, 89, 1), m4(87, 13, 32, 1), m4(100, 10, 20, 0), m4(110, 27, 55, 1), m4(150, 10, 84, 1)}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	ix := newFlatIndex(got)
	if l := ix.Lookup(nil, 0, 10000); !slices.Equal(l, want) {
		t.Fatalf("lookup %v", l)
	}
}

// seed returns the random seed of a test: OVERLAYBD_SEED if set, else the
// time; it is logged so that a failure can be replayed.
func seed(t testing.TB) uint64 {
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv("OVERLAYBD_SEED"); v != "" {
		s, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (replay with OVERLAYBD_SEED=%d)", s, s)
	return s
}

// model is a per-sector reference: for each sector, the mapping's identity
// (moffset of the sector, zeroed, tag) or nothing.
type model map[uint64]Mapping

func (md model) insert(m Mapping) {
	for i := uint64(0); i < uint64(m.Length); i++ {
		s := m
		s.Offset, s.Length = m.Offset+i, 1
		if !m.Zeroed {
			s.MOffset = m.MOffset + i
		}
		md[m.Offset+i] = s
	}
}

func expand(ms []Mapping) model {
	md := model{}
	for _, m := range ms {
		md.insert(m)
	}
	return md
}

func checkSorted(t *testing.T, ms []Mapping) {
	t.Helper()
	for i := range ms {
		if ms[i].Length == 0 {
			t.Fatalf("empty record %d %v", i, ms[i])
		}
		if i > 0 && ms[i-1].End() > ms[i].Offset {
			t.Fatalf("records %v %v overlap", ms[i-1], ms[i])
		}
	}
}

func randMapping(r *rand.Rand, space uint64) Mapping {
	m := Mapping{Offset: r.Uint64N(space), Length: uint32(1 + r.IntN(40)), MOffset: r.Uint64N(1 << 40)}
	if r.IntN(5) == 0 {
		m.Zeroed = true
	}
	return m
}

func TestRWIndexRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 1))
	for round := 0; round < 20; round++ {
		var x rwIndex
		md := model{}
		space := uint64(100 + r.IntN(5000))
		for i := 0; i < 2000; i++ {
			m := randMapping(r, space)
			if r.IntN(50) == 0 {
				m.Offset, m.Length = r.Uint64N(space/2), uint32(space/2) // big overwrite
			}
			x.Insert(m)
			md.insert(m)
		}
		all := x.All()
		checkSorted(t, all)
		if len(all) != x.Len() {
			t.Fatalf("Len %d, records %d", x.Len(), len(all))
		}
		got := expand(all)
		if len(got) != len(md) {
			t.Fatalf("round %d: %d sectors mapped, model %d", round, len(got), len(md))
		}
		for s, m := range md {
			if got[s] != m {
				t.Fatalf("round %d sector %d: %v, model %v", round, s, got[s], m)
			}
		}
		// Lookups of random ranges agree with All, clipped.
		for i := 0; i < 200; i++ {
			b := r.Uint64N(space)
			e := b + r.Uint64N(200)
			l := x.Lookup(nil, b, e)
			for _, m := range l {
				if m.Offset < b || m.End() > e {
					t.Fatalf("lookup [%d,%d) returned %v", b, e, m)
				}
			}
			if ref := newFlatIndex(all).Lookup(nil, b, e); !slices.Equal(l, ref) {
				t.Fatalf("lookup [%d,%d): rw %v flat %v", b, e, l, ref)
			}
		}
	}
}

func TestMergeRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 2))
	for round := 0; round < 50; round++ {
		nl := 1 + r.IntN(6)
		space := uint64(50 + r.IntN(2000))
		layers := make([][]Mapping, nl)
		ref := model{}
		for l := nl - 1; l >= 0; l-- { // bottom first into the model
			var x rwIndex
			for i := 0; i < r.IntN(300); i++ {
				x.Insert(randMapping(r, space))
			}
			layers[l] = x.All()
			for _, m := range layers[l] {
				m.Tag = uint8(l)
				ref.insert(m)
			}
		}
		merged, err := mergeIndexes(layers)
		if err != nil {
			t.Fatal(err)
		}
		checkSorted(t, merged)
		got := expand(merged)
		if len(got) != len(ref) {
			t.Fatalf("round %d: %d sectors, model %d", round, len(got), len(ref))
		}
		for s, m := range ref {
			if got[s] != m {
				t.Fatalf("round %d sector %d: %v, model %v", round, s, got[s], m)
			}
		}
		ix := newFlatIndex(merged)
		for i := 0; i < 500; i++ {
			s := r.Uint64N(space + 100)
			want := sort0(merged, s)
			if f := ix.first(s); f != want {
				t.Fatalf("first(%d) = %d, want %d", s, f, want)
			}
		}
	}
}

func sort0(ms []Mapping, s uint64) int {
	for i, m := range ms {
		if m.End() > s {
			return i
		}
	}
	return len(ms)
}

// TestLookupBeyond2TiB checks exact lookups at sector numbers past 2^32
// (upstream's accelerator is wrong there).
func TestLookupBeyond2TiB(t *testing.T) {
	base := uint64(1) << 33
	recs := []Mapping{m3(0, 8, 8), m3(base, 8, 16), m3(base+(1<<32), 8, 24), m3(InvalidOffset-9, 8, 32)}
	ix := newFlatIndex(recs)
	for _, c := range []struct {
		s    uint64
		want int
	}{{0, 0}, {8, 1}, {base, 1}, {base + 7, 1}, {base + 8, 2}, {base + 1<<32, 2}, {base + 1<<32 + 8, 3}, {InvalidOffset - 2, 3}, {InvalidOffset - 1, 4}} {
		if got := ix.first(c.s); got != c.want {
			t.Errorf("first(%d) = %d, want %d", c.s, got, c.want)
		}
	}
	if l := ix.Lookup(nil, base+4, base+(1<<32)+2); len(l) != 2 || l[0] != m3(base+4, 4, 20) || l[1] != m3(base+1<<32, 2, 24) {
		t.Fatalf("lookup %v", l)
	}
}

func TestRecordEncoding(t *testing.T) {
	// FORMAT-LSMT §3: the compiled struct's encoding.
	m := Mapping{Offset: 0x123456789AB, Length: 0x2ABC, MOffset: 0x7EDCBA987654, Zeroed: true, Tag: 0x5A}
	var b [16]byte
	PutMapping(b[:], m)
	want := []byte{0xab, 0x89, 0x67, 0x45, 0x23, 0x01, 0xf0, 0xaa, 0x54, 0x76, 0x98, 0xba, 0xdc, 0x7e, 0x80, 0x5a}
	if !slices.Equal(b[:], want) {
		t.Fatalf("encoded % x", b)
	}
	if got := DecodeMapping(b[:]); got != m {
		t.Fatalf("decoded %v", got)
	}
	PutMapping(b[:], invalidMapping)
	if !slices.Equal(b[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0}) {
		t.Fatalf("invalid record % x", b)
	}
}

func TestUUID(t *testing.T) {
	u, err := ParseUUID("aaaaaaaa-0000-4000-8000-000000000001")
	if err != nil || u.String() != "AAAAAAAA-0000-4000-8000-000000000001" {
		t.Fatalf("%v %v", u, err)
	}
	// Positions 8/13/18/23 may be hex digits and are skipped.
	if u2, err := ParseUUID("aaaaaaaa00000a40000800000000000000001"[:36]); err != nil || u2.IsNull() {
		t.Fatalf("%v %v", u2, err)
	}
	for _, bad := range []string{"", "aaaaaaaa-0000-4000-8000-00000000000", "aaaaaaaa-0000-4000-8000-0000000000011", "gaaaaaaa-0000-4000-8000-000000000001", "aaaaaaaa_0000-4000-8000-000000000001"} {
		if _, err := ParseUUID(bad); err == nil {
			t.Errorf("ParseUUID(%q) accepted", bad)
		}
	}
	if (UUID{}).String() != "00000000-0000-0000-0000-000000000000" {
		t.Fatal("null uuid text")
	}
	n := NewUUID()
	if n[6]>>4 != 4 || n[8]>>6 != 2 {
		t.Fatalf("not a v4 uuid: %v", n)
	}
}

func TestCoalesceLimit(t *testing.T) {
	var ms []Mapping
	cur := uint64(8)
	for i := 0; i < 600; i++ {
		ms = append(ms, Mapping{Offset: uint64(i) * 64, Length: 64, MOffset: cur})
		cur += 64
	}
	// Different tags or kinds are never joined.
	if got := coalesce([]Mapping{{Offset: 0, Length: 8, MOffset: 8}, {Offset: 8, Length: 8, MOffset: 16, Tag: 1}}); len(got) != 2 {
		t.Fatalf("joined different tags: %v", got)
	}
	if got := coalesce([]Mapping{{Offset: 0, Length: 8, MOffset: 8, Zeroed: true}, {Offset: 8, Length: 8, MOffset: 8}}); len(got) != 2 {
		t.Fatalf("joined zeroed and data: %v", got)
	}
	if got := coalesce([]Mapping{{Offset: 0, Length: 8, MOffset: 8, Zeroed: true}, {Offset: 8, Length: 8, MOffset: 8, Zeroed: true}}); len(got) != 1 || got[0].Length != 16 {
		t.Fatalf("zeroed neighbours: %v", got)
	}
	out := coalesce(slices.Clone(ms))
	// 255 chunks of 64 = 16320 < 16383; a 256th would reach 16384.
	if out[0].Length != 16320 || out[1].Length != 16320 || out[2].Length != 600*64-2*16320 {
		t.Fatalf("coalesced lengths %v", out)
	}
}

func TestRadixIndex(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 5))
	for round := 0; round < 200; round++ {
		n := r.IntN(3000)
		keys := make([]uint64, n)
		k := uint64(0)
		if r.IntN(4) == 0 {
			k = r.Uint64N(1 << 49)
		}
		for i := range keys {
			switch r.IntN(10) {
			case 0:
				k += r.Uint64N(1 << 40) // huge gap
			case 1:
				// duplicate (zero-length records)
			default:
				k += 1 + r.Uint64N(100)
			}
			keys[i] = k
		}
		x := newRadixIndex(keys)
		for i := 0; i < 300; i++ {
			var q uint64
			if n > 0 && r.IntN(2) == 0 {
				q = keys[r.IntN(n)] - uint64(r.IntN(2))
			} else {
				q = r.Uint64N(k + 10)
			}
			want := sort.Search(n, func(j int) bool { return keys[j] > q })
			if got := x.upper(q); got != want {
				t.Fatalf("round %d n %d: upper(%d) = %d, want %d", round, n, q, got, want)
			}
		}
		if got := x.upper(^uint64(0)); got != n {
			t.Fatalf("upper(max) = %d", got)
		}
	}
}

// FuzzIndexInsert feeds raw index records to the writable index and the
// merge, and compares both with a per-sector model.
func FuzzIndexInsert(f *testing.F) {
	raw, err := os.ReadFile(testvectors.Path(f, "lsmt/rw-log.index"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw[HeaderSize:])
	f.Fuzz(func(t *testing.T, b []byte) {
		var x rwIndex
		md := model{}
		var recs []Mapping
		for _, m := range DecodeIndex(b, true) {
			m.Offset %= 1 << 14 // keep the model small
			m.Length %= 128
			x.Insert(m)
			if m.Length > 0 {
				md.insert(m)
				recs = append(recs, m)
			}
		}
		all := x.All()
		checkSorted(t, all)
		got := expand(all)
		if len(got) != len(md) {
			t.Fatalf("%d sectors mapped, model %d", len(got), len(md))
		}
		for s, m := range md {
			if got[s] != m {
				t.Fatalf("sector %d: %v, model %v", s, got[s], m)
			}
		}
		// The index as one layer over another built from the same records
		// in reverse order: the merge must follow the model of "top wins".
		var y rwIndex
		for i := len(recs) - 1; i >= 0; i-- {
			y.Insert(recs[i])
		}
		merged, err := mergeIndexes([][]Mapping{all, y.All()})
		if err != nil {
			t.Fatal(err)
		}
		checkSorted(t, merged)
		ref := model{}
		for _, m := range y.All() {
			m.Tag = 1
			ref.insert(m)
		}
		for _, m := range all {
			ref.insert(m)
		}
		mm := expand(merged)
		if len(mm) != len(ref) {
			t.Fatalf("merge: %d sectors, model %d", len(mm), len(ref))
		}
		for s, m := range ref {
			if mm[s] != m {
				t.Fatalf("merge sector %d: %v, model %v", s, mm[s], m)
			}
		}
	})
}

// TestRejectOversizedMerge is upstream's TEST(Index, reject_oversized_merge)
// with a limit of 3: exactly the limit is accepted, one more is refused.
func TestRejectOversizedMerge(t *testing.T) {
	l0 := []Mapping{m3(0, 1, 8), m3(10, 1, 9)}
	l1 := []Mapping{m3(5, 1, 8)}
	if got, err := mergeIndexesLimit([][]Mapping{l0, l1}, 3); err != nil || len(got) != 3 {
		t.Fatalf("at the limit: %v %v", got, err)
	}
	l1 = append(l1, m3(20, 1, 9))
	if _, err := mergeIndexesLimit([][]Mapping{l0, l1}, 3); err == nil {
		t.Fatal("a merge of 4 records passed a limit of 3")
	}
}
