// Package plugintest holds what the tests of the plugin host and of the
// example plugins share: building a plugin binary, the codec checks ZFile
// relies on, the ZFile vectors with their expected contents, and the check
// that a plugin's codec writes those vectors byte for byte.
package plugintest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/zfile"
	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
	"github.com/overlaybd-go/overlaybd/plugins/internal/wire"
)

// Build builds the Go package pkg into a new private folder and returns the
// binary's path and a function that removes the folder. Tests call it from
// TestMain.
func Build(pkg string) (bin string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "codec-plugin-")
	if err != nil {
		return "", nil, err
	}
	bin = filepath.Join(dir, filepath.Base(pkg))
	out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

// Inputs are blocks of many sizes up to ZFile's 64 KiB: random, patterned
// and zero.
func Inputs() [][]byte {
	r := rand.New(rand.NewPCG(5, 6))
	var out [][]byte
	for _, n := range []int{1, 2, 17, 100, 511, 512, 4095, 4096, 4097, 8192, 12345, 16384, 30000, 32768, 65535, 65536} {
		random, pattern := make([]byte, n), make([]byte, n)
		for i := range random {
			random[i] = byte(r.Uint32())
			pattern[i] = byte((uint32(i) * 2654435761) >> 27)
		}
		out = append(out, random, pattern, make([]byte, n))
	}
	return out
}

// CheckCodec runs the codec checks ZFile relies on against c: round trips of
// every input, interoperation both ways with ref (another flavour of the
// same algorithm), refusal of a short destination with an error wrapping
// core.ErrCorrupt, and damaged, truncated or empty input either refused the
// same way or decoded within the destination.
func CheckCodec(t *testing.T, c, ref core.Codec) {
	t.Helper()
	for _, in := range Inputs() {
		comp := make([]byte, c.CompressBound(len(in)))
		n, err := c.Compress(comp, in)
		if err != nil || n <= 0 || n > len(comp) {
			t.Fatalf("%s: compress %d bytes: %d, %v", c.Name(), len(in), n, err)
		}
		out := make([]byte, len(in))
		if m, err := c.Decompress(out, comp[:n]); err != nil || m != len(in) || !bytes.Equal(out, in) {
			t.Fatalf("%s: round trip of %d bytes: %d, %v", c.Name(), len(in), m, err)
		}
		clear(out)
		if m, err := ref.Decompress(out, comp[:n]); err != nil || m != len(in) || !bytes.Equal(out, in) {
			t.Fatalf("%s: reference decode of %d bytes: %d, %v", c.Name(), len(in), m, err)
		}
		rcomp := make([]byte, ref.CompressBound(len(in)))
		rn, err := ref.Compress(rcomp, in)
		if err != nil {
			t.Fatal(err)
		}
		clear(out)
		if m, err := c.Decompress(out, rcomp[:rn]); err != nil || m != len(in) || !bytes.Equal(out, in) {
			t.Fatalf("%s: decode of a reference block of %d bytes: %d, %v", c.Name(), len(in), m, err)
		}
		if len(in) > 1 {
			if _, err := c.Decompress(make([]byte, len(in)-1), comp[:n]); !errors.Is(err, core.ErrCorrupt) {
				t.Fatalf("%s: %d bytes into a short destination: %v", c.Name(), len(in), err)
			}
		}
	}
	in := Inputs()[7] // patterned 4095 bytes
	comp := make([]byte, c.CompressBound(len(in)))
	n, err := c.Compress(comp, in)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 1))
	dst := make([]byte, len(in))
	for i := 0; i < 200; i++ {
		bad := bytes.Clone(comp[:n])
		bad[r.IntN(len(bad))] ^= byte(1 + r.IntN(255))
		if m, err := c.Decompress(dst, bad); err != nil && !errors.Is(err, core.ErrCorrupt) || err == nil && m > len(dst) {
			t.Fatalf("%s: damaged block: %d, %v", c.Name(), m, err)
		}
		if m, err := c.Decompress(dst, comp[:r.IntN(n)]); err != nil && !errors.Is(err, core.ErrCorrupt) || err == nil && m > len(dst) {
			t.Fatalf("%s: truncated block: %d, %v", c.Name(), m, err)
		}
	}
	if m, err := c.Decompress(dst, nil); err != nil && !errors.Is(err, core.ErrCorrupt) || err == nil && m != 0 {
		t.Fatalf("%s: empty block: %d, %v", c.Name(), m, err)
	}
}

