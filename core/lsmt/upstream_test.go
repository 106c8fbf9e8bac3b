package lsmt_test

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"testing"

	_ "github.com/overlaybd-go/overlaybd/codecs/all"
	"github.com/overlaybd-go/overlaybd/core/envelope"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

// TestUpstreamBaseLayer opens upstream's shipped base layer (an old-writer
// ZFile of a committed layer of an empty 64 GiB ext4, FORMAT-LSMT §14),
// checks its index facts and first GiB, and recommits it: the result is
// upstream's committed file byte for byte.
func TestUpstreamBaseLayer(t *testing.T) {
	if testing.Short() {
		t.Skip("decompresses and hashes 1.5 GiB")
	}
	dir := t.TempDir()
	gz, err := os.Open(testvectors.Path(t, "upstream/ext4_64.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer gz.Close()
	zr, err := gzip.NewReader(gz)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	hdr, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, filepath.Base(hdr.Name))
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, tr); err != nil {
		t.Fatal(err)
	}
	out.Close()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	inner, desc, err := envelope.Open(psync.NewFile(f, nil))
	if err != nil {
		t.Fatal(err)
	}
	if desc.Inner() != envelope.KindLSMT || inner.Size() != 541937664 {
		t.Fatalf("%s of %d bytes", desc, inner.Size())
	}
	r, err := lsmt.OpenReadOnly(inner)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ms := r.Mappings()
	zeroed, maxData := 0, uint32(0)
	for _, m := range ms {
		if m.Zeroed {
			zeroed++
		} else {
			maxData = max(maxData, m.Length)
		}
	}
	if len(ms) != 8323 || zeroed != 8209 || maxData != 16320 || r.Size() != 64<<30 ||
		r.Trailer().UUID.String() != "C02FB491-B4D4-4904-8684-A014D032AF78" || r.Trailer().IndexSize != 8448 {
		t.Fatalf("%d records (%d zeroed, max data %d), size %d, trailer %+v", len(ms), zeroed, maxData, r.Size(), r.Trailer())
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(r, 0, 1<<30)); err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != "febb945a82f3d9a037dc02bacd7e15c0923dd13823336211886dcbb57da25a25" {
		t.Fatalf("first GiB sha256 %s", got)
	}
	h.Reset()
	if err := r.Commit(h, lsmt.CommitOptions{UUID: r.Trailer().UUID}); err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != "799dbd74cbcfbd7f37611057130b20fda0e1e671280df97cc3a05d73620d5ac7" {
		t.Fatalf("recommitted layer sha256 %s", got)
	}
}
