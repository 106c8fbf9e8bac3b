package lsmt_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
)

var fuzzCommitSeeds = []string{"stack/C.commit"}

func FuzzParseHeader(f *testing.F) {
	for _, rel := range append(fuzzCommitSeeds, "lsmt/rw-log.index", "lsmt/tool-created-1g.data") {
		b := vectorBytes(f, rel)
		f.Add(b[:lsmt.HeaderSize])
		f.Add(b[len(b)-lsmt.HeaderSize:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := lsmt.ParseHeader(b)
		if err != nil {
			if !errors.Is(err, core.ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		enc, err := h.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		h2, err := lsmt.ParseHeader(enc)
		if err != nil {
			t.Fatal(err)
		}
		if h2.Flags != h.Flags || h2.IndexOffset != h.IndexOffset || h2.IndexSize != h.IndexSize ||
			h2.VirtualSize != h.VirtualSize || h2.UUID != h.UUID || h2.ParentUUID != h.ParentUUID || !bytes.Equal(h2.Tag, h.Tag) {
			t.Fatalf("round trip changed the header: %+v -> %+v", h, h2)
		}
	})
}

// exercise reads and queries a file that opened, which must not panic.
func exercise(t *testing.T, f core.File, bs core.BlockStatuser) {
	size := f.Size()
	buf := make([]byte, 64<<10)
	for _, off := range []int64{0, size / 3 &^ 511, size - 4096, size - 1} {
		if off < 0 {
			continue
		}
		if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF && !errors.Is(err, core.ErrCorrupt) {
			t.Logf("read at %d: %v", off, err)
		}
		if size > 0 && off < size {
			if _, err := bs.BlockStatus(off, min(size-off, 1<<40)); err != nil {
				t.Fatalf("block status at %d: %v", off, err)
			}
		}
	}
}

func FuzzOpenReadOnly(f *testing.F) {
	for _, rel := range fuzzCommitSeeds {
		f.Add(vectorBytes(f, rel))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := lsmt.OpenReadOnly(zfiletest.NewMemFile(b))
		if err != nil {
			if !errors.Is(err, core.ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		exercise(t, r, r)
		var mapped int64
		for _, m := range r.Mappings() {
			if !m.Zeroed {
				mapped += int64(m.Length) * lsmt.SectorSize
			}
		}
		if mapped > 16<<20 {
			return // a valid layer, but too much data to commit in a fuzz run
		}
		var out bytes.Buffer
		if err := r.Commit(&out, lsmt.CommitOptions{}); err == nil {
			r2, err := lsmt.OpenReadOnly(zfiletest.NewMemFile(out.Bytes()))
			if err != nil {
				t.Fatalf("a commit of a valid layer does not open: %v", err)
			}
			if len(r2.Mappings()) > len(r.Mappings())*64+1 && len(r.Mappings()) > 0 {
				t.Fatalf("commit grew the index from %d to %d", len(r.Mappings()), len(r2.Mappings()))
			}
		}
	})
}

func FuzzOpenWritable(f *testing.F) {
	f.Add(vectorBytes(f, "lsmt/rw-log.data"), vectorBytes(f, "lsmt/rw-log.index"))
	f.Add(vectorBytes(f, "lsmt/tool-created-1g.data"), vectorBytes(f, "lsmt/tool-created-1g.index"))
	f.Fuzz(func(t *testing.T, data, index []byte) {
		w, err := lsmt.OpenWritable(zfiletest.NewMemFile(data), zfiletest.NewMemFile(index))
		if err != nil {
			return
		}
		defer w.Close()
		exercise(t, w, w)
		if w.Size() >= 8192 {
			if _, err := w.WriteAt(make([]byte, 4096), 4096); err != nil {
				t.Fatalf("write: %v", err)
			}
		}
	})
}
