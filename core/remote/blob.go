package remote

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/overlaybd-go/overlaybd/core"
)

// Blob is one registry blob opened for ranged reads. It implements
// core.Source and io.ReaderAt, and is safe for concurrent use.
//
// A read larger than the client's ChunkSize is split into chunk-aligned
// requests that run in parallel (at most MaxInFlight per blob). When reads
// arrive sequentially the blob also fetches the following ReadAhead chunks
// in the background and serves later reads from them; read-ahead memory is
// bounded by 2×ReadAhead chunks per blob.
type Blob struct {
	c    *Client
	url  string
	key  string
	size int64
	sem  chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	windows map[int64]*window
	lastEnd int64
	seq     int64 // bytes read sequentially up to lastEnd
	closed  bool
}

// window is one chunk read ahead.
type window struct {
	data []byte
	done chan struct{}
	err  error
}

var _ core.Source = (*Blob)(nil)

// BlobURL joins repoBlobUrl and a digest as upstream does (REMOTE.md §2).
func BlobURL(repoBlobURL, digest string) string {
	if strings.HasSuffix(repoBlobURL, "/") {
		return repoBlobURL + digest
	}
	return repoBlobURL + "/" + digest
}

// checkURL accepts upstream's path form (one leading '/') and returns the
// absolute URL.
func checkURL(blobURL string) (string, error) {
	blobURL = strings.TrimPrefix(blobURL, "/")
	u, err := url.Parse(blobURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%w: %q is not an absolute http(s) URL", ErrBadURL, Redact(blobURL))
	}
	if strings.HasSuffix(u.Path, "/") || u.Path == "" {
		return "", fmt.Errorf("%w: %q has no digest", ErrBadURL, Redact(blobURL))
	}
	return blobURL, nil
}

// Open opens the blob at blobURL (an absolute URL, or upstream's path form
// with one leading '/') and discovers its size with a one-byte ranged GET,
// which also runs the authentication dance.
func (c *Client) Open(ctx context.Context, blobURL string) (*Blob, error) {
	u, err := checkURL(blobURL)
	if err != nil {
		return nil, err
	}
	if c.closed.Load() {
		return nil, fmt.Errorf("open %s: %w", Redact(u), core.ErrClosed)
	}
	c.mu.Lock()
	se, ok := c.sizes[u]
	c.mu.Unlock()
	size := se.size
	if !ok || time.Now().After(se.expires) {
		err := c.retry(ctx, "open "+Redact(u), func(ctx context.Context) error {
			e, err := c.entry(ctx, u)
			if err != nil {
				return err
			}
			if e.size >= 0 {
				size = e.size
				return nil
			}
			var one [1]byte
			size, err = c.readRange(ctx, u, one[:], 0, -1)
			return err
		})
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.sizes[u] = sizeEntry{size: size, expires: time.Now().Add(sizeLife)}
		c.mu.Unlock()
	}
	return c.newBlob(u, size), nil
}

// OpenSize opens the blob at blobURL whose size is already known (the
// layer's "size" in config.v1.json) without contacting the registry. Every
// response is still checked against that size.
func (c *Client) OpenSize(blobURL string, size int64) (*Blob, error) {
	u, err := checkURL(blobURL)
	if err != nil {
		return nil, err
	}
	if size < 0 {
		return nil, fmt.Errorf("open %s: negative size %d", Redact(u), size)
	}
	return c.newBlob(u, size), nil
}

func (c *Client) newBlob(u string, size int64) *Blob {
	b := &Blob{c: c, url: u, size: size, sem: make(chan struct{}, c.opts.MaxInFlight),
		windows: map[int64]*window{}, lastEnd: -1}
	b.key = u[strings.LastIndexByte(u, '/')+1:]
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return b
}

// URL returns the blob's URL.
func (b *Blob) URL() string { return b.url }

// Size returns the blob's size in bytes.
func (b *Blob) Size() int64 { return b.size }

// Key returns the blob's digest (the last segment of its URL).
func (b *Blob) Key() string { return b.key }

// ReadAt reads without a deadline of its own (the client's budget applies).
func (b *Blob) ReadAt(p []byte, off int64) (int, error) {
	return b.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext reads len(p) bytes at off. It returns io.EOF with the bytes
// that exist when the read passes the end of the blob, and an error (never
// data) when the registry's answers keep failing their checks.
func (b *Blob) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return 0, fmt.Errorf("read %s: %w", b.key, core.ErrClosed)
	}
	if off < 0 {
		return 0, fmt.Errorf("read %s at %d: %w", b.key, off, core.ErrOutOfRange)
	}
	if off >= b.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := min(int64(len(p)), b.size-off)
	if err := b.read(ctx, p[:n], off); err != nil {
		return 0, err
	}
	b.readAhead(off, n)
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

