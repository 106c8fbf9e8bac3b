package zfile_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/zfile"
	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
)

// readAllOrErr reads the whole file with a mix of request sizes and returns
// the bytes read before the first error.
func readAllOrErr(r *zfile.Reader) ([]byte, error) {
	out := make([]byte, r.Size())
	step := 3000
	for off := 0; off < len(out); {
		n := min(step, len(out)-off)
		if _, err := r.ReadAt(out[off:off+n], int64(off)); err != nil && err != io.EOF {
			return out[:off], err
		}
		off += n
		step = 3000 + (step*7)%20000
	}
	return out, nil
}

// TestEveryByteFlipped flips every byte of small ZFiles, one at a time: the
// result is either an error wrapping core.ErrCorrupt (at open or read) or
// exactly the original data, never wrong data and never a panic.
func TestEveryByteFlipped(t *testing.T) {
	in := append(bytes.Repeat([]byte("overlaybd zfile corruption test\n"), 300), zfiletest.Xorshift(1, 6000)...)
	in = append(in, make([]byte, 5000)...)
	for _, opts := range []zfile.Options{
		{Algorithm: "lz4"},
		{Algorithm: "zstd", OverwriteHeader: true},
		{Algorithm: "lz4", BlockSize: 8192, OverwriteHeader: true},
	} {
		z := compress(t, in, opts)
		detected, intact := 0, 0
		masks := []byte{0x01, 0x80}
		if testing.Short() {
			masks = masks[:1]
		}
		stride := 1
		if raceEnabled {
			stride = 7 // the race detector makes each open ~10x slower
		}
		for i := 0; i < len(z); i += stride {
			for _, mask := range masks {
				b := bytes.Clone(z)
				b[i] ^= mask
				r, err := zfile.Open(zfiletest.NewMemFile(b), zfile.WithCacheBytes(16<<10))
				if err != nil {
					if !errors.Is(err, core.ErrCorrupt) && !errors.Is(err, core.ErrUnsupported) {
						t.Fatalf("%+v: byte %d: open error %v wraps neither ErrCorrupt nor ErrUnsupported", opts, i, err)
					}
					detected++
					continue
				}
				got, err := readAllOrErr(r)
				r.Close()
				if err != nil {
					if !errors.Is(err, core.ErrCorrupt) {
						t.Fatalf("%+v: byte %d: read error %v does not wrap ErrCorrupt", opts, i, err)
					}
					if !bytes.Equal(got, in[:len(got)]) {
						t.Fatalf("%+v: byte %d: wrong data before the error", opts, i)
					}
					detected++
					continue
				}
				if !bytes.Equal(got, in) {
					t.Fatalf("%+v: byte %d flipped with %#x: wrong data returned without error", opts, i, mask)
				}
				intact++
			}
		}
		t.Logf("%+v: %d bytes, %d flips detected, %d harmless", opts, len(z), detected, intact)
	}
}

