package metrics

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/overlaybd-go/overlaybd/caches/download" // registers "download"
	_ "github.com/overlaybd-go/overlaybd/caches/ocf"      // registers "ocf"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/audit"
)

// dirSource is a memSource that belongs to a layer directory.
type dirSource struct {
	*memSource
	dir string
}

func (s dirSource) LayerDir() string { return s.dir }

// auditLine is upstream's audit line: time, level, thread, event, fields.
var auditLine = regexp.MustCompile(`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6}\|AUDIT\|th=[0-9A-F]{16}\|([a-z_:]+)((?:\[[A-Za-z_]+=[^\]]*\])+)$`)
var auditField = regexp.MustCompile(`\[([A-Za-z_]+)=([^\]]*)\]`)

type auditEvent struct {
	name   string
	fields map[string]string
	order  []string
}

func readAudit(t *testing.T, path string) []auditEvent {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var evs []auditEvent
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		m := auditLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("audit line not in upstream's format: %q", line)
		}
		ev := auditEvent{name: m[1], fields: map[string]string{}}
		for _, f := range auditField.FindAllStringSubmatch(m[2], -1) {
			ev.fields[f[1]] = f[2]
			ev.order = append(ev.order, f[1])
		}
		evs = append(evs, ev)
	}
	return evs
}

// TestCacheAuditEvents reads blobs through each cache, instrumented with an
// audit log as the daemons do, and checks the audit file's lines: download
// events for the registry reads, file:read/file:write for the cache media,
// eviction runs for the bounded caches, each with upstream's fields.
func TestCacheAuditEvents(t *testing.T) {
	// Every media IO is recorded (upstream skips the fast ones).
	saved := map[string]time.Duration{}
	for k, v := range audit.Thresholds {
		saved[k] = v
		audit.Thresholds[k] = 0
	}
	defer func() {
		for k, v := range saved {
			audit.Thresholds[k] = v
		}
	}()
	for _, typ := range []string{"file", "download", "ocf"} {
		t.Run(typ, func(t *testing.T) {
			// Room for about one of the two 1 MiB blobs.
			a := newAuditedCache(t, typ, core.CacheConfig{CapacityBytes: 1<<20 + 512<<10, RefillSize: 256 << 10, BlockSize: 65536}, New())
			dir, raw, auditPath := a.dir, a.raw, a.auditPath
			if au, ok := a.c.(core.AuditedCache); !ok || au.Auditor() != core.Auditor(a.al) {
				t.Fatal("the instrumented cache does not carry the audit log")
			}
			for i := range 2 {
				src := &memSource{data: bytes.Repeat([]byte{byte('a' + i)}, 1<<20), key: fmt.Sprintf("sha256:%064x", i+1)}
				var s core.Source = src
				if typ == "download" {
					ld := filepath.Join(dir, fmt.Sprintf("layer%d", i))
					os.Mkdir(ld, 0o755)
					s = dirSource{src, ld}
				}
				f, err := a.c.Open(context.Background(), s)
				if err != nil {
					t.Fatal(err)
				}
				readTwice(t, f, src) // miss, then hit
				f.Close()
			}
			st := raw.Stats()
			count := map[string]int{}
			var readBytes, writeBytes, downloadBytes int64
			for _, ev := range readAudit(t, auditPath) {
				count[ev.name]++
				switch ev.name {
				case audit.EventDownload, audit.EventFileRead, audit.EventFileWrite:
					if strings.Join(ev.order, ",") != "pathname,offset,size,latency" {
						t.Errorf("%s fields %v", ev.name, ev.order)
					}
					size, err := strconv.ParseInt(ev.fields["size"], 10, 64)
					if err != nil {
						t.Fatalf("%s size %q", ev.name, ev.fields["size"])
					}
					path := ev.fields["pathname"]
					switch ev.name {
					case audit.EventDownload:
						downloadBytes += size
						if !strings.HasPrefix(path, "/https://registry.test/v2/r/blobs/sha256:") {
							t.Errorf("download pathname %q", path)
						}
					case audit.EventFileRead:
						readBytes += size
					case audit.EventFileWrite:
						writeBytes += size
					}
					if ev.name != audit.EventDownload && !strings.HasPrefix(path, dir) {
						t.Errorf("%s pathname %q is not a cache file under %s", ev.name, path, dir)
					}
				case audit.EventEviction:
					if strings.Join(ev.order, ",") != "actualEvict,evictByCache,evictByDisk,totalUsed_" {
						t.Errorf("eviction fields %v", ev.order)
					}
					if v, _ := strconv.ParseInt(ev.fields["actualEvict"], 10, 64); v <= 0 {
						t.Errorf("eviction without evicted bytes: %v", ev.fields)
					}
				default:
					t.Errorf("unexpected event %s", ev.name)
				}
			}
			t.Logf("%s: events %v, stats %+v", typ, count, st)
			if uint64(downloadBytes) != st.FetchedBytes || downloadBytes < 2<<20 {
				t.Errorf("download events cover %d bytes, the cache fetched %d", downloadBytes, st.FetchedBytes)
			}
			if count[audit.EventFileRead] == 0 || readBytes < 2<<20 {
				t.Errorf("file:read events cover %d bytes in %d lines; 2 MiB were hits", readBytes, count[audit.EventFileRead])
			}
			if count[audit.EventFileWrite] == 0 || writeBytes < 2<<20 {
				t.Errorf("file:write events cover %d bytes in %d lines; 2 MiB were stored", writeBytes, count[audit.EventFileWrite])
			}
			bounded := typ != "download"
			if bounded && (count[audit.EventEviction] == 0 || st.Evictions == 0) {
				t.Errorf("no eviction event (cache evictions %d)", st.Evictions)
			}
			if !bounded && count[audit.EventEviction] != 0 {
				t.Errorf("eviction events from a cache without a bound")
			}
		})
	}
}
