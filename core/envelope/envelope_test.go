package envelope_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	_ "github.com/overlaybd-go/overlaybd/codecs/all"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/envelope"
	"github.com/overlaybd-go/overlaybd/core/zfile"
	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

func vector(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(testvectors.Path(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readAll(t testing.TB, f core.File) []byte {
	t.Helper()
	b := make([]byte, f.Size())
	if n, err := f.ReadAt(b, 0); n != len(b) || (err != nil && err != io.EOF) {
		t.Fatalf("read %d of %d: %v", n, len(b), err)
	}
	return b
}

func TestOpenKinds(t *testing.T) {
	plain := zfiletest.Plain()
	rwlog := vector(t, "lsmt/rw-log.commit")
	for _, tc := range []struct {
		rel   string
		kinds []envelope.Kind
		want  []byte
	}{
		{"zfile/plain.lz4-bs4.zfile.tar", []envelope.Kind{"tar", "zfile", "raw"}, plain},
		{"zfile/plain.zstd-bs32.zfile", []envelope.Kind{"zfile", "raw"}, plain},
		{"lsmt/rw-log.lz4-bs4.zcommit", []envelope.Kind{"zfile", "lsmt"}, rwlog},
		{"lsmt/rw-log.commit.zfile", []envelope.Kind{"zfile", "lsmt"}, rwlog},
		{"lsmt/rw-log.commit", []envelope.Kind{"lsmt"}, rwlog},
		{"stack/merged-by-tool.zfile", []envelope.Kind{"zfile", "lsmt"}, vector(t, "stack/merged-by-tool.commit")},
		// GNU tar's "ustar  " magic is not overlaybd's envelope: used as is.
		{"apply/layer.tar", []envelope.Kind{"raw"}, vector(t, "apply/layer.tar")},
		{"lsmt/main.raw.zst", []envelope.Kind{"raw"}, vector(t, "lsmt/main.raw.zst")},
	} {
		t.Run(tc.rel, func(t *testing.T) {
			f, d, err := envelope.Open(zfiletest.NewMemFile(vector(t, tc.rel)))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if !slices.Equal(d.Kinds, tc.kinds) {
				t.Fatalf("kinds %v, want %v", d.Kinds, tc.kinds)
			}
			if tc.want != nil && !bytes.Equal(readAll(t, f), tc.want) {
				t.Fatal("unwrapped content differs")
			}
			if d.InnerSize != f.Size() {
				t.Fatalf("InnerSize %d, size %d", d.InnerSize, f.Size())
			}
		})
	}
}

// TestTarVector checks the envelope of zfile/plain.lz4-bs4.zfile.tar: its
// member is the ZFile made without -t, and our headers are byte-identical.
func TestTarVector(t *testing.T) {
	tarred := vector(t, "zfile/plain.lz4-bs4.zfile.tar")
	z := vector(t, "zfile/plain.lz4-bs4.zfile")
	f, d, err := envelope.Open(zfiletest.NewMemFile(tarred))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if d.Tar.PayloadOffset != envelope.PayloadOffset || d.Tar.PayloadSize != int64(len(z)) || !d.Tar.PAX || d.Tar.Name != "overlaybd.commit" {
		t.Fatalf("tar info %+v", d.Tar)
	}
	if !bytes.Equal(tarred[envelope.PayloadOffset:envelope.PayloadOffset+len(z)], z) {
		t.Fatal("member differs from the plain ZFile")
	}
	got := envelope.TarHeaders(int64(len(z)), syscall.S_IFREG|0o644)
	if !bytes.Equal(got, tarred[:envelope.PayloadOffset]) {
		t.Fatalf("tar headers differ from upstream's:\n%q\n%q", got, tarred[:envelope.PayloadOffset])
	}
}

func nativeCodecs() bool {
	_, err := core.Codecs.Lookup("lz4-native")
	return err == nil
}

// TestCreateTarZFile writes plain.bin as `overlaybd-zfile -t` does. With the
// cgo codecs the file is byte-identical to the vector.
func TestCreateTarZFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.zfile.tar")
	o, err := envelope.Create(path, envelope.CreateOptions{Tar: true, ZFile: &zfile.Options{}})
	if err != nil {
		t.Fatal(err)
	}
	plain := zfiletest.Plain()
	if _, err := o.ReadFrom(bytes.NewReader(plain)); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	st, _ := os.Stat(path)
	if nativeCodecs() && st.Mode().Perm() == 0o644 {
		if want := vector(t, "zfile/plain.lz4-bs4.zfile.tar"); !bytes.Equal(got, want) {
			t.Fatalf("not byte-identical to the vector (%d vs %d bytes)", len(got), len(want))
		}
	}
	f, d, err := envelope.Open(zfiletest.NewMemFile(got))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if d.String() != "tar > zfile > raw" || !bytes.Equal(readAll(t, f), plain) {
		t.Fatalf("%s: content differs", d)
	}
}

// TestCreateOverwriteHeaderInTar checks that the ZFile header rewrite lands
// inside the envelope, not at the start of the file.
func TestCreateOverwriteHeaderInTar(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out")
	o, err := envelope.Create(path, envelope.CreateOptions{Tar: true, ZFile: &zfile.Options{OverwriteHeader: true, Algorithm: "zstd"}})
	if err != nil {
		t.Fatal(err)
	}
	in := vector(t, "lsmt/rw-log.commit")
	if _, err := o.Write(in); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	h, err := zfile.ParseHeader(got[envelope.PayloadOffset:])
	if err != nil || h.Flags != 0x1b {
		t.Fatalf("header inside the envelope: %+v, %v", h, err)
	}
	f, d, err := envelope.Open(zfiletest.NewMemFile(got))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if d.String() != "tar > zfile > lsmt" || !bytes.Equal(readAll(t, f), in) {
		t.Fatalf("%s: content differs", d)
	}
}

// TestCreateRemovesPartialOutput: a block upstream could not read fails the
// output, and the file is gone.
func TestCreateRemovesPartialOutput(t *testing.T) {
	for _, tarred := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "out")
		o, err := envelope.Create(path, envelope.CreateOptions{Tar: tarred, ZFile: &zfile.Options{BlockSize: 65536}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = o.Write(zfiletest.Xorshift(3, 5*65536))
		if cerr := o.Close(); err == nil {
			err = cerr
		}
		if !errors.Is(err, zfile.ErrBlockTooLarge) {
			t.Fatalf("err %v, want ErrBlockTooLarge", err)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("partial output left behind: %v", err)
		}
	}
}

func TestCreateExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out")
	os.WriteFile(path, []byte("x"), 0o644)
	if _, err := envelope.Create(path, envelope.CreateOptions{}); !errors.Is(err, os.ErrExist) {
		t.Fatalf("existing output: %v", err)
	}
	o, err := envelope.Create(path, envelope.CreateOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	o.Write([]byte("hello"))
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "hello" {
		t.Fatalf("content %q", b)
	}
}

// TestCorruptTar: damaged envelopes are either not recognised as tar (bad
// checksum: used as is, like upstream) or rejected, never misread.
func TestCorruptTar(t *testing.T) {
	good := vector(t, "zfile/plain.lz4-bs4.zfile.tar")
	// The PAX size beyond the end of the file.
	b := bytes.Clone(good)
	b = b[:len(b)-4096]
	if _, _, err := envelope.Open(zfiletest.NewMemFile(b)); !errors.Is(err, core.ErrCorrupt) {
		t.Fatalf("truncated tar: %v", err)
	}
	// A flipped byte in the first header: not a tar any more, and not a
	// ZFile either, so it is raw content.
	b = bytes.Clone(good)
	b[5] ^= 1
	f, d, err := envelope.Open(zfiletest.NewMemFile(b))
	if err != nil || d.String() != "raw" {
		t.Fatalf("damaged first header: %v, %v", d, err)
	}
	f.Close()
	// A flipped byte in the member's header: the envelope is broken.
	b = bytes.Clone(good)
	b[1024+3] ^= 1
	if _, _, err := envelope.Open(zfiletest.NewMemFile(b)); !errors.Is(err, core.ErrCorrupt) {
		t.Fatalf("damaged member header: %v", err)
	}
}

func FuzzOpen(f *testing.F) {
	tarred := vector(f, "zfile/plain.lz4-bs4.zfile.tar")
	f.Add(tarred[:4096])
	f.Add(envelope.TarHeaders(10, 0o100644))
	f.Add(vector(f, "lsmt/rw-log.commit")[:4096])
	f.Fuzz(func(t *testing.T, b []byte) {
		file, _, err := envelope.Open(zfiletest.NewMemFile(b))
		if err != nil {
			return
		}
		buf := make([]byte, 4096)
		file.ReadAt(buf, 0)
		file.Close()
	})
}
