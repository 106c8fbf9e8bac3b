package audit

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/core/config"
)

var lineRE = regexp.MustCompile(`^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}\.\d{6}\|AUDIT\|th=[0-9A-F]{16}\|(.*)$`)

func TestEventsLineFormat(t *testing.T) {
	p := filepath.Join(t.TempDir(), "audit.log")
	g := config.DefaultGlobal()
	g.EnableAudit, g.AuditPath = true, p
	l, err := Open(g)
	if err != nil || l == nil {
		t.Fatalf("Open: %v %v", l, err)
	}
	l.now = func() time.Time { return time.Date(2024, 5, 1, 10, 0, 0, 123456000, time.Local) }
	url := "/https://r/v2/a/blobs/sha256:ab"
	l.IO(EventDownload, url, 0, 262144, 15321*time.Microsecond)
	l.IO(EventBkDownload, url, 1<<20, 1<<20, 3*time.Microsecond)
	l.IO(EventFileRead, "/cache/a", 4096, 4096, 500*time.Microsecond) // below 1 ms: not recorded
	l.IO(EventFileRead, "/cache/a", 4096, 4096, 2*time.Millisecond)
	l.IO(EventFileWrite, "/cache/a", 0, 8192, 9*time.Millisecond) // below 10 ms
	l.IO(EventFileWrite, "/cache/a", 0, 8192, 12*time.Millisecond)
	l.IO(EventFilePread, "/layers/x/overlaybd.commit", 512, 1024, 10*time.Millisecond)
	l.IO(EventDownload, "/https://blob.example/x?X-Amz-Signature=SECRETSIG", 0, 1, time.Millisecond)
	l.Eviction(4, 3, 1, 1<<30)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"download[pathname=/https://r/v2/a/blobs/sha256:ab][offset=0][size=262144][latency=15321]",
		"bk_download[pathname=/https://r/v2/a/blobs/sha256:ab][offset=1048576][size=1048576][latency=3]",
		"file:read[pathname=/cache/a][offset=4096][size=4096][latency=2000]",
		"file:write[pathname=/cache/a][offset=0][size=8192][latency=12000]",
		"file:pread[pathname=/layers/x/overlaybd.commit][offset=512][size=1024][latency=10000]",
		"download[pathname=/https://blob.example/x?REDACTED][offset=0][size=1][latency=1000]",
		"eviction[actualEvict=4][evictByCache=3][evictByDisk=1][totalUsed_=1073741824]",
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), b)
	}
	for i, line := range lines {
		m := lineRE.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("line %d %q: bad prefix", i, line)
			continue
		}
		if m[1] != want[i] {
			t.Errorf("line %d = %q, want %q", i, m[1], want[i])
		}
		if !strings.HasPrefix(line, "2024/05/01 ") || !strings.Contains(line, ":00:00.123456|") {
			t.Errorf("line %d: time not printed as upstream: %q", i, line)
		}
	}
}

func TestDisabled(t *testing.T) {
	g := config.DefaultGlobal()
	g.EnableAudit = false
	g.AuditPath = filepath.Join(t.TempDir(), "a.log")
	l, err := Open(g)
	if l != nil || err != nil {
		t.Fatalf("disabled audit: %v %v", l, err)
	}
	l.IO(EventDownload, "x", 0, 1, time.Second) // nil log: no panic
	l.Eviction(1, 1, 1, 1)
	if _, err := os.Stat(g.AuditPath); !os.IsNotExist(err) {
		t.Error("disabled audit created its file")
	}
	g.EnableAudit, g.AuditPath = true, ""
	if l, err := Open(g); l != nil || err != nil {
		t.Fatalf("empty path: %v %v", l, err)
	}
	g.AuditPath = filepath.Join(t.TempDir(), "no", "such", "dir", "a.log")
	if l, err := Open(g); l != nil || err == nil {
		t.Fatalf("unopenable path: %v %v", l, err)
	}
}

func TestRotation(t *testing.T) {
	p := filepath.Join(t.TempDir(), "audit.log")
	const size = 64 << 10 // upstream's 10 MiB in small
	l, err := openFile(p, size)
	if err != nil {
		t.Fatal(err)
	}
	long := "/" + strings.Repeat("u", 2000)
	for range 5 * size / 2000 {
		l.IO(EventDownload, long, 0, 1, time.Millisecond)
	}
	l.Close()
	for _, f := range []string{p, p + ".1", p + ".2", p + ".3"} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > size || (f != p && st.Size() < size-2100) {
			t.Errorf("%s: %d bytes, want just under %d", f, st.Size(), size)
		}
	}
	if _, err := os.Stat(p + ".4"); !os.IsNotExist(err) {
		t.Error("more than 3 rotated audit files kept")
	}
}