// SHA256 is the hex sha256 of b.
func SHA256(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// RWLogCommitSHA256 is the sha256 of lsmt/rw-log.commit (testdata/README.md),
// which every rw-log ZFile decompresses to.
const RWLogCommitSHA256 = "d42c2ce6779443a28c42ccaca3b5825d2e9ca8e1fe1126d8a57e237a510de915"

func readVector(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(testvectors.Path(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Vectors maps every ZFile vector to the content it decompresses to.
func Vectors(t *testing.T) map[string][]byte {
	t.Helper()
	plain := zfiletest.Plain()
	if SHA256(plain) != zfiletest.PlainSHA256 {
		t.Fatal("plain input generator differs from testdata/README.md")
	}
	rwlog := readVector(t, "lsmt/rw-log.commit")
	if SHA256(rwlog) != RWLogCommitSHA256 {
		t.Fatal("lsmt/rw-log.commit differs from testdata/README.md")
	}
	return map[string][]byte{
		"zfile/plain.lz4-bs4.zfile":                   plain,
		"zfile/plain.lz4-bs32.zfile":                  plain,
		"zfile/plain.lz4-bs4-nocrc.zfile":             plain,
		"zfile/plain.zstd-bs4.zfile":                  plain,
		"zfile/plain.zstd-bs32.zfile":                 plain,
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

// OpenVector opens a ZFile vector with the reader of core/zfile, which finds
// its codec in core.Codecs.
func OpenVector(t *testing.T, rel string) *zfile.Reader {
	t.Helper()
	f, err := os.Open(testvectors.Path(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	r, err := zfile.Open(psync.NewFile(f, nil))
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	return r
}

// ReadAll reads the whole content of r and compares it with want.
func ReadAll(t *testing.T, r *zfile.Reader, want []byte) {
	t.Helper()
	got := make([]byte, len(want)+1)
	n, err := r.ReadAt(got, 0)
	if n != len(want) || err != io.EOF {
		t.Fatalf("read %d bytes, %v; want %d and EOF", n, err, len(want))
	}
	if !bytes.Equal(got[:n], want) {
		t.Fatalf("content differs: sha256 %s, want %s", SHA256(got[:n]), SHA256(want))
	}
}

// Quiet is a logger that discards everything, for the plugins of a test.
func Quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// StatsReader is a running plugin's view of its own counters, as
// *plugins.Plugin gives them.
type StatsReader interface {
	Stats(ctx context.Context) (*wire.Stats, error)
}

// Counters returns the plugin's counters of the codec alg.
func Counters(tb testing.TB, p StatsReader, alg string) wire.CodecStats {
	tb.Helper()
	st, err := p.Stats(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return st.Codecs[alg]
}

// WriterCase is the input of a ZFile vector and the options it was written
// with.
type WriterCase struct {
	In   []byte
	Opts zfile.Options
}

// CheckWriter writes the input of each case, keyed by the vector's path,
// with core/zfile's writer and checks that the file is the vector byte for
// byte and that the plugin p compressed every block of it with alg: the
// codec registered for alg must be the plugin's.
func CheckWriter(t *testing.T, p StatsReader, alg string, cases map[string]WriterCase) {
	t.Helper()
	for rel, c := range cases {
		t.Run(rel, func(t *testing.T) {
			want := readVector(t, rel)
			before := Counters(t, p, alg).Compressed
			out := zfiletest.NewMemFile(nil)
			w, err := zfile.NewWriterAt(out, c.Opts)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(c.In); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if got := out.Bytes(); !bytes.Equal(got, want) {
				t.Fatalf("not byte-identical: %d bytes, want %d", len(got), len(want))
			}
			bs := max(c.Opts.BlockSize, 4096)
			if got, blocks := Counters(t, p, alg).Compressed-before, (len(c.In)+bs-1)/bs; got != uint64(blocks) {
				t.Fatalf("the plugin compressed %d blocks, want %d", got, blocks)
			}
		})
	}
}
