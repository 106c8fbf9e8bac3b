package metrics

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/overlaybd-go/overlaybd/caches/file" // registers "file"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/audit"
)

// memSource is an in-memory blob.
type memSource struct {
	data []byte
	key  string
}

func (s *memSource) ReadAtContext(_ context.Context, p []byte, off int64) (int, error) {
	return bytes.NewReader(s.data).ReadAt(p, off)
}
func (s *memSource) Size() int64 { return int64(len(s.data)) }
func (s *memSource) Key() string { return s.key }
func (s *memSource) URL() string { return "/https://registry.test/v2/r/blobs/" + s.key }

// auditedCache is a real cache of the registered type, instrumented with
// InstrumentCache and an audit log as the daemons do.
type auditedCache struct {
	dir       string     // the test's directory, holding cache/ and audit.log
	raw       core.Cache // the cache itself
	c         core.Cache // raw, instrumented
	al        *audit.Log
	auditPath string
}

// newAuditedCache opens a cache of type typ with cfg (its Dir is set to a
// new directory) and an audit log, and instruments the cache with m and the
// log. Both close when the test ends.
func newAuditedCache(t *testing.T, typ string, cfg core.CacheConfig, m *Metrics) *auditedCache {
	t.Helper()
	a := &auditedCache{dir: t.TempDir()}
	newCache, err := core.Caches.Lookup(typ)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dir = filepath.Join(a.dir, "cache")
	if a.raw, err = newCache(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.raw.Close() })
	a.auditPath = filepath.Join(a.dir, "audit.log")
	if a.al, err = audit.OpenFile(a.auditPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.al.Close() })
	a.c = InstrumentCache(a.raw, m, a.al)
	return a
}

// readTwice reads all of src through f twice (a miss, then a hit) and
// checks the data.
func readTwice(t *testing.T, f core.File, src *memSource) {
	t.Helper()
	p := make([]byte, len(src.data))
	for range 2 {
		if n, err := f.ReadAt(p, 0); n != len(p) || err != nil || !bytes.Equal(p, src.data) {
			t.Fatalf("read %d %v", n, err)
		}
	}
}

// TestInstrumentedFileCache reads a blob through the real file cache wrapped
// by InstrumentCache and checks upstream's two sets, the cache collector and
// the audit's download events against the cache's own counters.
func TestInstrumentedFileCache(t *testing.T) {
	m := New()
	a := newAuditedCache(t, "file", core.CacheConfig{RefillSize: 256 << 10}, m)
	raw, auditPath := a.raw, a.auditPath
	if err := m.AddCache("file", raw); err != nil {
		t.Fatal(err)
	}

	src := &memSource{data: bytes.Repeat([]byte("0123456789abcdef"), 1<<16), key: "sha256:" + strings.Repeat("ab", 32)} // 1 MiB
	f, err := a.c.Open(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	readTwice(t, f, src) // miss, then hit
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	st := raw.Stats()
	pr, dl := m.PreadMeter().Values(), m.DownloadMeter().Values()
	if pr.Count != 2<<20 {
		t.Errorf("pread count %d, want %d", pr.Count, 2<<20)
	}
	if dl.Count != st.FetchedBytes || dl.Count < 1<<20 {
		t.Errorf("download count %d, cache fetched %d", dl.Count, st.FetchedBytes)
	}
	b, err := os.ReadFile(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Count(string(b), "|download[pathname=/https://registry.test/v2/r/blobs/sha256:abab")
	if lines == 0 || uint64(lines) > st.Misses+st.FetchedBytes/(256<<10) {
		t.Errorf("%d download audit lines, cache misses %d fetched %d:\n%s", lines, st.Misses, st.FetchedBytes, b)
	}
	mf, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range mf {
		if fam.GetName() == "overlaybd_cache_hits_total" {
			if v := fam.Metric[0].Counter.GetValue(); v != float64(st.Hits) || v == 0 {
				t.Errorf("hits metric %v, cache %d", v, st.Hits)
			}
		}
	}
}
