package matrix

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/overlaybd-go/overlaybd/conformance"
	"github.com/overlaybd-go/overlaybd/conformance/kinds"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/core/remote"
	"github.com/overlaybd-go/overlaybd/internal/registrytest"

	_ "github.com/overlaybd-go/overlaybd/caches/all" // the caches
)

// The repository, user and password of the cells' registry.
const (
	registryRepo = "conformance/layers"
	registryUser = "conformance"
	registryPass = "conformance-pw"
)

// RemoteCounts are what the registry and the registry client of a remote
// cell served.
type RemoteCounts struct {
	// BlobRequests and BlobBytes are the blob GETs the registry served
	// and their body bytes; TokenRequests the token server's requests.
	BlobRequests, BlobBytes, TokenRequests int64
	// AuthRounds and DataRequests are the registry client's own
	// counters.
	AuthRounds, DataRequests uint64
	// CacheEngineReads and CacheEngineWrites are the reads and writes
	// the cell's IO engine counted while the cache was open: the cache's
	// file IO (in read-only cells nothing else; with a writable upper the
	// upper's IO too).
	CacheEngineReads, CacheEngineWrites uint64
}

// remoteStats receives the counters of a remote cell when its lowers are
// released.
type remoteStats struct {
	cache  core.CacheStats
	remote RemoteCounts
}

// registryLowers builds the layers of a read-only kind, pushes them as
// blobs to an in-process registry (distribution's, with token
// authentication) and opens them with remote.Client, with credentials from
// a credential file, through the named cache, as a daemon opens remote
// lowers.
type registryLowers struct {
	ro    kinds.LSMTReadOnly
	cache string
	env   *runEnv
	stats *remoteStats
}

// runEnv is what the cells of one run share: the registry remote cells
// push their lowers to. One registry serves the whole run: the lowers are
// the same bytes in every cell with the same codec, CRC, envelope and
// layer kind, so its in-memory storage holds each only once.
type runEnv struct {
	h   *harness
	reg *registrytest.Registry
}

func newRunEnv() *runEnv { return &runEnv{h: newHarness("overlaybd-conformance")} }

// registry starts the run's registry on first use.
func (e *runEnv) registry() (*registrytest.Registry, error) {
	if e.reg != nil {
		return e.reg, nil
	}
	err := e.h.guard(func() {
		e.reg = registrytest.New(e.h, registrytest.Options{Auth: registrytest.Token,
			Users: map[string]string{registryUser: registryPass}})
	})
	return e.reg, err
}

// close stops the registry and removes its folders.
func (e *runEnv) close() { e.h.close() }

var _ kinds.Lowers = registryLowers{}

func (k registryLowers) BuildLowers(dir string, m *conformance.Model) (kinds.LowerSet, error) {
	paths, err := k.ro.BuildPaths(dir, m)
	if err != nil {
		return nil, err
	}
	s := &registrySet{ro: k.ro, stats: k.stats}
	if s.reg, err = k.env.registry(); err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	err = k.env.h.guard(func() {
		for _, p := range paths {
			data, err := os.ReadFile(p)
			if err != nil {
				k.env.h.Fatal(err)
			}
			dgst := s.reg.PushBlob(k.env.h, registryRepo, data)
			s.urls = append(s.urls, remote.BlobURL(s.reg.RepoBlobURL(registryRepo), dgst))
		}
	})
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	s.reg.ResetCounts()
	cred := filepath.Join(dir, "cred.json")
	doc := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, s.reg.Host()+"/"+registryRepo,
		base64.StdEncoding.EncodeToString([]byte(registryUser+":"+registryPass)))
	if err := os.WriteFile(cred, []byte(doc), 0o600); err != nil {
		return nil, err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if s.client, err = remote.NewClient(remote.Options{Credentials: &remote.FileCredentials{Path: cred}, Logger: quiet}); err != nil {
		return nil, err
	}
	factory, err := core.Caches.Lookup(k.cache)
	if err != nil {
		s.client.Close()
		return nil, err
	}
	// The cache's files are served by the cell's engine, as a daemon's
	// cache is by the engine ioEngine selects.
	if s.cache, err = factory(core.CacheConfig{Dir: filepath.Join(dir, "cache"), CapacityBytes: 256 << 20,
		RefillSize: 256 << 10, BlockSize: 64 << 10, Logger: quiet, Engine: k.ro.Engine}); err != nil {
		s.client.Close()
		return nil, fmt.Errorf("cache %s: %w", k.cache, err)
	}
	for i := range s.urls {
		ldir := filepath.Join(dir, fmt.Sprintf("layer-dir-%d", i))
		if err := os.MkdirAll(ldir, 0o755); err != nil {
			s.Close()
			return nil, err
		}
		s.dirs = append(s.dirs, ldir)
	}
	if s.engine = k.ro.Engine; s.engine != nil {
		s.engineBefore = s.engine.Stats()
	}
	return s, nil
}

