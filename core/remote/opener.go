package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/config"
)

// LayerOpener opens the remote lowers of images: the blob from the
// registry, through the cache, with a background download when enabled. Its
// OpenRemote method has the shape of core/image's RemoteOpener.
type LayerOpener struct {
	client *Client
	cache  core.Cache
	dl     *Downloader
	log    *slog.Logger
	audit  core.Auditor
}

// LayerOpenerOptions configures a LayerOpener.
type LayerOpenerOptions struct {
	// Cache is the cache remote layers are read through (nil: none). It
	// is bypassed while the client uses a P2P agent, as upstream does.
	Cache core.Cache
	// Download enables background downloads of layers that have a
	// directory (nil: none). Devices in trace-record mode must pass nil.
	Download *DownloadOptions
	// Logger receives log lines (nil: slog.Default()).
	Logger *slog.Logger
	// Audit receives bk_download events of the background downloads and
	// file:pread events of reads of downloaded layers (nil: the cache's
	// auditor when the cache is a core.AuditedCache, else none).
	Audit core.Auditor
}

// NewLayerOpener returns an opener over client. Close stops its background
// downloads; the client and the cache stay the caller's.
func NewLayerOpener(client *Client, o LayerOpenerOptions) *LayerOpener {
	lo := &LayerOpener{client: client, cache: o.Cache, log: logger(o.Logger), audit: o.Audit}
	if ac, ok := o.Cache.(core.AuditedCache); ok && lo.audit == nil {
		lo.audit = ac.Auditor()
	}
	if o.Download != nil {
		d := *o.Download
		if d.Logger == nil {
			d.Logger = lo.log
		}
		if d.Audit == nil {
			d.Audit = lo.audit
		}
		lo.dl = NewDownloader(d)
	}
	return lo
}

// DownloadOptionsFromConfig converts a "download" object; it returns nil
// when downloads are disabled.
func DownloadOptionsFromConfig(c config.DownloadConfig) *DownloadOptions {
	if !c.Enable {
		return nil
	}
	extra := c.DelayExtra
	if extra <= 0 {
		extra = 30
	}
	o := &DownloadOptions{Delay: time.Duration(c.Delay) * time.Second, DelayExtra: time.Duration(extra) * time.Second,
		BlockSize: int64(c.BlockSize), TryCnt: c.TryCnt}
	if c.MaxMBps > 0 {
		o.MaxBytesPerSecond = int64(c.MaxMBps) << 20
	}
	return o
}

// Close stops the background downloads and waits for them.
func (lo *LayerOpener) Close() error {
	if lo.dl != nil {
		return lo.dl.Close()
	}
	return nil
}

// layerSource is a blob that knows its layer directory.
type layerSource struct {
	*Blob
	dir string
}

func (l layerSource) LayerDir() string { return l.dir }

// OpenRemote opens the blob of a lower layer: url is the blob URL, layer
// its entry of config.v1.json (digest, size and dir are used).
func (lo *LayerOpener) OpenRemote(ctx context.Context, url string, layer config.Layer) (core.File, error) {
	var b *Blob
	var err error
	if layer.Size > 0 {
		b, err = lo.client.OpenSize(url, int64(layer.Size))
	} else {
		b, err = lo.client.Open(ctx, url)
	}
	if err != nil {
		return nil, err
	}
	var src core.Source = b
	if layer.Dir != "" {
		src = layerSource{b, layer.Dir}
	}
	var f core.File = &BlobFile{B: b}
	if lo.cache != nil && lo.client.P2PAddress() == "" {
		cf, err := lo.cache.Open(ctx, src)
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("cache: %w", err)
		}
		f = &cachedFile{File: cf, blob: b}
	}
	if lo.dl == nil || layer.Dir == "" || layer.Digest == "" {
		return f, nil
	}
	// The download reads the blob without the cache, on a handle of its
	// own so that its read-ahead does not disturb the readers'.
	db, err := lo.client.OpenSize(url, b.Size())
	if err != nil {
		f.Close()
		return nil, err
	}
	sf := &SwitchFile{remote: f, size: f.Size(), dlBlob: db, audit: lo.audit}
	sf.job = &DownloadJob{Src: db, Dir: layer.Dir, Digest: layer.Digest, Done: sf.switchTo(lo.log)}
	lo.dl.Add(sf.job)
	return sf, nil
}

