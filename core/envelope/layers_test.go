package envelope_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/envelope"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
)

// Expected raw images (vectors README).
const (
	rawMain   = "3f5ae43d7b2f67b16af3f888016c9c3862415afb23032e86e071cd94ddfee7bc"
	rawB      = "7c1d141c96e3816afd33175362d338498244a88996ae18a2b86fa020718fc462"
	rawMerged = "1b9080e2fee87dd365461b1954d0ec5aef94ff96ade24da93499d01a70322e4b"
	rawApply  = "61acd17bc0724f1a18d2c537f5fa19d04f9b27aab43d11478f78e9f55d100bb0"
)

// openLayer opens a layer blob held in memory with OpenLayer.
func openLayer(t *testing.T, blob []byte) *lsmt.ReadOnly {
	t.Helper()
	l, err := envelope.OpenLayer(zfiletest.NewMemFile(blob))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func hashFile(t *testing.T, f io.ReaderAt, size int64) string {
	t.Helper()
	h := sha256.New()
	buf := make([]byte, 4<<20)
	for off := int64(0); off < size; {
		n := min(int64(len(buf)), size-off)
		if _, err := f.ReadAt(buf[:n], off); err != nil && err != io.EOF {
			t.Fatalf("read at %d: %v", off, err)
		}
		h.Write(buf[:n])
		off += n
	}
	return hex.EncodeToString(h.Sum(nil))
}

// wrapTar puts blob in overlaybd's tar envelope, as -t does.
func wrapTar(blob []byte) []byte {
	out := envelope.TarHeaders(int64(len(blob)), 0o100644)
	out = append(out, blob...)
	pad := (512 - len(out)%512) % 512
	return append(out, make([]byte, pad+1024)...)
}

// TestLayersReadAsRawImages opens the compressed layer vectors, plain and
// tar-wrapped, through the envelope and the LSMT reader, and compares the
// virtual disks with the expected raw images.
func TestLayersReadAsRawImages(t *testing.T) {
	layers := []struct {
		rel  string
		want string
	}{
		{"lsmt/rw-log.lz4-bs4.zcommit", rawMain},
		{"lsmt/rw-log.zstd-bs32.zcommit", rawMain},
		{"lsmt/rw-log.commit.lz4-bs4-nocrc.zfile", rawMain},
		{"stack/B.zstd-bs16.zcommit", rawB},
		{"stack/merged-by-tool.zfile", rawMerged},
	}
	if !testing.Short() {
		layers = append(layers, []struct {
			rel  string
			want string
		}{
			{"lsmt/rw-log.lz4-bs32.zcommit", rawMain},
			{"lsmt/rw-log.zstd-bs4.zcommit", rawMain},
			{"lsmt/rw-log.commit.zfile", rawMain},
			{"lsmt/rw-log.commit.zstd-bs32-nocrc.zfile", rawMain},
			{"apply/apply.zstd-bs32.zcommit", rawApply},
		}...)
	}
	for i, tc := range layers {
		t.Run(tc.rel, func(t *testing.T) {
			blob := vector(t, tc.rel)
			if i%2 == 1 {
				blob = wrapTar(blob)
			}
			l := openLayer(t, blob)
			defer l.Close()
			if got := hashFile(t, l, l.Size()); got != tc.want {
				t.Fatalf("raw image sha256 %s, want %s", got, tc.want)
			}
		})
	}
}

// TestStackWithCompressedLayer stacks A, the zstd ZFile of B (tar-wrapped)
// and C: the merged disk is the expected one.
func TestStackWithCompressedLayer(t *testing.T) {
	var files []core.File
	for _, blob := range [][]byte{vector(t, "stack/A.commit"), wrapTar(vector(t, "stack/B.zstd-bs16.zcommit")), vector(t, "stack/C.commit")} {
		inner, _, err := envelope.Open(zfiletest.NewMemFile(blob))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, inner)
	}
	s, err := lsmt.OpenStack(files, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := hashFile(t, s, s.Size()); got != rawMerged {
		t.Fatalf("merged sha256 %s, want %s", got, rawMerged)
	}
}

// TestUpstreamBaseLayerDisk reads overlaybd's shipped base layer (an lz4
// ZFile of a committed layer of an empty 64 GiB ext4) as a virtual disk and
// compares its first 1 GiB with the expected hash.
func TestUpstreamBaseLayerDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("hashes 1 GiB")
	}
	gz, err := gzip.NewReader(bytes.NewReader(vector(t, "upstream/ext4_64.tar.gz")))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var blob []byte
	for blob == nil {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("ext4_64 not found: %v", err)
		}
		if strings.TrimPrefix(h.Name, "./") == "ext4_64" {
			if blob, err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
	}
	l := openLayer(t, blob)
	defer l.Close()
	if l.Size() != 64<<30 {
		t.Fatalf("virtual size %d", l.Size())
	}
	if got := hashFile(t, l, 1<<30); got != "febb945a82f3d9a037dc02bacd7e15c0923dd13823336211886dcbb57da25a25" {
		t.Fatalf("first GiB sha256 %s", got)
	}
}
