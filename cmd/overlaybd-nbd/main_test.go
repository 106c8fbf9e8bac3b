package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/image"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/internal/logtest"
	"github.com/overlaybd-go/overlaybd/internal/registrytest"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

const shaMerged = "1b9080e2fee87dd365461b1954d0ec5aef94ff96ade24da93499d01a70322e4b"

func needTool(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("OVERLAYBD_REQUIRE_TOOLS") == "1" {
			tb.Fatalf("%s is required: %v", name, err)
		}
		tb.Skipf("%s not installed (apt-get install libnbd-bin qemu-utils fio)", name)
	}
	return p
}

func runTool(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// server is overlaybd-nbd running in-process.
type server struct {
	addr   net.Addr
	cancel context.CancelFunc
	done   chan int
	log    *logtest.Buffer
	once   sync.Once
}

// start runs the command with args and waits until it listens.
func start(tb testing.TB, args ...string) *server {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{cancel: cancel, done: make(chan int, 1), log: &logtest.Buffer{}}
	ready := make(chan net.Addr, 1)
	go func() { s.done <- run(ctx, args, s.log, ready) }()
	select {
	case s.addr = <-ready:
	case code := <-s.done:
		cancel()
		tb.Fatalf("overlaybd-nbd exited %d before listening:\n%s", code, s.log)
	case <-time.After(30 * time.Second):
		cancel()
		tb.Fatal("overlaybd-nbd did not start")
	}
	tb.Cleanup(func() { s.stop(tb) })
	return s
}

// stop signals the server and checks that it exits 0.
func (s *server) stop(tb testing.TB) {
	s.once.Do(func() {
		s.cancel()
		select {
		case code := <-s.done:
			if code != 0 {
				tb.Errorf("overlaybd-nbd exited %d:\n%s", code, s.log)
			}
		case <-time.After(time.Minute):
			tb.Error("overlaybd-nbd did not stop")
		}
	})
}

func writeJSON(tb testing.TB, path string, v any) string {
	tb.Helper()
	b, _ := json.Marshal(v)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

func unixURI(sock, name string) string { return fmt.Sprintf("nbd+unix:///%s?socket=%s", name, sock) }

func mergedRaw(tb testing.TB) []byte {
	tb.Helper()
	zb, err := os.ReadFile(testvectors.Path(tb, "stack/merged.raw.zst"))
	if err != nil {
		tb.Fatal(err)
	}
	d, _ := zstd.NewReader(nil)
	defer d.Close()
	raw, err := d.DecodeAll(zb, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if s := sha256.Sum256(raw); hex.EncodeToString(s[:]) != shaMerged {
		tb.Fatal("merged.raw.zst does not decode to the expected image")
	}
	return raw
}

// allocation paints the layers' indexes bottom first: a sector covered by
// a data record of the topmost layer covering it is data (flags 0);
// everything else is a hole that reads as zeros (flags 3). It returns the
// merged extents as nbdinfo --map prints them.
func allocation(tb testing.TB, size int64, layers ...string) string {
	tb.Helper()
	data := make([]bool, size/512)
	for _, p := range layers {
		f, err := psync.New(core.EngineConfig{}).Open(p, core.OpenOptions{Flag: os.O_RDONLY})
		if err != nil {
			tb.Fatal(err)
		}
		ro, err := lsmt.OpenReadOnly(f)
		if err != nil {
			tb.Fatal(err)
		}
		for _, m := range ro.Mappings() {
			for s := m.Offset; s < m.End() && s < uint64(len(data)); s++ {
				data[s] = !m.Zeroed
			}
		}
		ro.Close()
	}
	var b strings.Builder
	for start := 0; start < len(data); {
		end := start
		for end < len(data) && data[end] == data[start] {
			end++
		}
		fl, desc := 3, "hole,zero"
		if data[start] {
			fl, desc = 0, "data"
		}
		fmt.Fprintf(&b, "%d %d %d %s\n", start*512, (end-start)*512, fl, desc)
		start = end
	}
	return b.String()
}

func normalizeMap(out string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		b.WriteString(strings.Join(strings.Fields(line), " "))
		b.WriteString("\n")
	}
	return b.String()
}

func TestServeVectorStack(t *testing.T) {
	nbdcopy := needTool(t, "nbdcopy")
	nbdinfo := needTool(t, "nbdinfo")
	dir := t.TempDir()
	a, b, c := testvectors.Path(t, "stack/A.commit"), testvectors.Path(t, "stack/B.zstd-bs16.zcommit"), testvectors.Path(t, "stack/C.commit")
	cfg := writeJSON(t, filepath.Join(dir, "stack.json"), map[string]any{
		"lowers":     []any{map[string]any{"file": a}, map[string]any{"file": b}, map[string]any{"file": c}},
		"resultFile": filepath.Join(dir, "result"),
	})
	cfgA := writeJSON(t, filepath.Join(dir, "a.json"), map[string]any{"lowers": []any{map[string]any{"file": a}}})
	sock := filepath.Join(dir, "nbd.sock")
	start(t, "--unix", sock, cfg, cfgA)

	out := filepath.Join(dir, "out.raw")
	runTool(t, nbdcopy, unixURI(sock, "stack"), out)
	got, _ := os.ReadFile(out)
	if s := sha256.Sum256(got); hex.EncodeToString(s[:]) != shaMerged {
		t.Fatalf("nbdcopy of the stack: sha256 %x", s)
	}
	if r, _ := os.ReadFile(filepath.Join(dir, "result")); string(r) != "success" {
		t.Fatalf("result file %q", r)
	}
	if qemuImg, err := exec.LookPath("qemu-img"); err == nil {
		raw := filepath.Join(dir, "expected.raw")
		os.WriteFile(raw, mergedRaw(t), 0o644)
		runTool(t, qemuImg, "compare", "-f", "raw", "-F", "raw", raw, fmt.Sprintf("nbd:unix:%s:exportname=stack", sock))
	}
	want := allocation(t, 64<<20, a, testvectors.Path(t, "stack/B.commit"), c)
	if gotMap := normalizeMap(runTool(t, nbdinfo, "--map", unixURI(sock, "stack"))); gotMap != want {
		t.Errorf("nbdinfo --map:\n%s\nwant (from the layers' indexes):\n%s", gotMap, want)
	}
	list := runTool(t, nbdinfo, "--list", "--json", unixURI(sock, ""))
	if !strings.Contains(list, `"export-name": "stack"`) || !strings.Contains(list, `"export-name": "a"`) || !strings.Contains(list, `"is_read_only": true`) {
		t.Errorf("nbdinfo --list: %s", list)
	}
}

// newUpper creates an empty append-only writable layer.
func newUpper(tb testing.TB, dir string, vsize int64) (data, index string) {
	return newUpperKind(tb, dir, vsize, false)
}

// newUpperKind creates an empty writable layer, sparse or append-only.
func newUpperKind(tb testing.TB, dir string, vsize int64, sparse bool) (data, index string) {
	tb.Helper()
	data, index = filepath.Join(dir, "writable_data"), filepath.Join(dir, "writable_index")
	eng := psync.New(core.EngineConfig{})
	df, err := eng.Open(data, core.OpenOptions{Flag: os.O_RDWR | os.O_CREATE | os.O_EXCL, Perm: 0o644})
	if err != nil {
		tb.Fatal(err)
	}
	xf, err := eng.Open(index, core.OpenOptions{Flag: os.O_RDWR | os.O_CREATE | os.O_EXCL, Perm: 0o644})
	if err != nil {
		tb.Fatal(err)
	}
	w, err := lsmt.Create(df, xf, lsmt.CreateOptions{VirtualSize: vsize, Sparse: sparse})
	if err != nil {
		tb.Fatal(err)
	}
	w.Close()
	return data, index
}

func TestServeWritableThenCommit(t *testing.T) {
	for _, sparse := range []bool{false, true} {
		t.Run(map[bool]string{false: "append-only", true: "sparse"}[sparse], func(t *testing.T) {
			testServeWritableThenCommit(t, sparse)
		})
	}
}

func testServeWritableThenCommit(t *testing.T, sparse bool) {
	qemuIO := needTool(t, "qemu-io")
	dir := t.TempDir()
	a, b := testvectors.Path(t, "stack/A.commit"), testvectors.Path(t, "stack/B.commit")
	vsize := int64(0)
	if sparse {
		vsize = 64 << 20 // a sparse layer's data file is sized at creation
	}
	data, index := newUpperKind(t, dir, vsize, sparse)
	cfg := writeJSON(t, filepath.Join(dir, "config.v1.json"), map[string]any{
		"lowers": []any{map[string]any{"file": a}, map[string]any{"file": b}},
		"upper":  map[string]any{"data": data, "index": index},
	})
	// The model: A+B, then the same operations.
	eng := psync.New(core.EngineConfig{})
	open := func(p string) core.File {
		f, err := eng.Open(p, core.OpenOptions{Flag: os.O_RDONLY})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	ab, err := lsmt.OpenStack([]core.File{open(a), open(b)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	model := make([]byte, ab.Size())
	ab.ReadAt(model, 0)
	ab.Close()
	if s := sha256.Sum256(model); hex.EncodeToString(s[:]) != "c0a515c9ecb4dd491d67f2ada43a6aac30c36a381776c511976b60115eaed013" {
		t.Fatal("A+B model differs from the expected raw")
	}
	fill := func(off, n int, v byte) { copy(model[off:off+n], bytes.Repeat([]byte{v}, n)) }

	sock := filepath.Join(dir, "nbd.sock")
	srv := start(t, "--unix", sock, cfg)
	u := unixURI(sock, "")
	runTool(t, qemuIO, "-f", "raw",
		"-c", "write -P 0xab 0 65536",
		"-c", "write -f -P 0xcd 1048576 8192",
		"-c", "discard 131072 65536",
		"-c", "write -z 4194304 131072",
		"-c", "write -P 0x17 67100672 8192",
		"-c", "flush", u)
	fill(0, 65536, 0xab)
	fill(1048576, 8192, 0xcd)
	fill(131072, 65536, 0)
	fill(4194304, 131072, 0)
	fill(67100672, 8192, 0x17)
	out := runTool(t, qemuIO, "-r", "-f", "raw",
		"-c", "read -P 0xab 0 65536", "-c", "read -P 0 131072 65536", "-c", "read -P 0xcd 1048576 8192",
		"-c", "read -P 0 4194304 131072", "-c", "read -P 0x17 67100672 8192", u)
	if strings.Contains(out, "verification failed") {
		t.Fatalf("qemu-io: %s", out)
	}
	// Several fio connections with verification, in a region of its own.
	if fio, err := exec.LookPath("fio"); err == nil {
		runTool(t, fio, "--name=v", "--ioengine=nbd", "--uri="+u, "--rw=randwrite", "--bs=4k", "--iodepth=16",
			"--numjobs=3", "--size=2m", "--offset=32m", "--offset_increment=4m", "--verify=crc32c", "--verify_fatal=1", "--verify_state_save=0")
		// Read fio's data back into the model after the server stops.
	}
	var gotMap string
	if nbdinfo, err := exec.LookPath("nbdinfo"); err == nil {
		gotMap = normalizeMap(runTool(t, nbdinfo, "--map", u))
	}
	srv.stop(t)

	// Commit the upper with overlaybd-commit and read the committed stack
	// back.
	commitTool := filepath.Join(dir, "overlaybd-commit")
	gocmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	if out, err := exec.Command(gocmd, "build", "-o", commitTool, "../overlaybd-commit").CombinedOutput(); err != nil {
		t.Fatalf("build overlaybd-commit: %v\n%s", err, out)
	}
	commit := filepath.Join(dir, "upper.commit")
	runTool(t, commitTool, "-m", "qemu-io writes", data, index, commit)
	if gotMap != "" {
		if want := allocation(t, 64<<20, a, b, commit); gotMap != want {
			t.Errorf("nbdinfo --map of the writable image:\n%s\nwant (from the layers' indexes):\n%s", gotMap, want)
		}
	}
	// Read the committed stack back with overlaybd-cat.
	catTool := filepath.Join(dir, "overlaybd-cat")
	if out, err := exec.Command(gocmd, "build", "-o", catTool, "../overlaybd-cat").CombinedOutput(); err != nil {
		t.Fatalf("build overlaybd-cat: %v\n%s", err, out)
	}
	catOut := filepath.Join(dir, "cat.raw")
	runTool(t, catTool, "-o", catOut, a, b, commit)
	got, err := os.ReadFile(catOut)
	if err != nil || len(got) != len(model) {
		t.Fatalf("overlaybd-cat output: %d bytes, %v", len(got), err)
	}
	if _, err := exec.LookPath("fio"); err == nil {
		copy(model[32<<20:44<<20], got[32<<20:44<<20]) // fio's own data, verified by fio
	}
	if !bytes.Equal(got, model) {
		for i := range got {
			if got[i] != model[i] {
				t.Fatalf("committed image differs from the model at byte %d", i)
			}
		}
	}
}

func TestTCP(t *testing.T) {
	nbdinfo := needTool(t, "nbdinfo")
	dir := t.TempDir()
	cfg := writeJSON(t, filepath.Join(dir, "img.json"), map[string]any{"lowers": []any{map[string]any{"file": testvectors.Path(t, "stack/A.commit")}}})
	srv := start(t, "--tcp", "127.0.0.1:0", "--service_config_path", writeJSON(t, filepath.Join(dir, "obd.json"), map[string]any{"logPath": ""}), cfg)
	port := srv.addr.(*net.TCPAddr).Port
	if got := strings.TrimSpace(runTool(t, nbdinfo, "--size", "nbd://127.0.0.1:"+strconv.Itoa(port))); got != "67108864" {
		t.Fatalf("size over tcp: %q", got)
	}
	srv.stop(t)
	// IPv6 in brackets, where the machine has an IPv6 loopback.
	if l, err := net.Listen("tcp", "[::1]:0"); err == nil {
		l.Close()
		srv = start(t, "--tcp", "[::1]:0", cfg)
		port = srv.addr.(*net.TCPAddr).Port
		if got := strings.TrimSpace(runTool(t, nbdinfo, "--size", "nbd://[::1]:"+strconv.Itoa(port))); got != "67108864" {
			t.Fatalf("size over tcp6: %q", got)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	a := testvectors.Path(t, "stack/A.commit")
	ro := writeJSON(t, filepath.Join(dir, "ro.json"), map[string]any{"lowers": []any{map[string]any{"file": a}}})
	data, index := newUpper(t, dir, 0)
	rw1 := writeJSON(t, filepath.Join(dir, "rw1.json"), map[string]any{"lowers": []any{map[string]any{"file": a}}, "upper": map[string]any{"data": data, "index": index}})
	rw2 := writeJSON(t, filepath.Join(dir, "rw2.json"), map[string]any{"lowers": []any{map[string]any{"file": a}}, "upper": map[string]any{"data": data, "index": index}})
	sock := filepath.Join(dir, "s.sock")
	badPlugin := writeJSON(t, filepath.Join(dir, "overlaybd.json"), map[string]any{"codecPlugins": []any{map[string]any{"path": "no-such-plugin", "algorithms": []string{"lz4"}}}})
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{ro}, exitUsage, "exactly one of --unix and --tcp"},
		{[]string{"--unix", sock, "--tcp", "x", ro}, exitUsage, "exactly one"},
		{[]string{"--unix", sock}, exitUsage, "no EXPORT"},
		{[]string{"--unix", sock, "x=" + ro, "x=" + ro}, exitUsage, "given twice"},
		{[]string{"--unix", sock, ro, filepath.Join(t.TempDir(), "ro.json")}, exitUsage, "given twice"},
		{[]string{"--unix", sock, rw1, rw2}, exitFailure, "share an upper layer"},
		{[]string{"--tcp", "::1", ro}, exitUsage, "brackets"},
		{[]string{"--tcp", "127.0.0.1:99999", ro}, exitUsage, "bad port"},
		{[]string{"--unix", sock, filepath.Join(dir, "missing.json")}, exitFailure, "missing.json"},
		{[]string{"--unix", sock, "--service-config-path", filepath.Join(dir, "nope.json"), ro}, exitFailure, "service config"},
		{[]string{"--unix", sock, "--service_config_path", badPlugin, ro}, exitFailure, "start codec plugins: codecPlugins[0]: codec plugin " + filepath.Join(dir, "no-such-plugin")},
		{[]string{"--bogus"}, exitUsage, "overlaybd-nbd: unknown flag: --bogus\n"},
		{[]string{"--bogus", "-Q", "--unix", sock, "--nope=1", ro}, exitUsage, "overlaybd-nbd: unknown flags: --bogus -Q --nope=1\n"},
	} {
		var log logtest.Buffer
		code := run(context.Background(), tc.args, &log, nil)
		if code != tc.code || !strings.Contains(log.String(), tc.msg) {
			t.Errorf("%q: exit %d (want %d), output:\n%s", tc.args, code, tc.code, log.String())
		}
	}
	// Read-only serving of both is fine: the upper is not opened.
	srv := start(t, "--unix", sock, "--read-only", rw1, rw2)
	srv.stop(t)
}

func TestTCPAddress(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1":      "127.0.0.1:10809",
		"localhost:1234": "localhost:1234",
		"[::1]":          "[::1]:10809",
		"[::1]:77":       "[::1]:77",
		":5000":          ":5000",
	} {
		if got, err := tcpAddress(in); err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"::1", "[::1", "[::1]x", "[1.2.3.4]", "h:0x10", "h:"} {
		if got, err := tcpAddress(bad); err == nil && bad != "h:" {
			t.Errorf("%q accepted as %q", bad, got)
		}
	}
}

// TestExt4ImageThroughNbdfuse mounts the ext4 sample image (imported as a
// committed layer, with a writable upper) through nbdfuse + loop with the
// kernel's ext4, reads and writes files, checks the filesystem after
// unmounting, and reads the written file after reopening the image.
func TestExt4ImageThroughNbdfuse(t *testing.T) {
	nbdfuse := needTool(t, "nbdfuse")
	mkfs := needTool(t, "mkfs.ext4")
	nbdcopy := needTool(t, "nbdcopy")
	if os.Getuid() != 0 {
		t.Skip("mounting needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	dir := t.TempDir()
	content := filepath.Join(dir, "content")
	os.MkdirAll(content, 0o755)
	os.WriteFile(filepath.Join(content, "hello.txt"), []byte("hello from the base layer\n"), 0o644)
	raw := filepath.Join(dir, "base.ext4")
	runTool(t, mkfs, "-q", "-F", "-d", content, raw, "64M")
	src, _ := os.Open(raw)
	lf, _ := os.Create(filepath.Join(dir, "base.commit"))
	if _, err := image.ImportRaw(context.Background(), src, lf, image.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	src.Close()
	lf.Close()
	data, index := newUpper(t, dir, 0)
	cfg := writeJSON(t, filepath.Join(dir, "config.v1.json"), map[string]any{
		"lowers": []any{map[string]any{"file": filepath.Join(dir, "base.commit")}},
		"upper":  map[string]any{"data": data, "index": index},
	})
	sock := filepath.Join(dir, "nbd.sock")
	srv := start(t, "--unix", sock, cfg)

	mnt, fsdir := filepath.Join(dir, "fuse"), filepath.Join(dir, "fs")
	os.MkdirAll(mnt, 0o755)
	os.MkdirAll(fsdir, 0o755)
	fuse := exec.Command(nbdfuse, mnt, unixURI(sock, ""))
	if err := fuse.Start(); err != nil {
		t.Fatal(err)
	}
	fuseDone := make(chan struct{})
	go func() { fuse.Wait(); close(fuseDone) }()
	var loop string
	mounted := false
	defer func() {
		if mounted {
			exec.Command("umount", fsdir).Run()
		}
		if loop != "" {
			exec.Command("losetup", "-d", loop).Run()
		}
		exec.Command("fusermount3", "-u", mnt).Run()
		select {
		case <-fuseDone:
		case <-time.After(10 * time.Second):
			fuse.Process.Kill()
			<-fuseDone
		}
	}()
	dev := filepath.Join(mnt, "nbd")
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if st, err := os.Stat(dev); err == nil && st.Size() == 64<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("nbdfuse did not expose the device")
		}
	}
	loop = strings.TrimSpace(runTool(t, "losetup", "-f", "--show", dev))
	runTool(t, "mount", "-t", "ext4", loop, fsdir)
	mounted = true
	if b, err := os.ReadFile(filepath.Join(fsdir, "hello.txt")); err != nil || string(b) != "hello from the base layer\n" {
		t.Fatalf("read through ext4: %q %v", b, err)
	}
	written := bytes.Repeat([]byte("written through nbd\n"), 20000)
	if err := os.WriteFile(filepath.Join(fsdir, "new.txt"), written, 0o644); err != nil {
		t.Fatal(err)
	}
	runTool(t, "umount", fsdir)
	mounted = false
	runTool(t, "losetup", "-d", loop)
	loop = ""
	exec.Command("fusermount3", "-u", mnt).Run()
	<-fuseDone
	srv.stop(t)

	// Reopen the image and check it.
	srv = start(t, "--unix", sock, cfg)
	out := filepath.Join(dir, "after.raw")
	runTool(t, nbdcopy, unixURI(sock, ""), out)
	srv.stop(t)
	runTool(t, "e2fsck", "-fn", out)
	if got := runTool(t, "debugfs", "-R", "cat /new.txt", out); !strings.Contains(got, string(written[:4000])) {
		t.Fatal("the written file is not in the reopened image")
	}
}

// TestIOEngines serves the vector stack with every ioEngine of
// overlaybd.json and copies it out.
func TestIOEngines(t *testing.T) {
	nbdcopy := needTool(t, "nbdcopy")
	dir := t.TempDir()
	lowers := []any{}
	for _, l := range []string{"A.commit", "B.zstd-bs16.zcommit", "C.commit"} {
		// Copies on the test's file system, where O_DIRECT is likely to work.
		b, _ := os.ReadFile(testvectors.Path(t, "stack/"+l))
		p := filepath.Join(dir, l)
		os.WriteFile(p, b, 0o644)
		lowers = append(lowers, map[string]any{"file": p})
	}
	cfg := writeJSON(t, filepath.Join(dir, "stack.json"), map[string]any{"lowers": lowers})
	for _, engine := range []any{0, 1, 2, 3, "io_uring"} {
		svc := writeJSON(t, filepath.Join(dir, "obd.json"), map[string]any{"ioEngine": engine, "logPath": ""})
		sock := filepath.Join(dir, "nbd.sock")
		srv := start(t, "--unix", sock, "--service_config_path", svc, cfg)
		out := filepath.Join(dir, "out.raw")
		os.Remove(out)
		runTool(t, nbdcopy, unixURI(sock, ""), out)
		srv.stop(t)
		got, _ := os.ReadFile(out)
		if s := sha256.Sum256(got); hex.EncodeToString(s[:]) != shaMerged {
			t.Errorf("ioEngine %v: sha256 %x", engine, s)
		}
	}
	svc := writeJSON(t, filepath.Join(dir, "bad.json"), map[string]any{"ioEngine": 7})
	var log logtest.Buffer
	if code := run(context.Background(), []string{"--unix", filepath.Join(dir, "x.sock"), "--service_config_path", svc, cfg}, &log, nil); code != exitFailure {
		t.Errorf("ioEngine 7: exit %d\n%s", code, log.String())
	}
}

// TestSignals runs the built binary: SIGTERM and SIGINT stop it with exit
// status 0 after a client wrote through it, and the write is in the upper.
func TestSignals(t *testing.T) {
	nbdcopy := needTool(t, "nbdcopy")
	dir := t.TempDir()
	bin := filepath.Join(dir, "overlaybd-nbd")
	if out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	data, index := newUpper(t, dir, 0)
	cfg := writeJSON(t, filepath.Join(dir, "c.json"), map[string]any{
		"lowers": []any{map[string]any{"file": testvectors.Path(t, "stack/A.commit")}},
		"upper":  map[string]any{"data": data, "index": index},
	})
	src := filepath.Join(dir, "src.raw")
	pattern := bytes.Repeat([]byte{0x42}, 64<<20)
	os.WriteFile(src, pattern, 0o644)
	for _, sig := range []os.Signal{syscall.SIGTERM, os.Interrupt} {
		sock := filepath.Join(dir, "s.sock")
		cmd := exec.Command(bin, "--unix", sock, cfg)
		var log logtest.Buffer
		cmd.Stderr = &log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 100; i++ {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		runTool(t, nbdcopy, src, unixURI(sock, ""))
		cmd.Process.Signal(sig)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%v: %v\n%s", sig, err, log.String())
		}
		if _, err := os.Stat(sock); err == nil {
			t.Errorf("%v: socket file left behind", sig)
		}
	}
	eng := psync.New(core.EngineConfig{})
	df, _ := eng.Open(data, core.OpenOptions{Flag: os.O_RDWR})
	xf, _ := eng.Open(index, core.OpenOptions{Flag: os.O_RDWR})
	w, err := lsmt.OpenWritable(df, xf)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	got := make([]byte, 64<<20)
	w.ReadAt(got, 0)
	if !bytes.Equal(got, pattern) {
		t.Fatal("the upper does not hold what was written before the signal")
	}
}

// TestRemoteImage serves the vector stack from an in-process registry
// (lowers with digest, size and an empty dir, no local copies) through the
// file cache, and copies it out with nbdcopy.
func TestRemoteImage(t *testing.T) {
	nbdcopy := needTool(t, "nbdcopy")
	reg := registrytest.New(t, registrytest.Options{})
	dir := t.TempDir()
	var lowers []any
	for _, l := range []string{"A.commit", "B.zstd-bs16.zcommit", "C.commit"} {
		data, err := os.ReadFile(testvectors.Path(t, "stack/"+l))
		if err != nil {
			t.Fatal(err)
		}
		dgst := reg.PushBlob(t, "stack/app", data)
		lowers = append(lowers, map[string]any{"digest": dgst, "size": len(data), "dir": t.TempDir()})
	}
	cfg := writeJSON(t, filepath.Join(dir, "remote.json"), map[string]any{
		"repoBlobUrl": reg.RepoBlobURL("stack/app"),
		"lowers":      lowers,
		"resultFile":  filepath.Join(dir, "result"),
	})
	svc := writeJSON(t, filepath.Join(dir, "obd.json"), map[string]any{
		"logPath": "", "enableAudit": false,
		"cacheConfig":      map[string]any{"cacheType": "file", "cacheDir": filepath.Join(dir, "cache"), "cacheSizeGB": 1},
		"credentialConfig": map[string]any{"mode": "file", "path": filepath.Join(dir, "cred.json")},
	})
	os.WriteFile(filepath.Join(dir, "cred.json"), []byte(`{"auths":{}}`), 0o600)
	sock := filepath.Join(dir, "nbd.sock")
	srv := start(t, "--unix", sock, "--service_config_path", svc, cfg)
	out := filepath.Join(dir, "out.raw")
	runTool(t, nbdcopy, unixURI(sock, ""), out)
	srv.stop(t)
	got, _ := os.ReadFile(out)
	if s := sha256.Sum256(got); hex.EncodeToString(s[:]) != shaMerged {
		t.Fatalf("remote image: sha256 %x", s)
	}
	if r, _ := os.ReadFile(filepath.Join(dir, "result")); string(r) != "success" {
		t.Fatalf("result %q", r)
	}
	// A layer the registry does not have fails the export with upstream's
	// reason.
	lowers = append(lowers, map[string]any{"digest": "sha256:" + strings.Repeat("0", 64), "size": 1, "dir": t.TempDir()})
	bad := writeJSON(t, filepath.Join(dir, "bad.json"), map[string]any{
		"repoBlobUrl": reg.RepoBlobURL("stack/app"), "lowers": lowers, "resultFile": filepath.Join(dir, "bad-result"),
	})
	var log logtest.Buffer
	if code := run(context.Background(), []string{"--unix", sock, "--service_config_path", svc, bad}, &log, nil); code != exitFailure {
		t.Fatalf("missing blob: exit %d\n%s", code, log.String())
	}
	r, _ := os.ReadFile(filepath.Join(dir, "bad-result"))
	if want := "failed:failed to open remote file as tar file " + reg.RepoBlobURL("stack/app") + "/sha256:" + strings.Repeat("0", 64) + ": No such file or directory"; string(r) != want {
		t.Errorf("missing blob: result %q, want %q", r, want)
	}
}
