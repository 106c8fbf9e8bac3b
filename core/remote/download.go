package remote

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	dlcache "github.com/overlaybd-go/overlaybd/caches/download"
	"github.com/overlaybd-go/overlaybd/core"
)

// Names inside a layer directory (REMOTE.md §9).
const (
	// DownloadFileName is the file a download fills.
	DownloadFileName = ".download"
	// CommitFileName is the verified, complete layer.
	CommitFileName = "overlaybd.commit"
)

// downloadHooks are seams for the package's tests, nil otherwise.
var downloadHooks struct {
	// writing is called by a download that has claimed [off, end) of the
	// download file at path and is about to write it.
	writing func(path string, off, end int64)
}

// ErrDigestMismatch reports a downloaded blob whose sha256 is not its
// digest. The download file is discarded.
var ErrDigestMismatch = errors.New("downloaded blob does not match its digest")

// errDirBusy reports a layer directory another download of this process
// is filling.
var errDirBusy = errors.New("layer directory busy")

// DownloadOptions configures background downloads (the "download" object of
// the configuration).
type DownloadOptions struct {
	// Delay and DelayExtra: a download starts Delay + a random part of
	// DelayExtra after the layer is opened.
	Delay, DelayExtra time.Duration
	// MaxBytesPerSecond limits the read rate of one download (0: none).
	MaxBytesPerSecond int64
	// BlockSize is the size of each read (default 256 KiB).
	BlockSize int64
	// TryCnt is the number of attempts (default 5).
	TryCnt int
	// Logger receives log lines (nil: slog.Default()).
	Logger *slog.Logger
	// Audit receives a bk_download event per read (nil: none).
	Audit core.Auditor
}

