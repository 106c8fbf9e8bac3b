package remote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	dlcache "github.com/overlaybd-go/overlaybd/caches/download"
	"github.com/overlaybd-go/overlaybd/core"
)

// The tests below stop the background download after it has claimed a
// block of the download file and before it writes it, with the block in a
// state a buffered write goes through while the kernel copies the data
// (all zeros but reported as data by SEEK_DATA, or written up to the middle
// of a page). Meanwhile the download cache, open on the same layer
// directory, reads the same span. The read must wait for the download's
// write; returning while the write is held means it served the unwritten
// bytes.

// memLayer is a blob in memory with a layer directory.
type memLayer struct {
	data []byte
	dir  string
}

func (m *memLayer) ReadAtContext(_ context.Context, p []byte, off int64) (int, error) {
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memLayer) Size() int64      { return int64(len(m.data)) }
func (m *memLayer) Key() string      { return "mem" }
func (m *memLayer) LayerDir() string { return m.dir }

var _ core.LayerDirSource = (*memLayer)(nil)

// downloadRace is a cold layer directory with the download cache open on it
// and a background download whose first block write is held.
type downloadRace struct {
	t       *testing.T
	src     *memLayer
	cf      core.File
	spans   *dlcache.Tracker
	held    chan struct{} // closed when the download's write is held
	release chan struct{} // closed to let it write
	once    sync.Once
	dl      chan error // the download's result
}

const raceBlock = 1 << 20

// startDownloadRace opens the cache on a cold layer directory and starts
// the download, whose first write is held after leave(path, off, end) has
// put its block in the state the test wants readers to find.
func startDownloadRace(t *testing.T, leave func(r *downloadRace, fh *os.File, off, end int64) error) *downloadRace {
	data := make([]byte, 4*raceBlock)
	for i := range data {
		data[i] = byte(i%251) + 1
	}
	sum := sha256.Sum256(data)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	r := &downloadRace{t: t, src: &memLayer{data: data, dir: t.TempDir()},
		held: make(chan struct{}), release: make(chan struct{}), dl: make(chan error, 1)}
	c, err := dlcache.New(dlcache.Options{RefillSize: raceBlock})
	if err != nil {
		t.Fatal(err)
	}
	r.cf, err = c.Open(context.Background(), r.src)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(r.src.dir, DownloadFileName)
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if r.spans, err = dlcache.TrackFile(int(fh.Fd())); err != nil {
		t.Fatal(err)
	}
	downloadHooks.writing = func(p string, off, end int64) {
		if p != path {
			return
		}
		r.once.Do(func() {
			if err := leave(r, fh, off, end); err != nil {
				t.Errorf("prepare the held block: %v", err)
			}
			close(r.held)
			<-r.release
		})
	}
	t.Cleanup(func() {
		downloadHooks.writing = nil
		r.letGo()
		r.spans.Close()
		fh.Close()
		r.cf.Close()
		c.Close()
	})
	go func() {
		got, err := DownloadLayer(context.Background(), r.src, r.src.dir, digest,
			DownloadOptions{BlockSize: raceBlock}, false)
		if err == nil && got != filepath.Join(r.src.dir, CommitFileName) {
			err = fmt.Errorf("download committed %s", got)
		}
		r.dl <- err
	}()
	return r
}

// letGo lets the held write go on.
func (r *downloadRace) letGo() {
	select {
	case <-r.release:
	default:
		close(r.release)
	}
}

// read starts a cache read of n bytes at off; its result arrives on the
// channel.
func (r *downloadRace) read(off int64, n int) <-chan error {
	done := make(chan error, 1)
	go func() {
		p := make([]byte, n)
		if _, err := r.cf.ReadAt(p, off); err != nil {
			done <- fmt.Errorf("read at %d: %w", off, err)
			return
		}
		if !bytes.Equal(p, r.src.data[off:off+int64(n)]) {
			for i := range p {
				if p[i] != r.src.data[off+int64(i)] {
					done <- fmt.Errorf("read at %d returned %#02x at %d, the blob has %#02x", off, p[i], off+int64(i), r.src.data[off+int64(i)])
					return
				}
			}
		}
		done <- nil
	}()
	return done
}

// waitOrServe waits until the reader either waits for a claim of the
// download file (right) or returns while the download's write is held
// (it can only have served the unwritten bytes), then lets the download
// go and checks the read and the download.
func (r *downloadRace) waitOrServe(reader <-chan error) {
	t := r.t
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(time.Minute)
wait:
	for {
		select {
		case err := <-reader:
			if err == nil {
				err = fmt.Errorf("returned the blob's bytes")
			}
			t.Errorf("a cache read of a block the download was writing returned without waiting: %v", err)
			r.letGo()
			if err := <-r.dl; err != nil {
				t.Error(err)
			}
			return
		case <-tick.C:
			if r.spans.Waiting() > 0 {
				break wait
			}
		case <-deadline:
			t.Fatal("the cache read neither returned nor waited for the held download write")
		}
	}
	r.letGo()
	for _, ch := range []<-chan error{reader, r.dl} {
		if err := <-ch; err != nil {
			t.Error(err)
		}
	}
}

// TestCacheReadWaitsForDownloadWrite: the download has claimed a block and
// the file system reports it as data, but it still reads as zeros.
func TestCacheReadWaitsForDownloadWrite(t *testing.T) {
	r := startDownloadRace(t, func(r *downloadRace, fh *os.File, off, end int64) error {
		_, err := fh.WriteAt(make([]byte, end-off), off)
		return err
	})
	<-r.held
	r.waitOrServe(r.read(512<<10, 64<<10))
}

// TestCacheReadOfPageDownloadIsWriting: the download has written its block
// up to the middle of a page. A cache read that ends in that page finds a
// non-zero byte in every page it touches, yet part of it is still zeros.
func TestCacheReadOfPageDownloadIsWriting(t *testing.T) {
	const torn = 128<<10 + 1024 // written up to here
	r := startDownloadRace(t, func(r *downloadRace, fh *os.File, off, end int64) error {
		_, err := fh.WriteAt(r.src.data[off:torn], off)
		return err
	})
	<-r.held
	r.waitOrServe(r.read(64<<10, torn+1024-64<<10))
}

// TestDownloadCommitsWhileCacheReads: cache reads all over the layer while
// the download runs get the blob's bytes, and the download commits.
func TestDownloadCommitsWhileCacheReads(t *testing.T) {
	r := startDownloadRace(t, func(*downloadRace, *os.File, int64, int64) error { return nil })
	r.letGo()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 16 {
				off := int64((g*16+i)*61441) % (int64(len(r.src.data)) - 8192)
				if err := <-r.read(off, 8192); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := <-r.dl; err != nil {
		t.Fatal(err)
	}
}
