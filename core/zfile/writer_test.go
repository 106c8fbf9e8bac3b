package zfile_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/zfile"
	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
)

// native reports whether the registry serves the cgo codecs, whose output
// is byte-identical to upstream's.
func native() bool {
	_, err1 := core.Codecs.Lookup("lz4-native")
	_, err2 := core.Codecs.Lookup("zstd-native")
	return err1 == nil && err2 == nil
}

// writerCases are the vectors our writer must reproduce: the input, and the
// options the upstream tool or driver call used.
func writerCases(t testing.TB) map[string]struct {
	in   []byte
	opts zfile.Options
} {
	v := zfileVectors(t)
	type c = struct {
		in   []byte
		opts zfile.Options
	}
	return map[string]c{
		"zfile/plain.lz4-bs4.zfile":                   {plain, zfile.Options{Algorithm: "lz4", BlockSize: 4096}},
		"zfile/plain.lz4-bs32.zfile":                  {plain, zfile.Options{Algorithm: "lz4", BlockSize: 32768}},
		"zfile/plain.zstd-bs4.zfile":                  {plain, zfile.Options{Algorithm: "zstd", BlockSize: 4096}},
		"zfile/plain.zstd-bs32.zfile":                 {plain, zfile.Options{Algorithm: "zstd", BlockSize: 32768}},
		"zfile/plain.lz4-bs4-nocrc.zfile":             {plain, zfile.Options{Algorithm: "lz4", BlockSize: 4096, NoCRC: true}},
		"zfile/plain.zstd-bs16-nocrc.zfile":           {plain, zfile.Options{Algorithm: "zstd", BlockSize: 16384, NoCRC: true}},
		"zfile/plain.zstd-bs8-hdroverwrite.zfile":     {plain, zfile.Options{Algorithm: "zstd", BlockSize: 8192, OverwriteHeader: true}},
		"zfile/unreadable-bs64/plain.lz4-bs64.zfile":  {plain, zfile.Options{Algorithm: "lz4", BlockSize: 65536, AllowUnreadable: true}},
		"zfile/unreadable-bs64/plain.zstd-bs64.zfile": {plain, zfile.Options{Algorithm: "zstd", BlockSize: 65536, AllowUnreadable: true}},
		"lsmt/rw-log.lz4-bs4.zcommit":                 {v["lsmt/rw-log.commit.zfile"], zfile.Options{Algorithm: "lz4", BlockSize: 4096, OverwriteHeader: true}},
		"lsmt/rw-log.lz4-bs32.zcommit":                {v["lsmt/rw-log.commit.zfile"], zfile.Options{Algorithm: "lz4", BlockSize: 32768, OverwriteHeader: true}},
		"lsmt/rw-log.zstd-bs4.zcommit":                {v["lsmt/rw-log.commit.zfile"], zfile.Options{Algorithm: "zstd", BlockSize: 4096, OverwriteHeader: true}},
		"lsmt/rw-log.zstd-bs32.zcommit":               {v["lsmt/rw-log.commit.zfile"], zfile.Options{Algorithm: "zstd", BlockSize: 32768, OverwriteHeader: true}},
		"lsmt/rw-log.commit.zfile":                    {v["lsmt/rw-log.commit.zfile"], zfile.Options{}},
		"lsmt/rw-log.commit.lz4-bs4-nocrc.zfile":      {v["lsmt/rw-log.commit.zfile"], zfile.Options{Algorithm: "1", NoCRC: true}},
		"lsmt/rw-log.commit.zstd-bs32-nocrc.zfile":    {v["lsmt/rw-log.commit.zfile"], zfile.Options{Algorithm: "2", BlockSize: 32768, NoCRC: true}},
		"stack/B.zstd-bs16.zcommit":                   {v["stack/B.zstd-bs16.zcommit"], zfile.Options{Algorithm: "zstd", BlockSize: 16384, OverwriteHeader: true}},
		"stack/merged-by-tool.zfile":                  {v["stack/merged-by-tool.zfile"], zfile.Options{}},
		"apply/apply.zstd-bs32.zcommit":               {v["apply/apply.zstd-bs32.zcommit"], zfile.Options{Algorithm: "zstd", BlockSize: 32768, OverwriteHeader: true}},
	}
}

