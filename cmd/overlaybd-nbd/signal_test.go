package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/conformance/nbdclient"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/core/prefetch"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/internal/logtest"
	"github.com/overlaybd-go/overlaybd/internal/registrytest"
)

// buildServer builds overlaybd-nbd into dir and returns its path.
func buildServer(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "overlaybd-nbd")
	if out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// layerSize is how much data the lower made by makeLayer holds, from
// offset 0: more than the registry cache fetches at once, so that a read
// far into it goes to the registry.
const layerSize = 8 << 20

// makeLayer returns a committed layer whose first layerSize bytes hold
// data (not zeros).
func makeLayer(t *testing.T) []byte {
	t.Helper()
	data, index := newUpper(t, t.TempDir(), 64<<20)
	eng := psync.New(core.EngineConfig{})
	df, err := eng.Open(data, core.OpenOptions{Flag: os.O_RDWR})
	if err != nil {
		t.Fatal(err)
	}
	xf, err := eng.Open(index, core.OpenOptions{Flag: os.O_RDWR})
	if err != nil {
		t.Fatal(err)
	}
	w, err := lsmt.OpenWritable(df, xf)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	b := make([]byte, layerSize)
	for i := range b {
		b[i] = byte(i*7 + i>>12)
	}
	if _, err := w.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := w.Commit(&out, lsmt.CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// fileOffset returns where the data of device offset 0 lies in the layer
// blob, as a trace records it.
func fileOffset(t *testing.T, blob []byte) int64 {
	t.Helper()
	path := filepath.Join(t.TempDir(), "layer")
	clitestWrite(t, path, string(blob))
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ro, err := lsmt.OpenReadOnly(psync.NewFile(f, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	for _, m := range ro.Mappings() {
		if m.Offset == 0 && !m.Zeroed {
			return int64(m.MOffset) * 512
		}
	}
	t.Fatal("the layer maps nothing at offset 0")
	return 0
}

// recording is overlaybd-nbd serving a layer (makeLayer) from a registry
// (through a fault proxy), under a writable upper, and recording a trace.
type recording struct {
	cmd          *exec.Cmd
	log          *logtest.Buffer
	proxy        *registrytest.FaultProxy
	client       *nbdclient.Client
	trace        string
	data, index  string
	waited       chan error
	dataOffset   int64 // where the read at device offset 0 lies in the layer
	writeOffset  int64
	writePattern []byte
}

func startRecording(t *testing.T, bin string) *recording {
	t.Helper()
	dir := t.TempDir()
	reg := registrytest.New(t, registrytest.Options{})
	blob := makeLayer(t)
	r0 := fileOffset(t, blob)
	dgst := reg.PushBlob(t, "stack/app", blob)
	proxy := registrytest.NewFaultProxy(t, reg.URL)
	r := &recording{log: &logtest.Buffer{}, proxy: proxy, trace: filepath.Join(dir, "trace"), waited: make(chan error, 1), dataOffset: r0}
	if err := os.WriteFile(r.trace, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r.data, r.index = newUpper(t, dir, 0)
	cfg := writeJSON(t, filepath.Join(dir, "c.json"), map[string]any{
		"repoBlobUrl":     proxy.URL + "/v2/stack/app/blobs",
		"lowers":          []any{map[string]any{"digest": dgst, "size": len(blob), "dir": t.TempDir()}},
		"upper":           map[string]any{"data": r.data, "index": r.index},
		"recordTracePath": r.trace,
		"resultFile":      filepath.Join(dir, "result"),
	})
	svc := writeJSON(t, filepath.Join(dir, "obd.json"), map[string]any{
		"logPath": "", "enableAudit": false,
		"cacheConfig":      map[string]any{"cacheType": "file", "cacheDir": filepath.Join(dir, "cache"), "cacheSizeGB": 1},
		"credentialConfig": map[string]any{"mode": "file", "path": filepath.Join(dir, "cred.json")},
	})
	clitestWrite(t, filepath.Join(dir, "cred.json"), `{"auths":{}}`)
	sock := filepath.Join(dir, "s.sock")
	r.cmd = exec.Command(bin, "--unix", sock, "--service_config_path", svc, cfg)
	r.cmd.Stderr = r.log
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.waited <- r.cmd.Wait() }()
	t.Cleanup(func() {
		r.cmd.Process.Kill()
		<-r.waited
	})
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(r.log.String(), "serving") {
		if time.Now().After(deadline) {
			t.Fatalf("overlaybd-nbd did not start:\n%s", r.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := nbdclient.Dial(ctx, "unix", sock, "")
	if err != nil {
		t.Fatal(err)
	}
	r.client = client
	t.Cleanup(func() { client.Close() })
	// A read of the lower (recorded) and a write to the upper.
	b := make([]byte, 4096)
	if _, err := r.client.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	r.writeOffset, r.writePattern = 8<<20, bytes.Repeat([]byte{0x5a}, 64<<10)
	if _, err := r.client.WriteAt(r.writePattern, r.writeOffset); err != nil {
		t.Fatal(err)
	}
	return r
}

func clitestWrite(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// signal sends sig and, for the first, waits until the server says it is
// stopping.
func (r *recording) signal(t *testing.T, sig os.Signal, waitFor string) {
	t.Helper()
	if err := r.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for waitFor != "" && !strings.Contains(r.log.String(), waitFor) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q after %v:\n%s", waitFor, sig, r.log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// exit waits for the process and returns its exit status; death by a
// signal fails the test.
func (r *recording) exit(t *testing.T, limit time.Duration) int {
	t.Helper()
	var err error
	select {
	case err = <-r.waited:
		r.waited <- err
	case <-time.After(limit):
		t.Fatalf("overlaybd-nbd did not exit within %v:\n%s", limit, r.log)
	}
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatal(err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Fatalf("overlaybd-nbd was killed by %v:\n%s", ws.Signal(), r.log)
	}
	return ee.ExitCode()
}

// check verifies the trace (a valid trace file with the read of the lower,
// P.ok, no P.lock) and the upper (it holds the write; the flush itself is
// an fsync, which a test cannot observe).
func (r *recording) check(t *testing.T) {
	t.Helper()
	recs, err := prefetch.LoadTrace(r.trace)
	if err != nil {
		t.Fatalf("trace: %v\n%s", err, r.log)
	}
	found := false
	for _, rec := range recs {
		found = found || rec.Op == 'R' && rec.Layer == 0 && rec.Offset <= r.dataOffset && r.dataOffset < rec.Offset+int64(rec.Count)
	}
	if len(recs) == 0 || !found {
		t.Errorf("the trace's %d records miss the read at %d: %+v", len(recs), r.dataOffset, recs)
	}
	if _, err := os.Stat(r.trace + ".ok"); err != nil {
		t.Errorf("no %s.ok: %v", r.trace, err)
	}
	if _, err := os.Stat(r.trace + ".lock"); err == nil {
		t.Errorf("%s.lock left behind", r.trace)
	}
	eng := psync.New(core.EngineConfig{})
	df, err := eng.Open(r.data, core.OpenOptions{Flag: os.O_RDWR})
	if err != nil {
		t.Fatal(err)
	}
	xf, err := eng.Open(r.index, core.OpenOptions{Flag: os.O_RDWR})
	if err != nil {
		t.Fatal(err)
	}
	w, err := lsmt.OpenWritable(df, xf)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	got := make([]byte, len(r.writePattern))
	if _, err := w.ReadAt(got, r.writeOffset); err != nil || !bytes.Equal(got, r.writePattern) {
		t.Errorf("the upper does not hold the write made before the signals (%v)", err)
	}
}

// TestSecondSignalFinishesTrace: a second signal while a request is stuck
// on the registry (the graceful stop waits for it) does not kill
// overlaybd-nbd: the connections are closed, the stuck request gets 5 s,
// and then the trace is written whole (checksummed, fsynced, P.ok) and the
// upper flushed beside it; the exit status is 1 because the images could
// not be closed.
func TestSecondSignalFinishesTrace(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and waits for the stop's bound")
	}
	bin := buildServer(t, t.TempDir())
	r := startRecording(t, bin)
	r.stallRead(t)
	start := time.Now()
	r.signal(t, syscall.SIGTERM, "signal received")
	r.signal(t, syscall.SIGINT, "")
	if code := r.exit(t, 40*time.Second); code != exitFailure {
		t.Errorf("exit %d, want %d:\n%s", code, exitFailure, r.log)
	}
	if d := time.Since(start); d > 25*time.Second {
		t.Errorf("the stop took %v", d)
	}
	if log := r.log.String(); !strings.Contains(log, "second signal") || !strings.Contains(log, "requests still running") {
		t.Errorf("the log does not tell the second signal and the request left running:\n%s", log)
	}
	r.check(t)
}

// stallRead makes every registry request stall for longer than the test
// and starts a read that goes to the registry; it returns once the proxy
// holds that request.
func (r *recording) stallRead(t *testing.T) {
	t.Helper()
	r.proxy.SetDecide(func(int64, *http.Request) registrytest.Fault {
		return registrytest.Fault{Kind: registrytest.Slow, Delay: 5 * time.Minute}
	})
	go func() {
		b := make([]byte, 64<<10)
		r.client.ReadAt(b, int64(layerSize-len(b)))
	}()
	deadline := time.Now().Add(10 * time.Second)
	for r.proxy.Injected.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no registry request stalled:\n%s", r.log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSecondSignalQuickStop: two signals in a row with nothing stuck stop
// overlaybd-nbd cleanly (exit 0), with the trace and the upper whole.
func TestSecondSignalQuickStop(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildServer(t, t.TempDir())
	r := startRecording(t, bin)
	r.signal(t, syscall.SIGTERM, "")
	r.signal(t, syscall.SIGINT, "")
	if code := r.exit(t, 40*time.Second); code != exitOK {
		t.Errorf("exit %d:\n%s", code, r.log)
	}
	r.check(t)
}
