//go:build vm

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/core/image"
)

// The kernel tier (build tag vm, run through test/vm/run.sh): the kernel's
// own NBD client (nbd.ko driven by nbd-client) attaches an image served by
// a static overlaybd-nbd inside a Linux guest; ext4 is mounted, read and
// written; the host then checks the committed-to-upper result with e2fsck
// and debugfs after reopening the image.

const guestScript = `#!/bin/sh
set -x
fail() { echo "FAIL: $*"; tail -n 40 /mnt/nbd.log; exit 1; }
/mnt/bin/overlaybd-nbd --unix /tmp/nbd.sock /mnt/config.v1.json 2>/mnt/nbd.log &
SPID=$!
n=100; while [ ! -S /tmp/nbd.sock ] && [ $n -gt 0 ]; do sleep 0.1; n=$((n-1)); done
[ -S /tmp/nbd.sock ] || fail "server did not start"
NBDC="/mnt/lib/ld-linux-x86-64.so.2 --library-path /mnt/lib /mnt/lib/nbd-client"
$NBDC -u /tmp/nbd.sock /dev/nbd0 || fail "nbd-client"
n=100; while [ "$(cat /sys/block/nbd0/size)" = 0 ] && [ $n -gt 0 ]; do sleep 0.1; n=$((n-1)); done
echo "nbd0 sectors: $(cat /sys/block/nbd0/size)" > /mnt/size.out
mkdir -p /tmp/m
mount -t ext4 /dev/nbd0 /tmp/m || fail "mount"
cat /tmp/m/hello.txt > /mnt/hello.out || fail "read hello.txt"
dd if=/dev/urandom of=/tmp/m/new.bin bs=65536 count=16 2>/dev/null || fail "write"
sha256sum /tmp/m/new.bin | cut -d' ' -f1 > /mnt/new.sha
fstrim -v /tmp/m > /mnt/fstrim.out 2>&1
umount /tmp/m || fail "umount"
$NBDC -d /dev/nbd0
kill -TERM $SPID
wait $SPID
echo $? > /mnt/server.rc
exit 0
`

// libClosure copies a dynamic binary and the libraries it loads into dir.
func libClosure(t *testing.T, bin, dir string) {
	t.Helper()
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		t.Skipf("ldd %s: %v", bin, err)
	}
	copyTo := func(src, name string) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(dir, 0o755)
	copyTo(bin, filepath.Base(bin))
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			copyTo(f[2], filepath.Base(f[2]))
		case len(f) >= 1 && strings.HasPrefix(f[0], "/") && strings.Contains(f[0], "ld-linux"):
			copyTo(f[0], "ld-linux-x86-64.so.2")
		}
	}
}

func TestKernelNBDClient(t *testing.T) {
	nbdClient := needTool(t, "nbd-client")
	mkfs := needTool(t, "mkfs.ext4")
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Clean(filepath.Join(filepath.Dir(file), "../.."))
	runSh := filepath.Join(root, "test/vm/run.sh")
	if _, err := os.Stat(runSh); err != nil {
		t.Skip("no VM harness")
	}
	share, err := os.MkdirTemp("", "overlaybd-nbd-vm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("share kept in %s", share)
			return
		}
		os.RemoveAll(share)
	})
	build := exec.Command("go", "build", "-o", filepath.Join(share, "bin")+"/", "./cmd/overlaybd-nbd")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	libClosure(t, nbdClient, filepath.Join(share, "lib"))

	// The image, with the guest's paths (the share is /mnt there).
	content := filepath.Join(t.TempDir(), "content")
	os.MkdirAll(content, 0o755)
	os.WriteFile(filepath.Join(content, "hello.txt"), []byte("hello, kernel\n"), 0o644)
	raw := filepath.Join(t.TempDir(), "base.ext4")
	runTool(t, mkfs, "-q", "-F", "-b", "4096", "-d", content, raw, "64M")
	src, _ := os.Open(raw)
	lf, _ := os.Create(filepath.Join(share, "base.commit"))
	if _, err := image.ImportRaw(context.Background(), src, lf, image.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	src.Close()
	lf.Close()
	newUpper(t, share, 0)
	writeJSON(t, filepath.Join(share, "config.v1.json"), map[string]any{
		"lowers":     []any{map[string]any{"file": "/mnt/base.commit"}},
		"upper":      map[string]any{"data": "/mnt/writable_data", "index": "/mnt/writable_index"},
		"resultFile": "/mnt/result",
	})
	script := filepath.Join(share, "nbd-kernel.sh")
	os.WriteFile(script, []byte(guestScript), 0o755)

	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, runSh, "-s", share, "-t", "240", script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("guest: %v\n%s", err, out)
	}
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(share, name))
		return strings.TrimSpace(string(b))
	}
	if got := read("hello.out"); got != "hello, kernel" {
		t.Fatalf("hello.txt through nbd.ko: %q\n%s", got, out)
	}
	if rc := read("server.rc"); rc != "0" {
		t.Fatalf("server exit %q\n%s", rc, read("nbd.log"))
	}
	if r := read("result"); r != "success" {
		t.Fatalf("result file %q", r)
	}
	t.Logf("guest: %s; %s", read("size.out"), read("fstrim.out"))

	// Reopen on the host with host paths.
	hostCfg := writeJSON(t, filepath.Join(t.TempDir(), "config.json"), map[string]any{
		"lowers": []any{map[string]any{"file": filepath.Join(share, "base.commit")}},
		"upper":  map[string]any{"data": filepath.Join(share, "writable_data"), "index": filepath.Join(share, "writable_index")},
	})
	img, err := image.OpenFile(context.Background(), hostCfg, image.Options{ReadOnly: false})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, img.Size())
	if _, err := img.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	img.Close()
	after := filepath.Join(t.TempDir(), "after.raw")
	os.WriteFile(after, buf, 0o644)
	runTool(t, "e2fsck", "-fn", after)
	dump := filepath.Join(t.TempDir(), "new.bin")
	runTool(t, "debugfs", "-R", "dump /new.bin "+dump, after)
	b, _ := os.ReadFile(dump)
	sum := sha256.Sum256(b)
	if hex.EncodeToString(sum[:]) != read("new.sha") || len(b) != 1<<20 {
		t.Fatalf("new.bin after reopen: %d bytes, sha %x, guest wrote %s", len(b), sum, read("new.sha"))
	}
}