func TestCorruptionErrors(t *testing.T) {
	z := readVector(t, "zfile/plain.lz4-bs4.zfile")
	r, err := zfile.Open(zfiletest.NewMemFile(z))
	if err != nil {
		t.Fatal(err)
	}
	h := r.Header()
	blockOff, _ := r.StoredBlock(100)
	r.Close()
	flip := func(pos int) []byte { b := bytes.Clone(z); b[pos] ^= 0x10; return b }

	// A block: open succeeds, the block's reads fail with ErrChecksum, the
	// neighbours read fine.
	br, err := zfile.Open(zfiletest.NewMemFile(flip(int(blockOff) + 7)))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := br.ReadAt(buf, 100*4096+10); !errors.Is(err, core.ErrChecksum) || !errors.Is(err, core.ErrCorrupt) {
		t.Fatalf("damaged block: %v", err)
	}
	if _, err := br.ReadAt(buf, 0); !errors.Is(err, core.ErrChecksum) {
		// Large reads over the damaged block fail too.
		if _, err := br.ReadAt(make([]byte, 1<<20), 0); !errors.Is(err, core.ErrChecksum) {
			t.Fatalf("large read over a damaged block: %v", err)
		}
	}
	if n, err := br.ReadAt(buf, 99*4096); n != 4096 || err != nil || !bytes.Equal(buf, plain[99*4096:100*4096]) {
		t.Fatalf("neighbour block: %d, %v", n, err)
	}
	br.Close()

	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"jump table", flip(int(h.IndexOffset) + 9), core.ErrChecksum},
		{"header field", flip(72), core.ErrChecksum},
		{"header padding", flip(300), core.ErrChecksum},
		{"header magic", flip(3), zfile.ErrNotZFile},
		{"trailer field", flip(len(z) - 512 + 48), core.ErrChecksum},
		{"trailer padding", flip(len(z) - 5), core.ErrChecksum},
		{"trailer magic", flip(len(z) - 512 + 1), core.ErrCorrupt},
		{"truncated by 1", z[:len(z)-1], core.ErrCorrupt},
		{"truncated to header", z[:512], core.ErrCorrupt},
		{"truncated to 100", z[:100], core.ErrCorrupt},
		{"empty", nil, core.ErrCorrupt},
	} {
		_, err := zfile.Open(zfiletest.NewMemFile(tc.b))
		if !errors.Is(err, tc.want) || !errors.Is(err, core.ErrCorrupt) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if ok, err := zfile.IsZFile(zfiletest.NewMemFile(flip(72))); ok || !errors.Is(err, core.ErrChecksum) {
		t.Errorf("IsZFile with a bad digest: %v, %v", ok, err)
	}
	if ok, err := zfile.IsZFile(zfiletest.NewMemFile(readVector(t, "lsmt/rw-log.commit"))); ok || err != nil {
		t.Errorf("IsZFile on an LSMT layer: %v, %v", ok, err)
	}
}

// TestUseDictUnsupported: upstream would mis-decompress such files.
func TestUseDictUnsupported(t *testing.T) {
	z := compress(t, plain[:10000], zfile.Options{OverwriteHeader: true})
	h, _ := zfile.ParseHeader(z)
	h.UseDict = 1
	copy(z, h.Marshal())
	if _, err := zfile.Open(zfiletest.NewMemFile(z)); !errors.Is(err, core.ErrUnsupported) {
		t.Fatalf("use_dict: %v", err)
	}
}

