package zfile_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	_ "github.com/overlaybd-go/overlaybd/codecs/all"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/zfile"
	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

// rwLogCommitSHA is the sha256 of lsmt/rw-log.commit, which every rw-log
// ZFile decompresses to.
const rwLogCommitSHA = "d42c2ce6779443a28c42ccaca3b5825d2e9ca8e1fe1126d8a57e237a510de915"

func openVector(t testing.TB, rel string) core.File {
	t.Helper()
	f, err := os.Open(testvectors.Path(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return psync.NewFile(f, nil)
}

func readVector(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(testvectors.Path(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

var plain = zfiletest.Plain()

// zfileVectors maps each ZFile vector to the file it decompresses to.
func zfileVectors(t testing.TB) map[string][]byte {
	rwlog := readVector(t, "lsmt/rw-log.commit")
	if sha(rwlog) != rwLogCommitSHA {
		t.Fatalf("lsmt/rw-log.commit: sha256 %s", sha(rwlog))
	}
	return map[string][]byte{
		"zfile/plain.lz4-bs4.zfile":                   plain,
		"zfile/plain.lz4-bs32.zfile":                  plain,
		"zfile/plain.zstd-bs4.zfile":                  plain,
		"zfile/plain.zstd-bs32.zfile":                 plain,
		"zfile/plain.lz4-bs4-nocrc.zfile":             plain,
		"zfile/plain.zstd-bs16-nocrc.zfile":           plain,
		"zfile/plain.zstd-bs8-hdroverwrite.zfile":     plain,
		"zfile/unreadable-bs64/plain.lz4-bs64.zfile":  plain,
		"zfile/unreadable-bs64/plain.zstd-bs64.zfile": plain,
		"lsmt/rw-log.lz4-bs4.zcommit":                 rwlog,
		"lsmt/rw-log.lz4-bs32.zcommit":                rwlog,
		"lsmt/rw-log.zstd-bs4.zcommit":                rwlog,
		"lsmt/rw-log.zstd-bs32.zcommit":               rwlog,
		"lsmt/rw-log.commit.zfile":                    rwlog,
		"lsmt/rw-log.commit.lz4-bs4-nocrc.zfile":      rwlog,
		"lsmt/rw-log.commit.zstd-bs32-nocrc.zfile":    rwlog,
		"stack/B.zstd-bs16.zcommit":                   readVector(t, "stack/B.commit"),
		"stack/merged-by-tool.zfile":                  readVector(t, "stack/merged-by-tool.commit"),
		"apply/apply.zstd-bs32.zcommit":               readVector(t, "apply/apply.commit"),
	}
}

func TestPlainGenerator(t *testing.T) {
	if len(plain) != zfiletest.PlainSize || sha(plain) != zfiletest.PlainSHA256 {
		t.Fatalf("plain input: %d bytes, sha256 %s", len(plain), sha(plain))
	}
}

// TestVectorsDecode reads every ZFile vector whole, block by block with
// unaligned reads, and at random offsets, and compares with the expected
// file.
func TestVectorsDecode(t *testing.T) {
	for rel, want := range zfileVectors(t) {
		t.Run(rel, func(t *testing.T) {
			if ok, err := zfile.IsZFile(openVector(t, rel)); !ok || err != nil {
				t.Fatalf("IsZFile = %v, %v", ok, err)
			}
			r, err := zfile.Open(openVector(t, rel))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if r.Size() != int64(len(want)) {
				t.Fatalf("size %d, want %d", r.Size(), len(want))
			}
			got := make([]byte, len(want))
			if n, err := r.ReadAt(got, 0); n != len(got) || (err != nil && err != io.EOF) {
				t.Fatalf("ReadAt whole: %d, %v", n, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("content differs (sha256 %s, want %s)", sha(got), sha(want))
			}
			if err := r.VerifyBlocks(); r.Header().Verify && err != nil {
				t.Fatalf("VerifyBlocks: %v", err)
			} else if !r.Header().Verify && !errors.Is(err, core.ErrUnsupported) {
				t.Fatalf("VerifyBlocks without CRCs: %v", err)
			}
			checkRandomReads(t, r, want, 300)
			// Many workers and no cache: every block decoded straight into
			// the caller's buffer by concurrent goroutines.
			r4, err := zfile.Open(openVector(t, rel), zfile.WithWorkers(4), zfile.WithCacheBytes(0))
			if err != nil {
				t.Fatal(err)
			}
			defer r4.Close()
			clear(got)
			if n, err := r4.ReadAt(got, 0); n != len(got) || (err != nil && err != io.EOF) || !bytes.Equal(got, want) {
				t.Fatalf("4 workers: %d, %v, equal %v", n, err, bytes.Equal(got, want))
			}
			checkRandomReads(t, r4, want, 100)
		})
	}
}

// checkRandomReads compares reads of random sizes and alignments, including
// reads that run past the end.
func checkRandomReads(t *testing.T, r io.ReaderAt, want []byte, n int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(len(want)), 9))
	sizes := []int{1, 511, 4096, 4097, 65536, 200000}
	for i := 0; i < n; i++ {
		size := sizes[rng.IntN(len(sizes))]
		off := rng.Int64N(int64(len(want)) + 10)
		buf := make([]byte, size)
		m, err := r.ReadAt(buf, off)
		wantN := max(0, min(size, len(want)-int(off)))
		if m != wantN {
			t.Fatalf("ReadAt(%d, %d) = %d, %v; want %d", size, off, m, err, wantN)
		}
		if m < size && err != io.EOF {
			t.Fatalf("ReadAt(%d, %d) short without io.EOF: %v", size, off, err)
		}
		if m == size && err != nil && err != io.EOF {
			t.Fatalf("ReadAt(%d, %d): %v", size, off, err)
		}
		if m > 0 && !bytes.Equal(buf[:m], want[off:off+int64(m)]) {
			t.Fatalf("ReadAt(%d, %d): wrong data", size, off)
		}
	}
}

// TestUnreadableBlocksAreLarge checks that the unreadable-bs64 vectors do
// hold blocks upstream cannot read, which this reader reads anyway (above).
func TestUnreadableBlocksAreLarge(t *testing.T) {
	for _, rel := range []string{"zfile/unreadable-bs64/plain.lz4-bs64.zfile", "zfile/unreadable-bs64/plain.zstd-bs64.zfile"} {
		r, err := zfile.Open(openVector(t, rel))
		if err != nil {
			t.Fatal(err)
		}
		largest := int64(0)
		for i := range r.BlockCount() {
			_, l := r.StoredBlock(i)
			largest = max(largest, l)
		}
		if largest <= zfile.UpstreamMaxStored {
			t.Errorf("%s: largest stored block %d fits upstream's window", rel, largest)
		}
		t.Logf("%s: largest stored block %d bytes", rel, largest)
		r.Close()
	}
}
