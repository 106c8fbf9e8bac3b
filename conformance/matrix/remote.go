package matrix

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/overlaybd-go/overlaybd/conformance"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/envelope"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/core/remote"

	_ "github.com/overlaybd-go/overlaybd/caches/all" // the caches
)

// recordingEngine records the files an engine opens read-only: the layer
// files a read-only kind's Build produced.
type recordingEngine struct {
	core.Engine
	mu    sync.Mutex
	paths []string
}

func (e *recordingEngine) Open(path string, o core.OpenOptions) (core.File, error) {
	if o.Flag&(os.O_WRONLY|os.O_RDWR) == 0 {
		e.mu.Lock()
		e.paths = append(e.paths, path)
		e.mu.Unlock()
	}
	return e.Engine.Open(path, o)
}

// blobServer serves files as registry blobs (GET and HEAD with byte ranges,
// as a registry's blob endpoint does) on 127.0.0.1.
type blobServer struct {
	srv   *http.Server
	ln    net.Listener
	blobs map[string]string // "/v2/conformance/blobs/<digest>" → path
	done  chan struct{}
}

func newBlobServer(paths []string) (*blobServer, []string, error) {
	b := &blobServer{blobs: map[string]string{}, done: make(chan struct{})}
	var urls []string
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	b.ln = ln
	for _, p := range paths {
		d, err := fileDigest(p)
		if err != nil {
			ln.Close()
			return nil, nil, err
		}
		route := "/v2/conformance/blobs/" + d
		b.blobs[route] = p
		urls = append(urls, "http://"+ln.Addr().String()+route)
	}
	b.srv = &http.Server{Handler: http.HandlerFunc(b.serve), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: nil}
	go func() { defer close(b.done); b.srv.Serve(ln) }()
	return b, urls, nil
}

func (b *blobServer) serve(w http.ResponseWriter, r *http.Request) {
	p, ok := b.blobs[r.URL.Path]
	if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		http.NotFound(w, r)
		return
	}
	f, err := os.Open(p)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	w.Header().Set("Docker-Content-Digest", strings.TrimPrefix(r.URL.Path, "/v2/conformance/blobs/"))
	http.ServeContent(w, r, "", time.Time{}, f)
}

func (b *blobServer) close() error {
	err := b.srv.Close()
	<-b.done
	return err
}

func fileDigest(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// layerSource gives a blob the layer directory the download cache keeps
// its file in.
type layerSource struct {
	*remote.Blob
	dir string
}

func (s layerSource) LayerDir() string { return s.dir }

// remoteReadOnly builds the layers of a read-only kind, serves them as
// blobs over HTTP and opens them through remote.Client and the named cache,
// as a daemon opens remote lowers.
type remoteReadOnly struct {
	inner interface {
		conformance.ReadOnlyKind
	}
	rec   *recordingEngine
	cache string
	name  string
	// stats receives the cache's counters when the file closes.
	stats *core.CacheStats
}

func (k remoteReadOnly) Name() string { return k.name }

func (k remoteReadOnly) Build(dir string, m *conformance.Model) (core.File, error) {
	f, err := k.inner.Build(dir, m)
	if err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	srv, urls, err := newBlobServer(k.rec.paths)
	if err != nil {
		return nil, err
	}
	rf := &remoteFile{srv: srv, stats: k.stats}
	fail := func(err error) (core.File, error) {
		rf.Close()
		return nil, err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if rf.client, err = remote.NewClient(remote.Options{Logger: quiet}); err != nil {
		return fail(err)
	}
	factory, err := core.Caches.Lookup(k.cache)
	if err != nil {
		return fail(err)
	}
	if rf.cache, err = factory(core.CacheConfig{Dir: filepath.Join(dir, "cache"), CapacityBytes: 256 << 20,
		RefillSize: 256 << 10, BlockSize: 64 << 10, Logger: quiet}); err != nil {
		return fail(fmt.Errorf("cache %s: %w", k.cache, err))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var files []core.File
	for i, u := range urls {
		blob, err := rf.client.Open(ctx, u)
		if err != nil {
			return fail(fmt.Errorf("open blob %d: %w", i, err))
		}
		rf.blobs = append(rf.blobs, blob)
		ldir := filepath.Join(dir, fmt.Sprintf("layer-dir-%d", i))
		if err := os.MkdirAll(ldir, 0o755); err != nil {
			return fail(err)
		}
		cf, err := rf.cache.Open(ctx, layerSource{blob, ldir})
		if err != nil {
			return fail(fmt.Errorf("cache %s: open blob %d: %w", k.cache, i, err))
		}
		inner, _, err := envelope.Open(cf)
		if err != nil {
			cf.Close()
			return fail(fmt.Errorf("blob %d: %w", i, err))
		}
		files = append(files, inner)
	}
	if rf.File, err = lsmt.OpenStack(files, nil); err != nil {
		for _, f := range files {
			f.Close()
		}
		return fail(err)
	}
	return rf, nil
}

// remoteFile is a stack of remote layers; Close closes it with everything
// beneath it.
type remoteFile struct {
	core.File
	srv    *blobServer
	client *remote.Client
	blobs  []*remote.Blob
	cache  core.Cache
	stats  *core.CacheStats
}

func (f *remoteFile) Close() error {
	var err error
	if f.File != nil {
		err = f.File.Close()
	}
	if f.cache != nil {
		*f.stats = f.cache.Stats()
		err = errors.Join(err, f.cache.Close())
	}
	for _, b := range f.blobs {
		err = errors.Join(err, b.Close())
	}
	if f.client != nil {
		err = errors.Join(err, f.client.Close())
	}
	return errors.Join(err, f.srv.close())
}
