package remote_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/caches/download"
	"github.com/overlaybd-go/overlaybd/core/audit"
	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/core/metrics"
	"github.com/overlaybd-go/overlaybd/core/remote"
	"github.com/overlaybd-go/overlaybd/internal/registrytest"
)

// TestDownloadAuditEvents: a layer opener over a cache instrumented with an
// audit log (as the daemons build it) records a bk_download line per
// background-download read, with the blob's URL in upstream's path form,
// download lines for the cache's registry reads, and file:pread lines once
// reads go to the downloaded layer.
func TestDownloadAuditEvents(t *testing.T) {
	saved := audit.Thresholds[audit.EventFilePread]
	audit.Thresholds[audit.EventFilePread] = 0
	defer func() { audit.Thresholds[audit.EventFilePread] = saved }()

	reg := registrytest.New(t, registrytest.Options{})
	data := layer(2<<20, 23)
	dgst := reg.PushBlob(t, "audit/app", data)
	u := remote.BlobURL(reg.URL+"/v2/audit/app/blobs", dgst)
	c, logs := newClient(t, remote.Options{ReadAhead: -1})
	dc, err := download.New(download.Options{})
	if err != nil {
		t.Fatal(err)
	}
	auditPath := filepath.Join(t.TempDir(), "audit.log")
	al, err := audit.OpenFile(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	defer al.Close()
	cache := metrics.InstrumentCache(dc, nil, al)
	lo := remote.NewLayerOpener(c, remote.LayerOpenerOptions{Cache: cache,
		Download: &remote.DownloadOptions{BlockSize: 512 << 10, Logger: c.Logger()}})
	defer lo.Close()
	dir := t.TempDir()
	f, err := lo.OpenRemote(context.Background(), u, config.Layer{Digest: dgst, Size: uint64(len(data)), Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, 4096)
	if _, err := f.ReadAt(p, 8192); err != nil || !bytes.Equal(p, data[8192:12288]) {
		t.Fatalf("lazy read: %v", err)
	}
	waitLocal(t, f, logs)
	if _, err := f.ReadAt(p, 1<<20); err != nil || !bytes.Equal(p, data[1<<20:1<<20+4096]) {
		t.Fatalf("local read: %v", err)
	}
	b, err := os.ReadFile(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6}\|AUDIT\|th=[0-9A-F]{16}\|(\w+(?::\w+)?)\[pathname=([^\]]*)\]\[offset=(\d+)\]\[size=(\d+)\]\[latency=\d+\]$`)
	count := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("audit line not in upstream's format: %q", l)
		}
		count[m[1]]++
		switch m[1] {
		case audit.EventBkDownload, audit.EventDownload:
			if m[2] != "/"+u {
				t.Errorf("%s pathname %q, want %q", m[1], m[2], "/"+u)
			}
		case audit.EventFilePread:
			if m[2] != filepath.Join(dir, remote.CommitFileName) || m[3] != "1048576" || m[4] != "4096" {
				t.Errorf("file:pread line %q", l)
			}
		}
	}
	if count[audit.EventBkDownload] != 4 || count[audit.EventDownload] == 0 || count[audit.EventFilePread] != 1 {
		t.Errorf("events %v; want 4 bk_download (2 MiB in 512 KiB reads), download lines, 1 file:pread\n%s", count, b)
	}
}
