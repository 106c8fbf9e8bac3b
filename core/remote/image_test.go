package remote_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/overlaybd-go/overlaybd/caches/file"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/core/image"
	"github.com/overlaybd-go/overlaybd/core/remote"
	"github.com/overlaybd-go/overlaybd/core/zfile"
	"github.com/overlaybd-go/overlaybd/internal/registrytest"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"

	_ "github.com/overlaybd-go/overlaybd/codecs/all"
	_ "github.com/overlaybd-go/overlaybd/engines/all"
)

var stackLayers = []string{"stack/A.commit", "stack/B.zstd-bs16.zcommit", "stack/C.commit"}

// TestImageFromRegistry opens the three-layer stack vector (one layer a
// ZFile) from a registry with token auth through the file cache, and
// compares the whole virtual disk with the same image opened from the local
// files.
func TestImageFromRegistry(t *testing.T) {
	reg := registrytest.New(t, registrytest.Options{Auth: registrytest.Token, Users: map[string]string{"img": "pw"}})
	remoteCfg := &config.Image{RepoBlobURL: reg.RepoBlobURL("stack/app")}
	localCfg := &config.Image{}
	for _, l := range stackLayers {
		data, err := os.ReadFile(testvectors.Path(t, l))
		if err != nil {
			t.Fatal(err)
		}
		dgst := reg.PushBlob(t, "stack/app", data)
		remoteCfg.Lowers = append(remoteCfg.Lowers, config.Layer{Digest: dgst, Size: uint64(len(data)), Dir: t.TempDir()})
		localCfg.Lowers = append(localCfg.Lowers, config.Layer{File: testvectors.Path(t, l)})
	}
	cred := credFile(t, t.TempDir(), reg.Host(), "img", "pw")
	c, _ := newClient(t, remote.Options{Credentials: &remote.FileCredentials{Path: cred}})
	fc, err := file.New(file.Options{Dir: t.TempDir(), MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	lo := remote.NewLayerOpener(c, remote.LayerOpenerOptions{Cache: fc})
	defer lo.Close()
	ctx := context.Background()
	rimg, err := image.Open(ctx, remoteCfg, image.Options{Remote: lo, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rimg.Close()
	limg, err := image.Open(ctx, localCfg, image.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer limg.Close()
	if rimg.Size() != limg.Size() {
		t.Fatalf("sizes %d and %d", rimg.Size(), limg.Size())
	}
	const chunk = 1 << 20
	a, b := make([]byte, chunk), make([]byte, chunk)
	for off := int64(0); off < limg.Size(); off += chunk {
		if _, err := rimg.ReadAt(a, off); err != nil {
			t.Fatalf("remote image at %d: %v", off, err)
		}
		if _, err := limg.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("remote and local images differ in [%d, %d)", off, off+chunk)
		}
	}
	for i, li := range rimg.Layers {
		if !li.Remote {
			t.Fatalf("layer %d not opened remotely", i)
		}
	}
	t.Logf("registry: %+v; cache: %+v", reg.Counts(), fc.Stats())
}

// TestZFileFlipCaught: a flipped byte inside a CRC-checked ZFile block
// coming from the network is caught by the block CRC (no wrong data), and
// after the range is invalidated in the cache the next read fetches good
// bytes.
func TestZFileFlipCaught(t *testing.T) {
	reg := registrytest.New(t, registrytest.Options{})
	data, err := os.ReadFile(testvectors.Path(t, "stack/B.zstd-bs16.zcommit"))
	if err != nil {
		t.Fatal(err)
	}
	dgst := reg.PushBlob(t, "z/app", data)
	px := registrytest.NewFaultProxy(t, reg.URL)
	c, _ := newClient(t, remote.Options{ReadAhead: -1})
	fc, _ := file.New(file.Options{Dir: t.TempDir(), MinFreeBytes: -1, RefillSize: 4096})
	defer fc.Close()
	b, err := c.OpenSize(remote.BlobURL(px.URL+"/v2/z/app/blobs", dgst), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cf, err := fc.Open(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	// Open the ZFile first (header and jump table arrive intact), then
	// flip bytes in every data response.
	zr, err := zfile.Open(cf)
	if err != nil {
		t.Fatal(err)
	}
	local, err := zfile.Open(&memFile{data})
	if err != nil {
		t.Fatal(err)
	}
	var flip atomic.Bool
	flip.Store(true)
	px.SetDecide(onData(registrytest.Fault{Kind: registrytest.Flip}, flip.Load))
	n := min(int64(1<<20), local.Size())
	want := make([]byte, n)
	if _, err := local.ReadAt(want, 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, n)
	_, err = zr.ReadAt(got, 0)
	if !errors.Is(err, core.ErrChecksum) {
		t.Fatalf("flipped compressed block: err=%v (equal=%v)", err, bytes.Equal(got, want))
	}
	flip.Store(false)
	cf.(core.Invalidator).Invalidate(0, int64(len(data)))
	if _, err := zr.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after invalidation: %v", err)
	}
}

type memFile struct{ b []byte }

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	return bytes.NewReader(m.b).ReadAt(p, off)
}
func (m *memFile) WriteAt([]byte, int64) (int, error) { return 0, core.ErrReadOnly }
func (m *memFile) Size() int64                        { return int64(len(m.b)) }
func (m *memFile) Sync() error                        { return nil }
func (m *memFile) Close() error                       { return nil }

var _ = filepath.Join
