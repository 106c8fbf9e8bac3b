package mkfs_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/internal/mkfs"
	"github.com/overlaybd-go/overlaybd/internal/mkfs/mkfstest"
)

func newLayer(t *testing.T, vsize int64) *lsmt.Writable {
	t.Helper()
	dir := t.TempDir()
	open := func(name string) *os.File {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	w, err := lsmt.Create(psync.NewFile(open("data"), nil), psync.NewFile(open("index"), nil), lsmt.CreateOptions{VirtualSize: vsize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// ext4Layer makes an ext4 file system of size bytes on a new layer; the
// test skips without mkfs.ext4.
func ext4Layer(t *testing.T, size int64) *lsmt.Writable {
	t.Helper()
	mkfstest.Tool(t, "mkfs.ext4")
	w := newLayer(t, size)
	if err := mkfs.Ext4(context.Background(), w, size, mkfs.Options{TempDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	return w
}

// TestExt4OnLayer makes a file system on a new LSMT layer and checks it
// with e2fsck and debugfs: upstream's parameters, a clean file system, and
// a layer holding metadata only.
func TestExt4OnLayer(t *testing.T) {
	const size = 1 << 30
	w := ext4Layer(t, size)
	mkfstest.MetadataOnly(t, w, 16<<20)
	mkfstest.CheckExt4(t, mkfstest.DeviceImage(t, w, size), size)
}

// TestExt4Large checks that a 64 GiB device costs megabytes, not gigabytes.
func TestExt4Large(t *testing.T) {
	const size = 64 << 30
	w := ext4Layer(t, size)
	mapped := mkfstest.MetadataOnly(t, w, 64<<20)
	t.Logf("64 GiB ext4: %d bytes of metadata in the layer", mapped)
}

func TestExt4Errors(t *testing.T) {
	w := newLayer(t, 1<<30)
	ctx := context.Background()
	if err := mkfs.Ext4(ctx, w, 4096, mkfs.Options{}); err == nil || !strings.Contains(err.Error(), "too small") {
		t.Errorf("tiny device: %v", err)
	}
	if err := mkfs.Ext4(ctx, w, mkfs.MinSize+512, mkfs.Options{}); err == nil || !strings.Contains(err.Error(), "multiple") {
		t.Errorf("odd size: %v", err)
	}
	if err := mkfs.Ext4(ctx, w, 1<<30, mkfs.Options{Tool: "/bin/false"}); err == nil || !strings.Contains(err.Error(), "/bin/false") {
		t.Errorf("failing tool: %v", err)
	}
	if err := mkfs.Ext4(ctx, w, 1<<30, mkfs.Options{TempDir: "/nonexistent/dir"}); err == nil || !strings.Contains(err.Error(), "scratch") {
		t.Errorf("bad temp dir: %v", err)
	}
	if len(w.Mappings()) != 0 {
		t.Error("a failed mkfs wrote into the layer")
	}
}
