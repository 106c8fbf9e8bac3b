package all_test

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/overlaybd-go/overlaybd/core"
	_ "github.com/overlaybd-go/overlaybd/engines/all"
	"github.com/overlaybd-go/overlaybd/engines/enginetest"
)

func TestRegistry(t *testing.T) {
	for n, want := range []string{"psync", "libaio", "posixaio", "io_uring"} {
		for _, key := range []string{want, string(rune('0' + n))} {
			name, f, err := core.Engines.Resolve(key)
			if err != nil || name != want {
				t.Fatalf("Resolve(%q) = %q, %v; want %q", key, name, err, want)
			}
			e, err := f(core.EngineConfig{})
			if err != nil {
				t.Fatalf("%s: %v", want, err)
			}
			if e.Name() != want && (e.Name() != "psync" || e.Stats().Fallbacks != 1) {
				t.Errorf("engine %s reports name %q", want, e.Name())
			}
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	_, _, err := core.Engines.Resolve("4")
	if err == nil || !strings.Contains(err.Error(), "io_uring (3)") {
		t.Fatalf("Resolve(4) error = %v, want one that lists the engines", err)
	}
	if _, _, err := core.Engines.Resolve("uring"); err == nil {
		t.Fatal("Resolve(uring) succeeded")
	}
}

// TestConformanceRegistered runs the engine suite the way the project-wide
// matrix does: on every registered engine, through the registry. The
// engines' own packages run it too, so it is left out of -short runs.
func TestConformanceRegistered(t *testing.T) {
	if testing.Short() {
		t.Skip("each engine package runs the suite; -short skips the registry pass")
	}
	enginetest.RunAll(t)
}

var (
	benchOnce sync.Once
	benchPath string
	benchErr  error
)

const benchSize = 64 << 20

func TestMain(m *testing.M) {
	code := m.Run()
	if benchPath != "" {
		os.RemoveAll(filepath.Dir(benchPath))
	}
	os.Exit(code)
}

// benchFile returns a 64 MiB file of random bytes on a disk filesystem.
func benchFile(b *testing.B) string {
	benchOnce.Do(func() {
		dir, err := os.MkdirTemp(os.Getenv("OVERLAYBD_BENCH_DIR"), "engines-bench")
		if err != nil {
			benchErr = err
			return
		}
		benchPath = filepath.Join(dir, "data")
		data := make([]byte, benchSize)
		r := rand.New(rand.NewPCG(1, 2))
		for i := 0; i < len(data); i += 8 {
			*(*uint64)(unsafe.Pointer(&data[i])) = r.Uint64()
		}
		benchErr = os.WriteFile(benchPath, data, 0o644)
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchPath
}

func aligned(n int) []byte {
	raw := make([]byte, n+4096)
	skip := (4096 - int(uintptr(unsafe.Pointer(&raw[0]))%4096)) % 4096
	return raw[skip : skip+n]
}

// BenchmarkEngines reads one file with every engine: 4 KiB random reads
// O_DIRECT from 1 and 32 goroutines, 1 MiB sequential reads O_DIRECT, and
// 4 KiB random page-cache hits. Compare the engines within one run; the
// comparison with fio is bench/engines/run.sh. Set OVERLAYBD_BENCH_DIR to
// put the file on another filesystem than $TMPDIR's.
func BenchmarkEngines(b *testing.B) {
	path := benchFile(b)
	cases := []struct {
		name    string
		bs      int
		workers int
		direct  bool
		seq     bool
	}{
		{"randread-4k-qd1-direct", 4096, 1, true, false},
		{"randread-4k-qd32-direct", 4096, 32, true, false},
		{"read-1m-qd1-direct", 1 << 20, 1, true, true},
		{"randread-4k-qd1-cached", 4096, 1, false, false},
		{"randread-4k-qd2-cached", 4096, 2, false, false},
	}
	for _, c := range cases {
		for _, name := range []string{"psync", "libaio", "io_uring", "posixaio"} {
			b.Run(c.name+"/"+name, func(b *testing.B) {
				factory, err := core.Engines.Lookup(name)
				if err != nil {
					b.Fatal(err)
				}
				e, err := factory(core.EngineConfig{QueueDepth: max(c.workers, 16)})
				if err != nil {
					b.Fatal(err)
				}
				defer e.Close()
				f, err := e.Open(path, core.OpenOptions{Flag: os.O_RDONLY, Direct: c.direct, Buffered: !c.direct})
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				if !c.direct {
					buf := make([]byte, 1<<20)
					for off := int64(0); off < benchSize; off += int64(len(buf)) {
						f.ReadAt(buf, off)
					}
				}
				blocks := int64(benchSize / c.bs)
				var next atomic.Int64
				var wg sync.WaitGroup
				b.SetBytes(int64(c.bs))
				b.ResetTimer()
				for w := range c.workers {
					wg.Go(func() {
						buf := aligned(c.bs)
						r := rand.New(rand.NewPCG(uint64(w), 9))
						for {
							i := next.Add(1)
							if i > int64(b.N) {
								return
							}
							off := r.Int64N(blocks) * int64(c.bs)
							if c.seq {
								off = (i % blocks) * int64(c.bs)
							}
							if n, err := f.ReadAt(buf, off); n != c.bs {
								b.Errorf("ReadAt(%d) = %d, %v", off, n, err)
								return
							}
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "IOPS")
				b.ReportMetric(float64(e.Stats().MaxInFlight), "max-in-flight")
			})
		}
	}
}
