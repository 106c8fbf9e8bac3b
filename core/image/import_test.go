package image

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

const shaMain = "3f5ae43d7b2f67b16af3f888016c9c3862415afb23032e86e071cd94ddfee7bc"

func importFile(t *testing.T, raw string, opts ImportOptions) (*lsmt.ReadOnly, ImportStats) {
	t.Helper()
	src, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	out := filepath.Join(t.TempDir(), "layer.commit")
	f, _ := os.Create(out)
	st, err := ImportRaw(context.Background(), src, f, opts)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	lf, err := psync.New(core.EngineConfig{}).Open(out, core.OpenOptions{Flag: os.O_RDONLY})
	if err != nil {
		t.Fatal(err)
	}
	ro, err := lsmt.OpenReadOnly(lf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ro.Close() })
	return ro, st
}

func TestImportRaw(t *testing.T) {
	zb, _ := os.ReadFile(testvectors.Path(t, "lsmt/main.raw.zst"))
	d, _ := zstd.NewReader(nil)
	raw, err := d.DecodeAll(zb, nil)
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "main.raw")
	os.WriteFile(p, raw, 0o644) // written densely: every zero is on disk
	ro, st := importFile(t, p, ImportOptions{Commit: lsmt.CommitOptions{Message: []byte("imported")}})
	if got := sha(t, ro); got != shaMain {
		t.Fatalf("imported layer sha %s", got)
	}
	if st.VirtualSize != 64<<20 || st.DataBytes >= 2<<20 || st.DataBytes == 0 {
		t.Fatalf("stats %+v: zero blocks were not left out", st)
	}
	// The explicitly zeroed range of the script is a hole now, except the
	// 512 bytes written into it (in a 4 KiB block).
	exts, err := ro.BlockStatus(20971520, 262144)
	if err != nil {
		t.Fatal(err)
	}
	var data int64
	for _, e := range exts {
		if e.Flags == 0 {
			data += e.Length
		}
	}
	if data != 4096 {
		t.Fatalf("zero range holds %d data bytes: %v", data, exts)
	}
	if string(ro.Trailer().Tag) != "imported" && string(ro.Header().Tag) != "imported" {
		t.Errorf("tag %q", ro.Trailer().Tag)
	}

	// A sparse, unaligned source.
	sp := filepath.Join(dir, "sparse.raw")
	f, _ := os.Create(sp)
	f.Truncate(10<<20 + 1000)
	pat := bytes.Repeat([]byte{7}, 5000)
	f.WriteAt(pat, 3<<20+100)
	f.WriteAt([]byte{9}, 10<<20+999)
	f.Close()
	ro, st = importFile(t, sp, ImportOptions{ZeroBlockSize: 512})
	want := make([]byte, 10<<20+1024)
	copy(want[3<<20+100:], pat)
	want[10<<20+999] = 9
	got := make([]byte, ro.Size())
	ro.ReadAt(got, 0)
	if !bytes.Equal(got, want) {
		t.Fatal("sparse import differs")
	}
	if st.DataBytes != 10*512+512 {
		t.Errorf("sparse import stored %d bytes", st.DataBytes)
	}
}
