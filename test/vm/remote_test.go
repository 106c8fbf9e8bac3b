//go:build vm

package vm

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/internal/registrytest"
)

// TestTCMURemote serves, through the kernel, an image whose committed lower
// layer is a blob in a registry on the host (distribution's code in
// process, basic auth), read lazily through the file cache with
// credentials from credentialConfig's file, under a writable upper.
func TestTCMURemote(t *testing.T) {
	dir := share(t)
	bin := filepath.Join(dir, "bin")
	buildStatic(t, bin, "./cmd/overlaybd-tcmu")
	tools := t.TempDir()
	buildStatic(t, tools, "./cmd/overlaybd-create")
	img := filepath.Join(dir, "img")
	os.MkdirAll(img, 0o755)

	lower := filepath.Join(t.TempDir(), "lower.commit")
	// 24 MiB the guest never reads: a lazy reader leaves most of it unfetched.
	ext4Lower(t, dir, lower, 1<<30, map[string][]byte{"unread.bin": make([]byte, 24<<20)})
	blob, err := os.ReadFile(lower)
	if err != nil {
		t.Fatal(err)
	}
	reg := registrytest.New(t, registrytest.Options{Auth: registrytest.Basic, Users: map[string]string{"puller": "s3cret-pw"}})
	digest := reg.PushBlob(t, "vm/image", blob)
	reg.ResetCounts()
	// The guest reaches the host's 127.0.0.1 as 10.0.2.2 (qemu user network).
	port := reg.Host()[strings.LastIndex(reg.Host(), ":")+1:]
	guestHost := "10.0.2.2:" + port

	run(t, "", nil, filepath.Join(tools, "overlaybd-create"), filepath.Join(img, "upper.data"), filepath.Join(img, "upper.index"), "1")
	writeJSON(t, filepath.Join(img, "config.v1.json"), map[string]any{
		"repoBlobUrl": "http://" + guestHost + "/v2/vm/image/blobs",
		"lowers":      []any{map[string]any{"dir": "/tmp/layer0", "digest": digest, "size": len(blob)}},
		"upper":       map[string]any{"index": "/mnt/img/upper.index", "data": "/mnt/img/upper.data"},
		"resultFile":  "/mnt/img/result",
	})
	cred := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, guestHost, base64.StdEncoding.EncodeToString([]byte("puller:s3cret-pw")))
	if err := os.WriteFile(filepath.Join(dir, "cred.json"), []byte(cred), 0o600); err != nil {
		t.Fatal(err)
	}
	globalConfig(t, dir)
	writeJSON(t, filepath.Join(dir, "overlaybd.json"), map[string]any{
		"logConfig":        map[string]any{"logLevel": 1, "logPath": "/mnt/overlaybd.log"},
		"enableAudit":      true,
		"auditPath":        "/tmp/obd-audit.log",
		"cacheConfig":      map[string]any{"cacheType": "file", "cacheDir": "/tmp/obd-cache", "cacheSizeGB": 1},
		"credentialConfig": map[string]any{"mode": "file", "path": "/mnt/cred.json"},
	})

	boot(t, dir, "tcmu-remote.sh", 240*time.Second, "-n")

	c := reg.Counts()
	t.Logf("registry served %d blob requests, %d of %d bytes", c.BlobRequests, c.BlobBytes, len(blob))
	if c.BlobRequests == 0 {
		t.Fatal("the registry served no blob request: the layer was not read from it")
	}
	if c.BlobBytes >= int64(len(blob))/2 {
		t.Errorf("%d of the blob's %d bytes were fetched though the guest read under a third of them: reads are not lazy", c.BlobBytes, len(blob))
	}
	for _, f := range []string{"overlaybd.log", "audit.log", "daemon.stderr", "console.log"} {
		b, _ := os.ReadFile(filepath.Join(dir, f))
		if strings.Contains(string(b), "s3cret-pw") || strings.Contains(string(b), base64.StdEncoding.EncodeToString([]byte("puller:s3cret-pw"))) {
			t.Errorf("%s contains the registry credential", f)
		}
	}
}
