package mkfs

import "testing"

func TestWriteNonZero(t *testing.T) {
	b := make([]byte, 5*BlockSize)
	b[BlockSize+7] = 1
	b[2*BlockSize] = 2
	b[4*BlockSize+BlockSize-1] = 3
	var rec recorder
	if err := writeNonZero(&rec, b, 1<<20); err != nil {
		t.Fatal(err)
	}
	want := []write{{1<<20 + BlockSize, 2 * BlockSize}, {1<<20 + 4*BlockSize, BlockSize}}
	if len(rec.w) != len(want) {
		t.Fatalf("writes %v, want %v", rec.w, want)
	}
	for i := range want {
		if rec.w[i] != want[i] {
			t.Fatalf("writes %v, want %v", rec.w, want)
		}
	}
}

type write struct{ off, n int64 }

type recorder struct{ w []write }

func (r *recorder) WriteAt(p []byte, off int64) (int, error) {
	r.w = append(r.w, write{off, int64(len(p))})
	return len(p), nil
}