// BlobFile presents a Blob as a read-only core.File.
type BlobFile struct{ B *Blob }

// ReadAt reads from the blob.
func (f *BlobFile) ReadAt(p []byte, off int64) (int, error) { return f.B.ReadAt(p, off) }

// WriteAt fails: blobs are read-only.
func (f *BlobFile) WriteAt([]byte, int64) (int, error) {
	return 0, fmt.Errorf("blob %s: %w", f.B.Key(), core.ErrReadOnly)
}

// Size returns the blob's size.
func (f *BlobFile) Size() int64 { return f.B.Size() }

// Sync does nothing.
func (f *BlobFile) Sync() error { return nil }

// Close closes the blob.
func (f *BlobFile) Close() error { return f.B.Close() }

// Invalidate drops the blob's read-ahead data of the range.
func (f *BlobFile) Invalidate(off, length int64) error { return f.B.Invalidate(off, length) }

// cachedFile closes the blob after the cache file.
type cachedFile struct {
	core.File
	blob *Blob
}

func (c *cachedFile) Invalidate(off, length int64) error {
	if inv, ok := c.File.(core.Invalidator); ok {
		return inv.Invalidate(off, length)
	}
	return c.blob.Invalidate(off, length)
}

func (c *cachedFile) Close() error {
	return errors.Join(c.File.Close(), c.blob.Close())
}

// SwitchFile reads a remote layer until its background download has been
// verified, then the local copy (REMOTE.md §9 "switch").
type SwitchFile struct {
	remote core.File
	size   int64
	dlBlob *Blob
	job    *DownloadJob
	local  atomic.Pointer[os.File]
	audit  core.Auditor
	mu     sync.Mutex
	closed bool
}

func (s *SwitchFile) switchTo(log *slog.Logger) func(string) {
	return func(path string) {
		fh, err := os.Open(path)
		if err != nil {
			log.Warn("cannot open the downloaded layer; staying remote", "path", path, "err", err)
			return
		}
		if st, err := fh.Stat(); err != nil || st.Size() != s.size {
			fh.Close()
			log.Warn("downloaded layer has the wrong size; staying remote", "path", path)
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			fh.Close()
			return
		}
		s.local.Store(fh)
		log.Info("layer reads switched to the local copy", "path", path)
	}
}

// Local reports whether reads are served from the downloaded copy.
func (s *SwitchFile) Local() bool { return s.local.Load() != nil }

// ReadAt reads from the local copy once there is one.
func (s *SwitchFile) ReadAt(p []byte, off int64) (int, error) {
	if l := s.local.Load(); l != nil {
		var start time.Time
		if s.audit != nil {
			start = time.Now()
		}
		n, err := l.ReadAt(p, off)
		if s.audit != nil {
			s.audit.IO(eventFilePread, l.Name(), off, int64(n), time.Since(start))
		}
		if err == nil || errors.Is(err, io.EOF) {
			return n, err
		}
	}
	return s.remote.ReadAt(p, off)
}

// WriteAt fails: layers are read-only.
func (s *SwitchFile) WriteAt([]byte, int64) (int, error) {
	return 0, fmt.Errorf("remote layer: %w", core.ErrReadOnly)
}

// Size returns the layer's size.
func (s *SwitchFile) Size() int64 { return s.size }

// Sync does nothing.
func (s *SwitchFile) Sync() error { return nil }

// Invalidate passes the invalidation to the remote path (the local copy is
// verified as a whole).
func (s *SwitchFile) Invalidate(off, length int64) error {
	if inv, ok := s.remote.(core.Invalidator); ok {
		return inv.Invalidate(off, length)
	}
	return nil
}

// Close closes both paths and cancels the layer's download.
func (s *SwitchFile) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	l := s.local.Swap(nil)
	s.mu.Unlock()
	s.job.Cancel()
	var errs []error
	errs = append(errs, s.dlBlob.Close())
	if l != nil {
		errs = append(errs, l.Close())
	}
	errs = append(errs, s.remote.Close())
	return errors.Join(errs...)
}