// ext4_64 returns the ZFile inside upstream/ext4_64.tar.gz.
func ext4_64(t testing.TB) []byte {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(readVector(t, "upstream/ext4_64.tar.gz")))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("ext4_64 not found: %v", err)
		}
		if h.Name == "ext4_64" || h.Name == "./ext4_64" {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

// TestUpstreamBaseLayer reads overlaybd's own shipped base layer, written by
// a 2021 writer that left garbage in the header (bit 4 clear, so neither
// digest nor index CRC is checked and the trailer is used).
func TestUpstreamBaseLayer(t *testing.T) {
	z := ext4_64(t)
	if sha(z) != "c3a417552a6cf9ffa959b541850bab7d7f08f4255425bf8b48c85f7b36b378d9" {
		t.Fatalf("ext4_64: sha256 %s", sha(z))
	}
	r, err := zfile.Open(zfiletest.NewMemFile(z))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Size() != 541937664 || r.BlockCount() != 132309 || r.Algorithm() != "lz4" {
		t.Fatalf("size %d, blocks %d, %s", r.Size(), r.BlockCount(), r.Algorithm())
	}
	if err := r.VerifyBlocks(); err != nil {
		t.Fatal(err)
	}
	// The content is a committed LSMT layer: header magic at 0, trailer
	// in the last 4096 bytes.
	head := make([]byte, 8)
	r.ReadAt(head, 0)
	tail := make([]byte, 8)
	r.ReadAt(tail, r.Size()-4096)
	if string(head[:4]) != "LSMT" || string(tail[:4]) != "LSMT" {
		t.Fatalf("not an LSMT layer: %q %q", head, tail)
	}
	if testing.Short() {
		t.Skip("full 541 MB decode skipped in -short")
	}
	h := sha256.New()
	buf := make([]byte, 8<<20)
	for off := int64(0); off < r.Size(); off += int64(len(buf)) {
		n, err := r.ReadAt(buf, off)
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		h.Write(buf[:n])
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != "799dbd74cbcfbd7f37611057130b20fda0e1e671280df97cc3a05d73620d5ac7" {
		t.Fatalf("decompressed sha256 %s", got)
	}
}

func FuzzParseHeader(f *testing.F) {
	for _, rel := range []string{"zfile/plain.lz4-bs4.zfile", "zfile/plain.zstd-bs8-hdroverwrite.zfile"} {
		z := readVector(f, rel)
		f.Add(z[:512])
		f.Add(z[len(z)-512:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := zfile.ParseHeader(b)
		if err != nil {
			return
		}
		// What parses marshals back to a slot that parses to the same
		// fields (the digest is recomputed when the flags ask for it).
		h2, err := zfile.ParseHeader(h.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		if h.Size == 0 {
			h.Size = zfile.StructSize
		}
		if *h2 != *h {
			t.Fatalf("re-parse differs:\n%+v\n%+v", h2, h)
		}
	})
}

func FuzzJumpTable(f *testing.F) {
	z := readVector(f, "zfile/plain.zstd-bs32.zfile")
	tr, _ := zfile.ParseHeader(z[len(z)-512:])
	f.Add(z[tr.IndexOffset:tr.IndexOffset+4*tr.IndexSize], true)
	f.Add([]byte{4, 0, 0, 0}, true)
	f.Add([]byte{0, 0, 0, 0}, false)
	f.Fuzz(func(t *testing.T, b []byte, verify bool) {
		n := uint64(len(b) / 4)
		e, err := zfile.ParseJumpTable(b[:4*n], n, verify)
		if err != nil {
			return
		}
		for i, v := range e {
			if v != binary.LittleEndian.Uint32(b[4*i:]) || v == 0 || (verify && v <= 4) {
				t.Fatalf("entry %d = %d", i, v)
			}
		}
	})
}

// FuzzOpen opens arbitrary bytes as a ZFile and reads them: errors are
// fine, panics and out-of-range results are not. Seeds are small ZFiles of
// both algorithms, with and without CRCs and header rewrite.
func FuzzOpen(f *testing.F) {
	in := append(bytes.Repeat([]byte("fuzz seed line\n"), 700), zfiletest.Xorshift(2, 3000)...)
	for _, o := range []zfile.Options{{}, {Algorithm: "zstd"}, {NoCRC: true, OverwriteHeader: true}, {Algorithm: "zstd", NoCRC: true}} {
		f.Add(compress(f, in, o))
	}
	f.Add(compress(f, nil, zfile.Options{}))
	// The ends of real upstream files (header and first blocks, jump-table
	// tail and trailer); whole files make the fuzzer crawl.
	for _, rel := range []string{"lsmt/rw-log.commit.zstd-bs32-nocrc.zfile", "zfile/plain.zstd-bs8-hdroverwrite.zfile", "lsmt/rw-log.lz4-bs4.zcommit"} {
		z := readVector(f, rel)
		f.Add(append(bytes.Clone(z[:4096]), z[len(z)-1024:]...))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := zfile.Open(zfiletest.NewMemFile(b), zfile.WithCacheBytes(64<<10))
		if err != nil {
			if !errors.Is(err, core.ErrCorrupt) && !errors.Is(err, core.ErrUnsupported) {
				t.Fatalf("open error %v wraps neither ErrCorrupt nor ErrUnsupported", err)
			}
			return
		}
		defer r.Close()
		if r.Size() > 64<<20 {
			return
		}
		if _, err := readAllOrErr(r); err != nil && !errors.Is(err, core.ErrCorrupt) {
			t.Fatalf("read error %v does not wrap ErrCorrupt", err)
		}
	})
}

// FuzzBlock puts arbitrary bytes in place of a block's payload, with a
// matching CRC so that they reach the decoder: the read fails with
// ErrCorrupt or returns a full block, never panics.
func FuzzBlock(f *testing.F) {
	for _, algo := range []string{"lz4", "zstd"} {
		z := compress(f, plain[:3*4096], zfile.Options{Algorithm: algo, OverwriteHeader: true})
		r, _ := zfile.Open(zfiletest.NewMemFile(z))
		off, l := r.StoredBlock(1)
		f.Add(algo == "zstd", z[off:off+l-4])
	}
	f.Fuzz(func(t *testing.T, zstd bool, payload []byte) {
		if len(payload) == 0 || len(payload) > 8192 {
			return
		}
		algo := zfile.AlgoLZ4
		if zstd {
			algo = zfile.AlgoZSTD
		}
		stored := binary.LittleEndian.AppendUint32(append([]byte(nil), payload...), crc(zfile.BlockCRCSeed, payload))
		table := binary.LittleEndian.AppendUint32(nil, uint32(len(stored)))
		h := zfile.Header{Flags: zfile.FlagHeader | zfile.FlagData | zfile.FlagHeaderOverwrite | zfile.FlagDigest,
			IndexOffset: uint64(512 + len(stored)), IndexSize: 1, OriginalSize: 4096, IndexCRC: crc(0, table),
			BlockSize: 4096, Algorithm: uint8(algo), Verify: true}
		file := append(append(h.Marshal(), stored...), table...)
		r, err := zfile.Open(zfiletest.NewMemFile(file))
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		buf := make([]byte, 4096)
		n, err := r.ReadAt(buf, 0)
		if err != nil && !errors.Is(err, core.ErrCorrupt) {
			t.Fatalf("read error %v", err)
		}
		if err == nil && n != 4096 {
			t.Fatalf("read %d bytes without error", n)
		}
	})
}

func crc(seed uint32, p []byte) uint32 {
	f, err := core.Checksums.Lookup("crc32c")
	if err != nil {
		panic(err)
	}
	return f().Update(seed, p)
}

// healingFile serves a damaged block until the range is invalidated a given
// number of times, like a cache that had stored bad bytes.
type healingFile struct {
	*zfiletest.MemFile
	good          []byte
	badOff        int64
	healAfter     int
	invalidations int
}

func (h *healingFile) Invalidate(off, length int64) error {
	h.invalidations++
	if off <= h.badOff && h.badOff < off+length && h.invalidations >= h.healAfter {
		h.MemFile.WriteAt(h.good[h.badOff:h.badOff+1], h.badOff)
	}
	return nil
}

// TestRefetchAfterInvalidate: a block that fails its CRC is invalidated in
// the file below and fetched again (upstream retries 3 times); the read
// succeeds when the fresh copy is good and fails with ErrChecksum otherwise.
func TestRefetchAfterInvalidate(t *testing.T) {
	z := compress(t, plain[:64<<10], zfile.Options{})
	r0, _ := zfile.Open(zfiletest.NewMemFile(z))
	off, _ := r0.StoredBlock(5)
	bad := bytes.Clone(z)
	bad[off+3] ^= 0x20
	for _, tc := range []struct {
		healAfter int
		ok        bool
	}{{1, true}, {3, true}, {4, false}} {
		hf := &healingFile{MemFile: zfiletest.NewMemFile(bad), good: z, badOff: off + 3, healAfter: tc.healAfter}
		r, err := zfile.Open(hf, zfile.WithCacheBytes(0))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64<<10)
		_, err = r.ReadAt(buf, 0)
		if tc.ok && (err != nil || !bytes.Equal(buf, plain[:64<<10])) {
			t.Fatalf("heal after %d: %v", tc.healAfter, err)
		}
		if !tc.ok && !errors.Is(err, core.ErrChecksum) {
			t.Fatalf("never healed: %v", err)
		}
		if want := min(tc.healAfter, 3); hf.invalidations != want || r.Refetches() != uint64(want) {
			t.Fatalf("heal after %d: %d invalidations, %d refetches", tc.healAfter, hf.invalidations, r.Refetches())
		}
	}
}
