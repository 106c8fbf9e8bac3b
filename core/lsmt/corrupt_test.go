package lsmt_test

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

func vectorBytes(tb testing.TB, rel string) []byte {
	b, err := os.ReadFile(testvectors.Path(tb, rel))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestCorruptCommitted(t *testing.T) {
	good := vectorBytes(t, "lsmt/rw-log.commit")
	size := len(good)
	trailer := size - lsmt.HeaderSize
	idxOff := int(binary.LittleEndian.Uint64(good[trailer+32:]))
	cases := map[string]func(b []byte) []byte{
		"bad header magic":  func(b []byte) []byte { b[0] = 'X'; return b },
		"bad magic1":        func(b []byte) []byte { b[20] ^= 1; return b },
		"bad trailer magic": func(b []byte) []byte { b[trailer+3] = 0; return b },
		"truncated":         func(b []byte) []byte { return b[:size-100] },
		"truncated to 5000": func(b []byte) []byte { return b[:5000] },
		"empty":             func(b []byte) []byte { return nil },
		"header is index":   func(b []byte) []byte { b[28] = 0x05; return b },
		"trailer not sealed": func(b []byte) []byte {
			b[trailer+28] = 0x02
			return b
		},
		"trailer is header": func(b []byte) []byte { b[trailer+28] = 0x07; return b },
		"index beyond file": func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[trailer+32:], uint64(size))
			return b
		},
		"index too long": func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[trailer+40:], 257)
			return b
		},
		"index size huge": func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[trailer+40:], 1<<62)
			return b
		},
		"unsorted records": func(b []byte) []byte {
			r0 := append([]byte(nil), b[idxOff:idxOff+16]...)
			copy(b[idxOff:], b[idxOff+16:idxOff+32])
			copy(b[idxOff+16:], r0)
			return b
		},
		"overlapping records": func(b []byte) []byte {
			// Record 1 starts inside record 0 ({0,24,8}).
			w0 := binary.LittleEndian.Uint64(b[idxOff+16:])
			binary.LittleEndian.PutUint64(b[idxOff+16:], w0&^(1<<50-1)|10)
			return b
		},
		"data outside the data region": func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[idxOff+8:], uint64(idxOff/512))
			return b
		},
		"data in the header": func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[idxOff+8:], 2)
			return b
		},
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			b := mutate(append([]byte(nil), good...))
			_, err := lsmt.OpenReadOnly(zfiletest.NewMemFile(b))
			if err == nil {
				t.Fatal("opened a corrupt layer")
			}
			if !errors.Is(err, core.ErrCorrupt) {
				t.Fatalf("error %v does not wrap core.ErrCorrupt", err)
			}
			t.Log(err)
		})
	}
}

func TestCorruptWritable(t *testing.T) {
	data := vectorBytes(t, "lsmt/rw-log.data")
	index := vectorBytes(t, "lsmt/rw-log.index")
	open := func(d, i []byte) error {
		w, err := lsmt.OpenWritable(zfiletest.NewMemFile(d), zfiletest.NewMemFile(i))
		if err == nil {
			w.Close()
		}
		return err
	}
	if err := open(data, index); err != nil {
		t.Fatal(err)
	}
	mut := func(b []byte, f func([]byte)) []byte { c := append([]byte(nil), b...); f(c); return c }
	for name, c := range map[string][2][]byte{
		"bad data magic":     {mut(data, func(b []byte) { b[1] = 0 }), index},
		"data header bit":    {mut(data, func(b []byte) { b[28] = 2 }), index},
		"bad index magic":    {data, mut(index, func(b []byte) { b[9] = 0 })},
		"index is data file": {data, mut(index, func(b []byte) { b[28] = 3 })},
		"index sealed":       {data, mut(index, func(b []byte) { b[28] = 5 })},
		"index offset":       {data, mut(index, func(b []byte) { b[33] = 0x20 })},
		"short index":        {data, index[:100]},
		"middle record beyond data": {data, mut(index, func(b []byte) {
			binary.LittleEndian.PutUint64(b[4096+8:], 1<<40)
		})},
	} {
		err := open(c[0], c[1])
		if err == nil || !errors.Is(err, core.ErrCorrupt) {
			t.Errorf("%s: error %v, want one wrapping core.ErrCorrupt", name, err)
		}
	}
}

// TestTornTail: records whose data is missing at the end of the log (a
// crash between the data and index appends, or lost data) are dropped;
// the layer opens and the next append replaces them.
func TestTornTail(t *testing.T) {
	data := vectorBytes(t, "lsmt/rw-log.data")
	index := vectorBytes(t, "lsmt/rw-log.index")
	// Lose the data of the last two writes (ops 13 and 14, 5 sectors) and
	// tear the last record in half.
	d := zfiletest.NewMemFile(data[:len(data)-5*512])
	x := zfiletest.NewMemFile(index[:len(index)-8])
	w, err := lsmt.OpenWritable(d, x)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(w.Mappings()); n == 0 {
		t.Fatal("no records")
	}
	if x.Size() != int64(len(index)-8) {
		t.Fatal("a read-only open changed the index file")
	}
	if _, err := w.WriteAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	if want := int64(4096 + 12*16 + 16); x.Size() != want {
		t.Fatalf("index file %d bytes after the append, want %d", x.Size(), want)
	}
	w2, err := lsmt.OpenWritable(zfiletest.NewMemFile(d.Bytes()), zfiletest.NewMemFile(x.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	if _, err := w2.ReadAt(buf, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	for _, c := range buf {
		if c != 0 {
			t.Fatal("last write lost")
		}
	}
}