func compress(t testing.TB, in []byte, opts zfile.Options) []byte {
	t.Helper()
	out := zfiletest.NewMemFile(nil)
	w, err := zfile.NewWriterAt(out, opts)
	if err != nil {
		t.Fatal(err)
	}
	// Feed in uneven pieces: block cutting must not depend on them.
	for p := in; len(p) > 0; {
		k := min(len(p), 1+len(p)%7919)
		if _, err := w.Write(p[:k]); err != nil {
			t.Fatal(err)
		}
		p = p[k:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func decompress(t testing.TB, z []byte) []byte {
	t.Helper()
	r, err := zfile.Open(zfiletest.NewMemFile(z))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := make([]byte, r.Size())
	if n, err := r.ReadAt(got, 0); n != len(got) || (err != nil && err != io.EOF) {
		t.Fatalf("read back: %d of %d, %v", n, len(got), err)
	}
	return got
}

func parseSlots(t testing.TB, z []byte) (h, tr *zfile.Header) {
	t.Helper()
	h, err := zfile.ParseHeader(z[:zfile.HeaderSize])
	if err != nil {
		t.Fatal(err)
	}
	tr, err = zfile.ParseHeader(z[len(z)-zfile.HeaderSize:])
	if err != nil {
		t.Fatal(err)
	}
	return h, tr
}

// TestWriterReproducesVectors writes each vector's input with the options of
// the tool that made it. With the cgo codecs the files are byte-identical;
// with the pure Go codecs the container matches field by field (everything
// but the compressed payloads, their lengths and what depends on them) and
// the content round-trips.
func TestWriterReproducesVectors(t *testing.T) {
	for rel, c := range writerCases(t) {
		t.Run(rel, func(t *testing.T) {
			want := readVector(t, rel)
			got := compress(t, c.in, c.opts)
			if native() {
				if !bytes.Equal(got, want) {
					t.Fatalf("not byte-identical: %d bytes, want %d (sha256 %s, want %s)", len(got), len(want), sha(got), sha(want))
				}
				return
			}
			if !bytes.Equal(decompress(t, got), c.in) {
				t.Fatal("round trip differs")
			}
			gh, gt := parseSlots(t, got)
			wh, wt := parseSlots(t, want)
			for _, p := range []struct {
				name     string
				got, exp *zfile.Header
			}{{"header", gh, wh}, {"trailer", gt, wt}} {
				g, e := *p.got, *p.exp
				for _, x := range []*zfile.Header{&g, &e} {
					x.Digest, x.IndexCRC = 0, 0
					if x.IndexOffset != 0 {
						x.IndexOffset = 1
					}
				}
				if g != e {
					t.Errorf("%s: got %+v\nwant %+v", p.name, g, e)
				}
			}
		})
	}
}

// TestWriterWorkersIdentical checks that parallel compression writes the same
// bytes as one worker.
func TestWriterWorkersIdentical(t *testing.T) {
	for _, algo := range []string{"lz4", "zstd"} {
		one := compress(t, plain, zfile.Options{Algorithm: algo, Workers: 1})
		four := compress(t, plain, zfile.Options{Algorithm: algo, Workers: 4})
		if !bytes.Equal(one, four) {
			t.Fatalf("%s: 1 and 4 workers differ", algo)
		}
	}
}

// TestRoundTrip covers sizes around block edges, every algorithm and
// flavour, block size, CRC on and off and the header rewrite.
func TestRoundTrip(t *testing.T) {
	var algos []string
	for _, name := range core.Codecs.Names() {
		if strings.HasPrefix(name, "lz4") || strings.HasPrefix(name, "zstd") {
			algos = append(algos, name)
		}
	}
	bss := []int{4096, 8192, 16384, 32768, 65536}
	if testing.Short() {
		bss = []int{4096, 65536}
	}
	for _, algo := range algos {
		opts0 := zfile.Options{Algorithm: algo}
		for _, bs := range bss {
			sizes := []int{0, 1, bs - 1, bs, bs + 1, 3*bs + 17, 300_000}
			for _, size := range sizes {
				for _, crc := range []bool{true, false} {
					for _, ow := range []bool{false, true} {
						name := fmt.Sprintf("%s/bs%d/size%d/crc%v/ow%v", algo, bs, size, crc, ow)
						in := append(zfiletest.Xorshift(uint32(size+bs), size/2), plain[:size-size/2]...)
						opts := opts0
						opts.BlockSize, opts.NoCRC, opts.OverwriteHeader = bs, !crc, ow
						opts.AllowUnreadable = bs == 65536
						z := compress(t, in, opts)
						got := decompress(t, z)
						if !bytes.Equal(got, in) {
							t.Fatalf("%s: round trip differs", name)
						}
					}
				}
			}
		}
	}
}

// TestWriterRefusesUnreadable writes incompressible data with 64 KiB blocks:
// the writer must fail naming the block rather than write a file upstream
// cannot read.
func TestWriterRefusesUnreadable(t *testing.T) {
	for _, algo := range []string{"lz4", "zstd"} {
		w, err := zfile.NewWriter(io.Discard, zfile.Options{Algorithm: algo, BlockSize: 65536})
		if err != nil {
			t.Fatal(err)
		}
		in := append(make([]byte, 3*65536), zfiletest.Xorshift(5, 65536)...)
		_, err = w.Write(in)
		if err == nil {
			err = w.Close()
		} else {
			w.Abort()
		}
		var be *zfile.BlockTooLargeError
		if !errors.As(err, &be) || !errors.Is(err, zfile.ErrBlockTooLarge) || be.Block != 3 {
			t.Fatalf("%s: err %v, want BlockTooLargeError for block 3", algo, err)
		}
		if !strings.Contains(err.Error(), "block 3") {
			t.Fatalf("message does not name the block: %v", err)
		}
	}
}

func TestWriterOptions(t *testing.T) {
	for _, opts := range []zfile.Options{
		{Algorithm: "lzo"}, {Algorithm: "3"}, {BlockSize: 1000}, {BlockSize: 2048}, {BlockSize: 131072},
	} {
		if _, err := zfile.NewWriter(io.Discard, opts); err == nil {
			t.Errorf("%+v accepted", opts)
		}
	}
	if _, err := zfile.NewWriter(struct{ io.Writer }{io.Discard}, zfile.Options{OverwriteHeader: true}); err == nil {
		t.Error("OverwriteHeader accepted without io.WriterAt")
	}
}

// TestWriterToOSFile uses NewWriter on an *os.File with the header rewrite.
func TestWriterToOSFile(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "out.zfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := zfile.NewWriter(f, zfile.Options{OverwriteHeader: true, Algorithm: "zstd"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, bytes.NewReader(plain)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	z, _ := os.ReadFile(f.Name())
	h, _ := parseSlots(t, z)
	if h.Flags != 0x1b || h.OriginalSize != uint64(len(plain)) {
		t.Fatalf("header %+v", h)
	}
	if !bytes.Equal(decompress(t, z), plain) {
		t.Fatal("round trip differs")
	}
}
