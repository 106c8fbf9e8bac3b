package remote_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/overlaybd-go/overlaybd/core/remote"
	"github.com/overlaybd-go/overlaybd/internal/registrytest"
	"github.com/overlaybd-go/overlaybd/internal/smallfs"
)

// countingBlob counts the reads of a blob.
type countingBlob struct {
	*remote.Blob
	reads atomic.Int64
}

func (b *countingBlob) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	b.reads.Add(1)
	return b.Blob.ReadAtContext(ctx, p, off)
}

// TestDownloadDiskFull: a background download into a filesystem another
// writer has nearly filled fails with ENOSPC after one pass (no retry
// loop), leaves no block in the download file that is not the blob's (a
// lazy reader takes every data block for cached data), and once space is
// freed resumes from the blocks it had and commits the right layer.
func TestDownloadDiskFull(t *testing.T) {
	fs := smallfs.Mount(t, 4<<20)
	reg := registrytest.New(t, registrytest.Options{})
	data := layer(3<<20, 24)
	dgst := reg.PushBlob(t, "full/app", data)
	c, _ := newClient(t, remote.Options{ReadAhead: -1})
	b, err := c.Open(context.Background(), remote.BlobURL(reg.URL+"/v2/full/app/blobs", dgst))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	src := &countingBlob{Blob: b}
	dir := filepath.Join(fs, "layer")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The other writer leaves about 1.3 MiB.
	var st unix.Statfs_t
	if err := unix.Statfs(fs, &st); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(fs, "filler")
	free := int64(st.Bavail) * int64(st.Bsize)
	if err := os.WriteFile(filler, bytes.Repeat([]byte{0xee}, int(free-1300<<10)), 0o644); err != nil {
		t.Fatal(err)
	}
	const bs = 256 << 10
	o := remote.DownloadOptions{BlockSize: bs}
	_, err = remote.DownloadLayer(context.Background(), src, dir, dgst, o, false)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("download into a full disk: %v, want ENOSPC", err)
	}
	blocks := int64(len(data) / bs)
	if n := src.reads.Load(); n > blocks {
		t.Fatalf("%d source reads for %d blocks: the full disk made it loop", n, blocks)
	}
	// Every data block in the file is the blob's.
	fh, err := os.Open(filepath.Join(dir, remote.DownloadFileName))
	if err != nil {
		t.Fatal(err)
	}
	var have int64
	for pos := int64(0); pos < int64(len(data)); {
		d, err := unix.Seek(int(fh.Fd()), pos, unix.SEEK_DATA)
		if err != nil {
			break // ENXIO: no more data
		}
		h, err := unix.Seek(int(fh.Fd()), d, unix.SEEK_HOLE)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, h-d)
		if _, err := fh.ReadAt(got, d); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data[d:h]) {
			t.Fatalf("data region [%d, %d) of the download file is not the blob's", d, h)
		}
		have += h - d
		pos = h
	}
	fh.Close()
	if have == 0 || have >= int64(len(data)) {
		t.Fatalf("%d bytes downloaded before the disk filled", have)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	before := src.reads.Load()
	path, err := remote.DownloadLayer(context.Background(), src, dir, dgst, o, false)
	if err != nil {
		t.Fatalf("download after space came back: %v", err)
	}
	if n := src.reads.Load() - before; n >= blocks {
		t.Errorf("the resumed download read %d of %d blocks again", n, blocks)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("committed layer: %v, equal %v", err, bytes.Equal(got, data))
	}
}
