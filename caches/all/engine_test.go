package all_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/overlaybd-go/overlaybd/caches/download"
	"github.com/overlaybd-go/overlaybd/caches/file"
	"github.com/overlaybd-go/overlaybd/caches/internal/cachetest"
	"github.com/overlaybd-go/overlaybd/caches/ocf"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/core/remote"
	_ "github.com/overlaybd-go/overlaybd/engines/all"
)

// cacheConfig is the configuration the tests give every cache type.
func cacheConfig(dir string, capacity int64, eng core.Engine) core.CacheConfig {
	if capacity == 0 {
		capacity = 64 << 20
	}
	return core.CacheConfig{Dir: dir, CapacityBytes: capacity, RefillSize: 256 << 10, BlockSize: 65536, Engine: eng}
}

// newEngine makes the named engine, closed at the end of the test.
func newEngine(t testing.TB, name string) core.Engine {
	t.Helper()
	f, err := core.Engines.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := f(core.EngineConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	return eng
}

// TestCacheIOThroughEngine: every cache, given an IO engine, reads and
// writes its files through it (the engine's own counters say so), and
// returns the source's bytes, also after a restart over the same files.
func TestCacheIOThroughEngine(t *testing.T) {
	for _, engName := range []string{"psync", "libaio", "posixaio", "io_uring"} {
		for _, typ := range []string{"file", "download", "ocf"} {
			t.Run(engName+"/"+typ, func(t *testing.T) {
				newCache, err := core.Caches.Lookup(typ)
				if err != nil {
					t.Fatal(err)
				}
				eng := newEngine(t, engName)
				dir, ldir := t.TempDir(), t.TempDir()
				data := cachetest.Data(3<<20+1234, 21)
				for round := range 2 {
					c, err := newCache(cacheConfig(dir, 0, eng))
					if err != nil {
						t.Fatal(err)
					}
					before := eng.Stats()
					src := cachetest.NewSource(data).WithDir(ldir)
					f, err := c.Open(context.Background(), src)
					if err != nil {
						t.Fatal(err)
					}
					cachetest.Check(t, f, data, 300, 70000, uint64(round))
					p := make([]byte, len(data))
					if _, err := f.ReadAt(p, 0); err != nil {
						t.Fatal(err)
					}
					cachetest.Must(t, f.Close())
					cachetest.Must(t, c.Close())
					after := eng.Stats()
					if after.Reads == before.Reads {
						t.Fatalf("round %d: engine %s served no read of the cache (counters %+v)", round, engName, after)
					}
					if round == 0 && after.Writes == before.Writes {
						t.Fatalf("engine %s served no write of the cache (counters %+v)", engName, after)
					}
					if round == 1 && src.Bytes.Load() != 0 {
						t.Fatalf("after a restart the cache fetched %d bytes again", src.Bytes.Load())
					}
				}
				// The caller's engine stays open after the cache closed.
				probe := filepath.Join(t.TempDir(), "probe")
				pf, err := eng.Open(probe, core.OpenOptions{Flag: os.O_RDWR | os.O_CREATE, Perm: 0o644})
				if err != nil {
					t.Fatalf("the cache closed the caller's engine: %v", err)
				}
				pf.Close()
			})
		}
	}
}

// TestCacheClosesHandedEngine: with CloseEngine the cache closes the
// engine after its files.
func TestCacheClosesHandedEngine(t *testing.T) {
	for _, typ := range []string{"file", "download", "ocf"} {
		newCache, err := core.Caches.Lookup(typ)
		if err != nil {
			t.Fatal(err)
		}
		eng := newEngine(t, "io_uring")
		cfg := cacheConfig(t.TempDir(), 0, eng)
		cfg.CloseEngine = true
		c, err := newCache(cfg)
		if err != nil {
			t.Fatal(err)
		}
		data := cachetest.Data(1<<20, 22)
		f, err := c.Open(context.Background(), cachetest.NewSource(data).WithDir(t.TempDir()))
		if err != nil {
			t.Fatal(err)
		}
		cachetest.Check(t, f, data, 20, 70000, 1)
		cachetest.Must(t, f.Close())
		cachetest.Must(t, c.Close())
		_, err = eng.Open(filepath.Join(t.TempDir(), "probe"), core.OpenOptions{Flag: os.O_RDWR | os.O_CREATE, Perm: 0o644})
		if !errors.Is(err, core.ErrClosed) {
			t.Fatalf("%s: engine open after the cache closed: %v, want core.ErrClosed", typ, err)
		}
	}
}

// TestSuiteUnderEngines runs every cache's common suite with its files
// served by each asynchronous engine.
func TestSuiteUnderEngines(t *testing.T) {
	for _, engName := range []string{"libaio", "posixaio", "io_uring"} {
		for _, typ := range []string{"file", "download", "ocf"} {
			t.Run(engName+"/"+typ, func(t *testing.T) {
				newCache, err := core.Caches.Lookup(typ)
				if err != nil {
					t.Fatal(err)
				}
				eng := newEngine(t, engName)
				cachetest.Suite(t, func(t testing.TB, dir string, capacity int64) core.Cache {
					if capacity > 0 && typ == "download" {
						t.Skip("the download cache has no size bound")
					}
					c, err := newCache(cacheConfig(dir, capacity, eng))
					if err != nil {
						t.Fatal(err)
					}
					return c
				})
			})
		}
	}
}

// TestCacheFromConfigUsesIOEngine: the daemons' cache (remote.CacheFromConfig)
// serves its files with the engine ioEngine selects, and closes it.
func TestCacheFromConfigUsesIOEngine(t *testing.T) {
	for _, c := range []struct{ ioEngine, want string }{{"0", "psync"}, {"2", "posixaio"}, {"3", "io_uring"}} {
		for _, typ := range []string{"file", "download", "ocf"} {
			g := config.DefaultGlobal()
			g.IOEngine = config.IOEngine(c.ioEngine)
			g.CacheConfig = config.CacheConfig{CacheType: typ, CacheDir: t.TempDir(), CacheSizeGB: 1, RefillSize: 262144, BlockSize: 65536}
			cache, err := remote.CacheFromConfig(g, 64<<20, nil)
			if err != nil {
				t.Fatalf("ioEngine %s, %s: %v", c.ioEngine, typ, err)
			}
			eng := cache.(interface{ Engine() core.Engine }).Engine()
			if eng.Name() != c.want {
				t.Fatalf("ioEngine %s, %s: the cache's engine is %s", c.ioEngine, typ, eng.Name())
			}
			data := cachetest.Data(1<<20, 23)
			f, err := cache.Open(context.Background(), cachetest.NewSource(data).WithDir(t.TempDir()))
			if err != nil {
				t.Fatal(err)
			}
			cachetest.Check(t, f, data, 20, 70000, 1)
			cachetest.Must(t, f.Close())
			if st := eng.Stats(); st.Reads == 0 || st.Writes == 0 {
				t.Fatalf("ioEngine %s, %s: the engine served no cache IO (counters %+v)", c.ioEngine, typ, st)
			}
			cachetest.Must(t, cache.Close())
			if _, err := eng.Open(filepath.Join(t.TempDir(), "probe"), core.OpenOptions{Flag: os.O_RDWR | os.O_CREATE, Perm: 0o644}); !errors.Is(err, core.ErrClosed) {
				t.Fatalf("ioEngine %s, %s: the cache left its engine open (%v)", c.ioEngine, typ, err)
			}
		}
	}
}

// TestDiskFullUnderEngines: the full-disk check of every cache with its
// files served by each asynchronous engine (a failed write surfaces
// through the engine as ENOSPC and is served from the source).
func TestDiskFullUnderEngines(t *testing.T) {
	for _, engName := range []string{"libaio", "posixaio", "io_uring"} {
		t.Run(engName+"/file", func(t *testing.T) {
			fs := cachetest.SmallFS(t, 8<<20)
			c, err := file.New(file.Options{Dir: filepath.Join(fs, "cache"), MinFreeBytes: -1, RefillSize: 64 << 10, Engine: newEngine(t, engName)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			src := cachetest.NewSource(cachetest.Data(4<<20, 41))
			cachetest.DiskFull(t, cachetest.DiskFullCase{FS: fs, Cache: c, Src: src, Chunk: 64 << 10, Warm: 1 << 20, ExpectFailures: true})
		})
		t.Run(engName+"/download", func(t *testing.T) {
			fs := cachetest.SmallFS(t, 8<<20)
			c, err := download.New(download.Options{RefillSize: 64 << 10, Engine: newEngine(t, engName)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			dir := filepath.Join(fs, "layer")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			src := cachetest.NewSource(cachetest.Data(4<<20, 42)).WithDir(dir)
			cachetest.DiskFull(t, cachetest.DiskFullCase{FS: fs, Cache: c, Src: src, Chunk: 64 << 10, Warm: 1 << 20, ExpectFailures: true})
		})
		for _, tc := range []struct {
			name     string
			capacity int64
			reserved bool
		}{{"reserved", 6 << 20, true}, {"sparse", 32 << 20, false}} {
			t.Run(engName+"/ocf/"+tc.name, func(t *testing.T) {
				fs := cachetest.SmallFS(t, 8<<20)
				c, err := ocf.New(ocf.Options{Dir: filepath.Join(fs, "cache"), CapacityBytes: tc.capacity, RefillSize: 64 << 10, Engine: newEngine(t, engName)})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				src := cachetest.NewSource(cachetest.Data(4<<20, 43))
				cachetest.DiskFull(t, cachetest.DiskFullCase{FS: fs, Cache: c, Src: src, Chunk: 64 << 10, Warm: 1 << 20, ExpectFailures: !tc.reserved})
			})
		}
	}
}