// registrySet is a set of remote lowers: the registry that serves them,
// the client and the cache they are read through.
type registrySet struct {
	ro     kinds.LSMTReadOnly
	reg    *registrytest.Registry
	urls   []string
	dirs   []string
	client *remote.Client
	cache  core.Cache
	stats  *remoteStats
	// engine serves the cache's files; engineBefore are its counters
	// when the cache was made.
	engine       core.Engine
	engineBefore core.EngineStats
}

// Open opens every blob through the cache and removes its envelope.
func (s *registrySet) Open() ([]core.File, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var files []core.File
	fail := func(err error) ([]core.File, error) {
		for _, f := range files {
			f.Close()
		}
		return nil, err
	}
	for i, u := range s.urls {
		blob, err := s.client.Open(ctx, u)
		if err != nil {
			return fail(fmt.Errorf("open blob %d: %w", i, err))
		}
		cf, err := s.cache.Open(ctx, layerSource{blob, s.dirs[i]})
		if err != nil {
			blob.Close()
			return fail(fmt.Errorf("cache: open blob %d: %w", i, err))
		}
		bf := &blobFile{File: cf, blob: blob}
		inner, err := s.ro.Unwrap(bf)
		if err != nil {
			bf.Close()
			return fail(fmt.Errorf("blob %d: %w", i, err))
		}
		files = append(files, inner)
	}
	return files, nil
}

// Close records the counters and closes the cache and the client (the
// registry stops with the cell's harness). It fails when the cell's
// engine did not serve the cache's reads and writes.
func (s *registrySet) Close() error {
	var reads, writes, misses uint64
	if s.cache != nil {
		misses = s.cache.Stats().Misses
	}
	if s.engine != nil {
		now := s.engine.Stats()
		reads, writes = now.Reads-s.engineBefore.Reads, now.Writes-s.engineBefore.Writes
	}
	if s.stats != nil {
		s.stats.cache = s.cache.Stats()
		rc := s.reg.Counts()
		cs := s.client.Stats()
		s.stats.remote = RemoteCounts{BlobRequests: rc.BlobRequests, BlobBytes: rc.BlobBytes, TokenRequests: rc.TokenRequests,
			AuthRounds: cs.AuthRounds, DataRequests: cs.DataRequests, CacheEngineReads: reads, CacheEngineWrites: writes}
	}
	var err error
	if s.cache != nil {
		err = s.cache.Close()
	}
	err = errors.Join(err, s.client.Close())
	if s.engine != nil && misses > 0 && (reads == 0 || writes == 0) {
		err = errors.Join(err, fmt.Errorf("engine %s did not serve the cache's file IO (%d reads, %d writes while the cache was open)",
			s.engine.Name(), reads, writes))
	}
	return err
}

// layerSource gives a blob the layer directory the download cache keeps
// its file in.
type layerSource struct {
	*remote.Blob
	dir string
}

func (s layerSource) LayerDir() string { return s.dir }

// blobFile is a cached blob whose Close closes the blob after the cache
// file.
type blobFile struct {
	core.File
	blob *remote.Blob
}

func (f *blobFile) Invalidate(off, length int64) error {
	if inv, ok := f.File.(core.Invalidator); ok {
		return inv.Invalidate(off, length)
	}
	return f.blob.Invalidate(off, length)
}

func (f *blobFile) Close() error { return errors.Join(f.File.Close(), f.blob.Close()) }

// remoteReadOnly is the read-only kind of a remote cell: the layers of the
// registry, stacked.
type remoteReadOnly struct {
	lowers registryLowers
	name   string
}

func (k remoteReadOnly) Name() string { return k.name }

func (k remoteReadOnly) Build(dir string, m *conformance.Model) (core.File, error) {
	set, err := k.lowers.BuildLowers(dir, m)
	if err != nil {
		return nil, err
	}
	files, err := set.Open()
	if err != nil {
		set.Close()
		return nil, err
	}
	st, err := lsmt.OpenStack(files, nil)
	if err != nil {
		for _, f := range files {
			f.Close()
		}
		set.Close()
		return nil, err
	}
	return &remoteFile{File: st, set: set}, nil
}

// remoteFile is a stack of remote layers; Close closes it with everything
// beneath it.
type remoteFile struct {
	core.File
	set kinds.LowerSet
}

// BlockStatus reports the stack's extents.
func (f *remoteFile) BlockStatus(off, length int64) ([]core.Extent, error) {
	return f.File.(core.BlockStatuser).BlockStatus(off, length)
}

func (f *remoteFile) Close() error { return errors.Join(f.File.Close(), f.set.Close()) }

// remoteDeclared says why a remote cell is not run ("" when it runs).
// Every remote cell runs: the caches' files are served by the cell's IO
// engine (core.CacheConfig.Engine), also without a writable upper.
func remoteDeclared(Cell) (Status, string) {
	return "", ""
}
