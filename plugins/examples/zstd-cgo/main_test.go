package main

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

	_ "github.com/overlaybd-go/overlaybd/codecs/all"
	gozstd "github.com/overlaybd-go/overlaybd/codecs/zstd"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/zfile"
	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
	"github.com/overlaybd-go/overlaybd/plugins"
	"github.com/overlaybd-go/overlaybd/plugins/examples/zstd-cgo/libzstd"
)

// pluginBin is this plugin, built once per test run with go build.
var pluginBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "zstd-cgo-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginBin = filepath.Join(dir, "zstd-cgo")
	out, err := exec.Command("go", "build", "-o", pluginBin, "github.com/overlaybd-go/overlaybd/plugins/examples/zstd-cgo").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build the plugin: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func quiet() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startPlugin(tb testing.TB) *plugins.Plugin {
	tb.Helper()
	p, err := plugins.Start(context.Background(), plugins.Config{Path: pluginBin, Algorithms: []string{"zstd"}}, plugins.WithLogger(quiet()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

func decoded(tb testing.TB, p *plugins.Plugin) uint64 {
	tb.Helper()
	st, err := p.Stats(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return st.Codecs["zstd"].Decompressed
}

func inputs() [][]byte {
	r := rand.New(rand.NewPCG(5, 6))
	var out [][]byte
	for _, n := range []int{1, 3, 100, 511, 4095, 4096, 4097, 8192, 16384, 30000, 32768, 65535, 65536} {
		random, pattern := make([]byte, n), make([]byte, n)
		for i := range random {
			random[i] = byte(r.Uint32())
			pattern[i] = byte((uint32(i) * 2654435761) >> 27)
		}
		out = append(out, random, pattern, make([]byte, n))
	}
	return out
}

// checkCodec is the codec check ZFile relies on: round trips of every block
// size, interoperation with the pure-Go zstd codec both ways, refusal of a
// short destination and of damaged input with core.ErrCorrupt.
func checkCodec(t *testing.T, c core.Codec) {
	ref, err := gozstd.Go()
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range inputs() {
		comp := make([]byte, c.CompressBound(len(in)))
		n, err := c.Compress(comp, in)
		if err != nil || n <= 0 || n > len(comp) {
			t.Fatalf("compress %d bytes: %d, %v", len(in), n, err)
		}
		out := make([]byte, len(in))
		if m, err := c.Decompress(out, comp[:n]); err != nil || m != len(in) || !bytes.Equal(out, in) {
			t.Fatalf("round trip of %d bytes: %d, %v", len(in), m, err)
		}
		clear(out)
		if m, err := ref.Decompress(out, comp[:n]); err != nil || m != len(in) || !bytes.Equal(out, in) {
			t.Fatalf("pure-Go decode of %d bytes: %d, %v", len(in), m, err)
		}
		rcomp := make([]byte, ref.CompressBound(len(in)))
		rn, err := ref.Compress(rcomp, in)
		if err != nil {
			t.Fatal(err)
		}
		clear(out)
		if m, err := c.Decompress(out, rcomp[:rn]); err != nil || m != len(in) || !bytes.Equal(out, in) {
			t.Fatalf("decode of a pure-Go block of %d bytes: %d, %v", len(in), m, err)
		}
		if len(in) > 1 {
			if _, err := c.Decompress(make([]byte, len(in)-1), comp[:n]); !errors.Is(err, core.ErrCorrupt) {
				t.Fatalf("%d bytes into a short destination: %v", len(in), err)
			}
		}
	}
	in := inputs()[4]
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
			t.Fatalf("damaged block: %d, %v", m, err)
		}
		if _, err := c.Decompress(dst, comp[:r.IntN(n)]); err == nil {
			t.Fatal("truncated block decoded")
		}
	}
	if _, err := c.Decompress(dst, nil); !errors.Is(err, core.ErrCorrupt) {
		t.Fatalf("empty block: %v", err)
	}
}

func TestLibzstdInProcess(t *testing.T) { checkCodec(t, libzstd.Codec{}) }

func TestCodecThroughPlugin(t *testing.T) {
	p := startPlugin(t)
	c, err := p.Codec("zstd")
	if err != nil {
		t.Fatal(err)
	}
	before := decoded(t, p)
	checkCodec(t, c)
	if served := decoded(t, p) - before; served < uint64(3*len(inputs())) {
		t.Fatalf("the plugin counted %d decoded blocks; the checks did not go through it", served)
	}
	if v := p.Version(); v != "zstd-cgo 1.0 (libzstd "+libzstd.Version()+")" {
		t.Fatalf("version %q", v)
	}
}

func TestLz4NotServed(t *testing.T) {
	_, err := plugins.Start(context.Background(), plugins.Config{Path: pluginBin, Algorithms: []string{"lz4"}}, plugins.WithLogger(quiet()))
	if err == nil {
		t.Fatal("a zstd plugin started for lz4")
	}
	t.Log(err)
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func readVector(t *testing.T, rel string) []byte {
	b, err := os.ReadFile(testvectors.Path(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// vectors maps every ZFile vector to the file it decompresses to (the
// expected contents of testdata/README.md).
func vectors(t *testing.T) map[string][]byte {
	plain := zfiletest.Plain()
	if sha(plain) != zfiletest.PlainSHA256 {
		t.Fatal("plain input generator")
	}
	rwlog := readVector(t, "lsmt/rw-log.commit")
	if sha(rwlog) != "d42c2ce6779443a28c42ccaca3b5825d2e9ca8e1fe1126d8a57e237a510de915" {
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

func openVector(t *testing.T, rel string) *zfile.Reader {
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

// TestVectorsThroughPlugin reads every ZFile vector with zstd served by the
// plugin (lz4 stays in process) and compares with the expected content; the
// plugin's own counter proves it decoded every zstd block. It also checks
// that the plugin's compression reproduces upstream's zstd blocks byte for
// byte.
func TestVectorsThroughPlugin(t *testing.T) {
	h, err := plugins.Load(context.Background(), []plugins.Config{{Path: filepath.Base(pluginBin), Algorithms: []string{"zstd"}}},
		filepath.Dir(pluginBin), plugins.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	p := h.Plugins()[0]
	f, err := core.Codecs.Lookup("zstd")
	if err != nil {
		t.Fatal(err)
	}
	zc, err := f()
	if err != nil {
		t.Fatal(err)
	}
	zstdFiles := 0
	for rel, want := range vectors(t) {
		t.Run(rel, func(t *testing.T) {
			r := openVector(t, rel)
			defer r.Close()
			before := decoded(t, p)
			got := make([]byte, len(want)+1)
			n, err := r.ReadAt(got, 0)
			if n != len(want) || err != io.EOF {
				t.Fatalf("read %d bytes, %v; want %d and EOF", n, err, len(want))
			}
			if !bytes.Equal(got[:n], want) {
				t.Fatalf("content differs: sha256 %s, want %s", sha(got[:n]), sha(want))
			}
			served := decoded(t, p) - before
			if r.Algorithm() != "zstd" {
				if served != 0 {
					t.Fatalf("%s file: the zstd plugin decoded %d blocks", r.Algorithm(), served)
				}
				return
			}
			zstdFiles++
			if served < uint64(r.BlockCount()) {
				t.Fatalf("the plugin decoded %d blocks of %d", served, r.BlockCount())
			}
			// Byte-identical blocks: what the plugin compresses is what
			// upstream stored.
			raw, err := os.ReadFile(testvectors.Path(t, rel))
			if err != nil {
				t.Fatal(err)
			}
			bs := int64(r.Header().BlockSize)
			comp := make([]byte, zc.CompressBound(int(bs)))
			for i := range r.BlockCount() {
				off, l := r.StoredBlock(i)
				if r.Header().Verify {
					l -= 4
				}
				blk := want[i*bs : min((i+1)*bs, int64(len(want)))]
				m, err := zc.Compress(comp, blk)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(comp[:m], raw[off:off+l]) {
					t.Fatalf("block %d: the plugin's %d bytes differ from upstream's %d", i, m, l)
				}
			}
		})
	}
	if zstdFiles < 9 {
		t.Fatalf("%d zstd vectors went through the plugin", zstdFiles)
	}
}
