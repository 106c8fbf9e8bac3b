//go:build vm

package vm

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/core/image"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
)

// repoRoot is the module root (two levels up from test/vm).
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "../.."))
}

func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// stdout runs a command and returns its standard output alone.
func stdout(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	var errb bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errb.String())
	}
	return out
}

// share makes the directory shared with the guest. It is removed when the
// test passes and kept (and named in the log) when it fails.
func share(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "overlaybd-vm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("guest share and logs kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// buildStatic builds static binaries of the given packages into dir.
func buildStatic(t *testing.T, dir string, pkgs ...string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, repoRoot(t), []string{"CGO_ENABLED=0"}, "go", append([]string{"build", "-o", dir + "/"}, pkgs...)...)
}

// boot runs a guest script from test/vm/guest in the VM with the share;
// flags are more options of run.sh (e.g. "-n" for a network card).
func boot(t *testing.T, shareDir, script string, timeout time.Duration, flags ...string) {
	t.Helper()
	root := repoRoot(t)
	scripts, _ := filepath.Glob(filepath.Join(root, "test/vm/guest", "*.sh"))
	for _, f := range scripts {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(shareDir, filepath.Base(f)), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout+2*time.Minute)
	defer cancel()
	args := append([]string{"-s", shareDir, "-t", strconv.Itoa(int(timeout.Seconds()))}, flags...)
	cmd := exec.CommandContext(ctx, filepath.Join(root, "test/vm/run.sh"), append(args, filepath.Join(shareDir, script))...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("%s ran in %v", script, time.Since(start).Round(time.Second))
	if err != nil {
		t.Fatalf("guest script %s: %v\n%s", script, err, out.String())
	}
	if testing.Verbose() {
		t.Log(out.String())
	}
}

// TestTCMUKernel runs frontends/tcmu's kernel tests (build tag tcmu_kernel)
// inside the VM: the frontend against the real target_core_user, tcm_loop
// and sd, with SG_IO for the commands the block layer does not send.
func TestTCMUKernel(t *testing.T) {
	dir := share(t)
	run(t, repoRoot(t), []string{"CGO_ENABLED=0"}, "go", "test", "-c", "-tags", "tcmu_kernel",
		"-o", filepath.Join(dir, "bin", "tcmu.test"), "./frontends/tcmu")
	script := "cp /mnt/bin/tcmu.test /tmp/ && /tmp/tcmu.test -test.v -test.timeout 150s\n"
	if err := os.WriteFile(filepath.Join(dir, "tcmu-kernel.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(repoRoot(t), "test/vm/run.sh"), "-s", dir, "-t", "200", filepath.Join(dir, "tcmu-kernel.sh"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kernel tests in the VM: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("\nPASS")) {
		t.Fatalf("no PASS from the kernel tests:\n%s", out)
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// globalConfig writes the daemon's overlaybd.json into the share, and a
// self-signed CA certificate the guest installs as its CA bundle.
func globalConfig(t *testing.T, dir string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "overlaybd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	writeJSON(t, filepath.Join(dir, "overlaybd.json"), map[string]any{
		"logConfig":   map[string]any{"logLevel": 1, "logPath": "/mnt/overlaybd.log"},
		"enableAudit": false,
		"cacheConfig": map[string]any{"cacheType": "file", "cacheDir": "/tmp/obd-cache", "cacheSizeGB": 1},
	})
}

// ext4Lower builds an ext4 file system with known files, imports it as a
// committed LSMT layer of vsize bytes and returns the raw image path, the
// expected sha256 list and the 4 KiB block ranges of /big.bin. Files in
// extra are added to the file system but not to the expected list.
func ext4Lower(t *testing.T, dir, commit string, vsize int64, extra ...map[string][]byte) (raw string, blocks []string) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "root")
	r := rand.New(rand.NewPCG(7, 7))
	files := map[string][]byte{
		"hello.txt":        []byte("hello from the lower layer\n"),
		"dir/sub/data.bin": make([]byte, 300<<10),
		"big.bin":          make([]byte, 6<<20),
	}
	all := map[string][]byte{}
	for _, m := range extra {
		for name, b := range m {
			all[name] = b
		}
	}
	for name, b := range files {
		all[name] = b
	}
	for name, b := range all {
		for i := range b {
			if len(b) > 1000 {
				b[i] = byte(r.Uint32())
			}
		}
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var sums strings.Builder
	for _, name := range []string{"hello.txt", "dir/sub/data.bin", "big.bin"} {
		fmt.Fprintf(&sums, "%s  %s\n", sha(files[name]), name)
	}
	if err := os.WriteFile(filepath.Join(dir, "expect.sha256"), []byte(sums.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	raw = filepath.Join(t.TempDir(), "lower.ext4")
	run(t, "", nil, "mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "nodiscard", "-d", src, raw, "64M")
	out := run(t, "", nil, "debugfs", "-R", "ex /big.bin", raw)
	// "ex" prints extents: Level Entries Logical Physical Length Flags.
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 8 && strings.Contains(line, " - ") {
			// e.g. " 0/ 0   1/  1     0 - 1535 33280 - 34815   1536"
			idx := strings.Index(line, " - ")
			rest := strings.Fields(line[idx+3:])
			if len(rest) >= 4 {
				blocks = append(blocks, rest[1]+" "+rest[4-1])
			}
		}
	}
	if len(blocks) == 0 {
		t.Fatalf("no extents for /big.bin in:\n%s", out)
	}
	src2, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer src2.Close()
	out2, err := os.Create(commit)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := image.ImportRaw(context.Background(), src2, out2, image.ImportOptions{VirtualSize: vsize, TempDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if err := out2.Close(); err != nil {
		t.Fatal(err)
	}
	return raw, blocks
}

// TestTCMUDaemon is the end to end test of overlaybd-tcmu: the snapshotter's
// configfs sequence, an ext4 stack mounted, read, written, trimmed; then on
// the host the upper is committed and the file system checked.
func TestTCMUDaemon(t *testing.T) {
	dir := share(t)
	bin := filepath.Join(dir, "bin")
	buildStatic(t, bin, "./cmd/overlaybd-tcmu")
	tools := t.TempDir()
	buildStatic(t, tools, "./cmd/overlaybd-create", "./cmd/overlaybd-commit")
	img := filepath.Join(dir, "img")
	os.MkdirAll(img, 0o755)
	const vsize = 1 << 30
	_, blocks := ext4Lower(t, dir, filepath.Join(img, "lower.commit"), vsize)
	// Physical 4 KiB blocks of big.bin as "start count" lines.
	var bl strings.Builder
	for _, b := range blocks {
		f := strings.Fields(b)
		s, _ := strconv.Atoi(f[0])
		e, _ := strconv.Atoi(f[1])
		fmt.Fprintf(&bl, "%d %d\n", s, e-s+1)
	}
	os.WriteFile(filepath.Join(dir, "big.blocks"), []byte(bl.String()), 0o644)
	run(t, "", nil, filepath.Join(tools, "overlaybd-create"), filepath.Join(img, "upper.data"), filepath.Join(img, "upper.index"), "1")
	writeJSON(t, filepath.Join(img, "config.v1.json"), map[string]any{
		"lowers":     []any{map[string]any{"file": "/mnt/img/lower.commit"}},
		"upper":      map[string]any{"index": "/mnt/img/upper.index", "data": "/mnt/img/upper.data"},
		"resultFile": "/mnt/img/result",
	})
	globalConfig(t, dir)

	boot(t, dir, "tcmu-daemon.sh", 240*time.Second)

	// On the host: commit the upper and check the file system of the stack.
	upperCommit := filepath.Join(img, "upper.commit")
	run(t, "", nil, filepath.Join(tools, "overlaybd-commit"), filepath.Join(img, "upper.data"), filepath.Join(img, "upper.index"), upperCommit)
	checkZeroedRecords(t, upperCommit, bl.String())
	stackCfg := filepath.Join(img, "stack.json")
	writeJSON(t, stackCfg, map[string]any{
		"lowers": []any{map[string]any{"file": filepath.Join(img, "lower.commit")}, map[string]any{"file": upperCommit}},
	})
	stack, err := image.OpenFile(context.Background(), stackCfg, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(t.TempDir(), "result.ext4")
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, io.NewSectionReader(stack, 0, 64<<20)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	stack.Close()
	run(t, "", nil, "e2fsck", "-fn", raw)
	written, err := os.ReadFile(filepath.Join(dir, "written.sha256"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(written)), "\n") {
		f := strings.Fields(line)
		got := stdout(t, "debugfs", "-R", "cat /"+f[1], raw)
		if sha(got) != f[0] {
			t.Errorf("/%s in the committed stack: sha256 %s, want %s", f[1], sha(got), f[0])
		}
	}
	if out := stdout(t, "debugfs", "-R", "ls -l /", raw); bytes.Contains(out, []byte("big.bin")) {
		t.Errorf("big.bin still listed after rm:\n%s", out)
	}
}

// checkZeroedRecords checks that the committed upper records the trimmed
// blocks of big.bin as zeroed ranges.
func checkZeroedRecords(t *testing.T, path, blocks string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	layer, err := lsmt.OpenReadOnly(psync.NewFile(f, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer layer.Close()
	maps := layer.Mappings()
	for _, line := range strings.Split(strings.TrimSpace(blocks), "\n") {
		var start, count uint64
		fmt.Sscan(line, &start, &count)
		b, e := start*8, (start+count)*8 // sectors
		pos := b
		for _, m := range maps {
			if m.Zeroed && m.Offset <= pos && m.End() > pos {
				pos = m.End()
			}
		}
		if pos < e {
			t.Errorf("sectors %d..%d of the trimmed file are not zeroed records in the upper (covered up to %d)", b, e, pos)
		}
	}
}