func (o *DownloadOptions) defaults() {
	if o.BlockSize <= 0 {
		o.BlockSize = 256 << 10
	}
	if o.TryCnt <= 0 {
		o.TryCnt = 5
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// busyDirs are the layer directories being downloaded in this process.
var busyDirs sync.Map

// DownloadLayer downloads src into dir: it fills "<dir>/.download" (only
// the blocks still missing, unless full is set), checks the whole file's
// sha256 against digest, and renames it to "<dir>/overlaybd.commit", whose
// path it returns. An existing overlaybd.commit is returned as is. On a
// digest mismatch the download file is discarded and the error wraps
// ErrDigestMismatch.
//
// The download cache reads the same file lazily (caches/download): every
// write, punch and truncation of the file is made under a claim of its
// span in the file's dlcache.Tracker, so that a cache read never takes a
// span being written for cached data. Claims are taken per block around
// the write, never around the network read.
func DownloadLayer(ctx context.Context, src core.Source, dir, digest string, o DownloadOptions, full bool) (string, error) {
	o.defaults()
	commit := filepath.Join(dir, CommitFileName)
	if _, err := os.Stat(commit); err == nil {
		return commit, nil
	}
	if _, busy := busyDirs.LoadOrStore(dir, true); busy {
		return "", fmt.Errorf("download %s: %w", dir, errDirBusy)
	}
	defer busyDirs.Delete(dir)
	path := filepath.Join(dir, DownloadFileName)
	fh, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", fmt.Errorf("download: %w", err)
	}
	defer fh.Close()
	fd := int(fh.Fd())
	spans, err := dlcache.TrackFile(fd)
	if err != nil {
		return "", fmt.Errorf("download %s: %w", path, err)
	}
	defer spans.Close()
	size := src.Size()
	release := spans.Claim(0, dlcache.WholeFile)
	if st, err := fh.Stat(); err != nil || st.Size() != size {
		if err := errors.Join(fh.Truncate(0), fh.Truncate(size)); err != nil {
			release()
			return "", fmt.Errorf("download %s: %w", path, err)
		}
	}
	release()
	lim := newLimiter(o.MaxBytesPerSecond)
	buf := make([]byte, o.BlockSize)
	for off := int64(0); off < size; off += o.BlockSize {
		n := min(o.BlockSize, size-off)
		if !full {
			hole, err := unix.Seek(fd, off, unix.SEEK_HOLE)
			if err == nil && hole >= off+n {
				continue // already present
			}
		}
		if err := lim.wait(ctx, n); err != nil {
			return "", err
		}
		var rerr error
		for try := 0; try < 2; try++ {
			start := time.Now()
			_, rerr = src.ReadAtContext(ctx, buf[:n], off)
			if o.Audit != nil {
				o.Audit.IO(eventBkDownload, auditName(src), off, n, time.Since(start))
			}
			if rerr == nil || errors.Is(rerr, io.EOF) {
				rerr = nil
				break
			}
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
		}
		if rerr != nil {
			return "", fmt.Errorf("download %s at %d: %w", Redact(src.Key()), off, rerr)
		}
		if werr := writeClaimed(fh, spans, path, buf[:n], off, size); werr != nil {
			return "", werr
		}
	}
	got, err := fileDigest(ctx, fh, spans)
	if err != nil {
		return "", err
	}
	if got != digest {
		// Discard everything, including ranges lazy reads put there: the
		// next attempt fetches the whole blob again.
		release := spans.Claim(0, dlcache.WholeFile)
		fh.Truncate(0)
		fh.Truncate(size)
		release()
		return "", fmt.Errorf("download %s: got %s, want %s; file discarded: %w", dir, got, digest, ErrDigestMismatch)
	}
	if err := fh.Sync(); err != nil {
		return "", fmt.Errorf("download %s: %w", path, err)
	}
	if err := os.Rename(path, commit); err != nil {
		return "", fmt.Errorf("download: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return commit, nil
}

// writeClaimed writes p at off of the download file fh (of size bytes, at
// path) under a claim of its span (widened to whole pages, which a failed
// write punches). A short write leaves a partly written block that lazy
// readers of the file (SEEK_DATA) would take for data: it is punched out
// again, or, if that fails, the whole file is discarded.
func writeClaimed(fh *os.File, spans *dlcache.Tracker, path string, p []byte, off, size int64) error {
	n := int64(len(p))
	p0, p1 := off/4096*4096, (off+n+4095)/4096*4096
	release := spans.Claim(p0, p1)
	defer func() { release() }()
	if downloadHooks.writing != nil {
		downloadHooks.writing(path, p0, p1)
	}
	var werr error
	for try := 0; try < 2; try++ {
		if _, werr = fh.WriteAt(p, off); werr == nil {
			return nil
		}
	}
	if perr := unix.Fallocate(int(fh.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, p0, p1-p0); perr != nil {
		release()
		release = spans.Claim(0, dlcache.WholeFile)
		fh.Truncate(0)
		fh.Truncate(size)
	}
	return fmt.Errorf("download %s: %w", path, werr)
}

// Audit events of the remote layers (REMOTE.md §11.2; core/audit holds
// the others, and cannot be imported here).
const (
	eventBkDownload = "bk_download"
	eventFilePread  = "file:pread"
)

// auditName is a source's name in audit events, as audit.SourceName: "/"
// followed by its URL when it has one, else its key.
func auditName(src core.Source) string {
	if u, ok := src.(interface{ URL() string }); ok {
		return "/" + strings.TrimPrefix(u.URL(), "/")
	}
	return src.Key()
}

// fileDigest returns the sha256 of the download file fh. Each read holds
// writers out of its span, and waits for those in it: a cache fill the
// download skipped (its span was already allocated) may still be writing.
func fileDigest(ctx context.Context, fh *os.File, spans *dlcache.Tracker) (string, error) {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for off := int64(0); ; {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		release := spans.Hold(off, off+int64(len(buf)))
		n, err := fh.ReadAt(buf, off)
		release()
		h.Write(buf[:n])
		off += int64(n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("download: digest: %w", err)
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// limiter paces reads to a byte rate.
type limiter struct {
	rate  int64
	start time.Time
	sent  int64
}

func newLimiter(rate int64) *limiter { return &limiter{rate: rate, start: time.Now()} }

func (l *limiter) wait(ctx context.Context, n int64) error {
	if l.rate <= 0 {
		return nil
	}
	due := time.Duration(float64(l.sent) / float64(l.rate) * float64(time.Second))
	l.sent += n
	if d := due - time.Since(l.start); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Downloader runs the background downloads of a set of layers, one at a
// time in the order they were added, after the configured delay. It is the
// owner of its goroutine: Close stops it and waits.
type Downloader struct {
	o      DownloadOptions
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	queue   []*DownloadJob
	wake    chan struct{}
	started bool
}

// DownloadJob is one layer to download.
type DownloadJob struct {
	// Src is the blob, read without a cache.
	Src core.Source
	// Dir is the layer directory; Digest the blob's digest.
	Dir, Digest string
	// Done is called with the path of the verified local copy.
	Done func(path string)

	tries        int
	lastMismatch bool
	canceled     atomic.Bool
}

// Cancel drops the job: it is not started again, and a running attempt
// fails as soon as its source is closed.
func (j *DownloadJob) Cancel() { j.canceled.Store(true) }

// NewDownloader returns a downloader; its goroutine starts with the first
// job.
func NewDownloader(o DownloadOptions) *Downloader {
	o.defaults()
	d := &Downloader{o: o, wake: make(chan struct{}, 1)}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d
}

// Add queues a job.
func (d *Downloader) Add(j *DownloadJob) {
	d.mu.Lock()
	d.queue = append(d.queue, j)
	if !d.started {
		d.started = true
		d.wg.Add(1)
		go d.run()
	}
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Close stops the downloads and waits for them.
func (d *Downloader) Close() error {
	d.cancel()
	d.wg.Wait()
	return nil
}

func (d *Downloader) sleep(t time.Duration) bool {
	tm := time.NewTimer(t)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-d.ctx.Done():
		return false
	}
}

func (d *Downloader) run() {
	defer d.wg.Done()
	delay := d.o.Delay
	if d.o.DelayExtra > 0 {
		delay += rand.N(d.o.DelayExtra)
	}
	if !d.sleep(delay) {
		return
	}
	for {
		d.mu.Lock()
		if len(d.queue) == 0 {
			d.mu.Unlock()
			select {
			case <-d.wake:
				continue
			case <-d.ctx.Done():
				return
			}
		}
		j := d.queue[0]
		d.queue = d.queue[1:]
		d.mu.Unlock()
		if j.canceled.Load() {
			continue
		}
		full := j.lastMismatch
		path, err := DownloadLayer(d.ctx, j.Src, j.Dir, j.Digest, d.o, full)
		if d.ctx.Err() != nil {
			return
		}
		switch {
		case j.canceled.Load():
		case err == nil:
			d.o.Logger.Info("layer downloaded", "dir", j.Dir, "digest", j.Digest)
			if j.Done != nil {
				j.Done(path)
			}
		case errors.Is(err, errDirBusy):
			d.requeue(j, false)
		default:
			j.tries++
			j.lastMismatch = errors.Is(err, ErrDigestMismatch)
			if j.lastMismatch {
				d.o.Logger.Warn("downloaded layer does not match its digest; discarded, downloading again", "dir", j.Dir, "digest", j.Digest)
			}
			if j.tries < d.o.TryCnt {
				d.o.Logger.Warn("layer download failed; will retry", "dir", j.Dir, "attempt", j.tries, "err", err)
				d.requeue(j, false)
			} else {
				d.o.Logger.Error("layer download failed; giving up", "dir", j.Dir, "attempts", j.tries, "err", err)
			}
		}
		if !d.sleep(200 * time.Millisecond) {
			return
		}
	}
}

func (d *Downloader) requeue(j *DownloadJob, _ bool) {
	d.mu.Lock()
	d.queue = append(d.queue, j)
	d.mu.Unlock()
}