// read fills p (inside the blob) from read-ahead windows and ranged GETs.
func (b *Blob) read(ctx context.Context, p []byte, off int64) error {
	cs := b.c.opts.ChunkSize
	end := off + int64(len(p))
	type piece struct{ off, end int64 }
	var direct []piece
	for pos := off; pos < end; {
		idx := pos / cs
		pend := min((idx+1)*cs, end)
		if b.fromWindow(ctx, idx, p[pos-off:pend-off], pos, pend == (idx+1)*cs) {
			pos = pend
			continue
		}
		if n := len(direct); n > 0 && direct[n-1].end == pos && pend-direct[n-1].off <= cs {
			direct[n-1].end = pend
		} else {
			direct = append(direct, piece{pos, pend})
		}
		pos = pend
	}
	fetch := func(pc piece) error {
		select {
		case b.sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		defer func() { <-b.sem }()
		return b.fetch(ctx, p[pc.off-off:pc.end-off], pc.off)
	}
	switch len(direct) {
	case 0:
		return nil
	case 1:
		return fetch(direct[0])
	}
	errs := make([]error, len(direct))
	var wg sync.WaitGroup
	for i, pc := range direct {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fetch(pc)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// fetch reads one range with retries.
func (b *Blob) fetch(ctx context.Context, p []byte, off int64) error {
	what := fmt.Sprintf("read %s [%d, %d)", Redact(b.url), off, off+int64(len(p)))
	return b.c.retry(ctx, what, func(ctx context.Context) error {
		_, err := b.c.readRange(ctx, b.url, p, off, b.size)
		return err
	})
}

// fromWindow copies [pos, pos+len(p)) from the read-ahead window of chunk
// idx if there is one that completed without error, waiting for it when it
// is in flight. A window whose last byte is consumed is released.
func (b *Blob) fromWindow(ctx context.Context, idx int64, p []byte, pos int64, toEnd bool) bool {
	b.mu.Lock()
	w := b.windows[idx]
	b.mu.Unlock()
	if w == nil {
		return false
	}
	select {
	case <-w.done:
	case <-ctx.Done():
		return false
	}
	if w.err != nil {
		b.dropWindow(idx, w)
		return false
	}
	copy(p, w.data[pos-idx*b.c.opts.ChunkSize:])
	if toEnd {
		b.dropWindow(idx, w)
	}
	return true
}

func (b *Blob) dropWindow(idx int64, w *window) {
	b.mu.Lock()
	if b.windows[idx] == w {
		delete(b.windows, idx)
	}
	b.mu.Unlock()
}

// readAhead notes a completed read and, when reads are sequential, starts
// fetching the chunks that follow.
func (b *Blob) readAhead(off, n int64) {
	ra := int64(b.c.opts.ReadAhead)
	if ra == 0 {
		return
	}
	cs := b.c.opts.ChunkSize
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	if off == b.lastEnd {
		b.seq += n
	} else {
		b.seq = n
	}
	b.lastEnd = off + n
	// Read ahead only for a sequential run of at least a chunk, so that
	// small neighbouring reads do not fetch megabytes.
	if b.seq < cs {
		return
	}
	first := (off + n) / cs
	if (off+n)%cs == 0 && first*cs >= b.size {
		return
	}
	for i := first; i < first+ra && i*cs < b.size; i++ {
		if _, ok := b.windows[i]; ok {
			continue
		}
		// Bound the memory: forget the windows furthest behind.
		for int64(len(b.windows)) >= 2*ra {
			lo := int64(-1)
			for k := range b.windows {
				if lo < 0 || k < lo {
					lo = k
				}
			}
			delete(b.windows, lo)
		}
		w := &window{data: make([]byte, min(cs, b.size-i*cs)), done: make(chan struct{})}
		b.windows[i] = w
		b.wg.Add(1)
		go func(i int64) {
			defer b.wg.Done()
			defer close(w.done)
			w.err = b.fetch(b.ctx, w.data, i*cs)
		}(i)
	}
}

// Invalidate drops read-ahead data overlapping [off, off+length), so that
// the next read of that range asks the registry again. Callers use it after
// the data failed a check.
func (b *Blob) Invalidate(off, length int64) error {
	cs := b.c.opts.ChunkSize
	b.mu.Lock()
	for idx := off / cs; idx*cs < off+length; idx++ {
		delete(b.windows, idx)
	}
	b.mu.Unlock()
	return nil
}

// Close stops the read-ahead and waits for it.
func (b *Blob) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.windows = map[int64]*window{}
	b.mu.Unlock()
	b.cancel()
	b.wg.Wait()
	return nil
}
