package plugins

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/codecs/lz4"
	"github.com/overlaybd-go/overlaybd/codecs/zstd"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/plugins/internal/plugintest"
)

// faultBin is the test plugin binary (plugins/internal/faultplugin), built
// once per test run.
var faultBin string

func TestMain(m *testing.M) {
	if bin := os.Getenv("PLUGINS_TEST_HOST_PLUGIN"); bin != "" {
		orphanHost(bin)
		return
	}
	bin, cleanup, err := plugintest.Build("github.com/overlaybd-go/overlaybd/plugins/internal/faultplugin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	faultBin = bin
	// Tests that care about logs pass their own logger.
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// faultPlugin starts the test plugin with its control file set to mode.
func faultPlugin(t *testing.T, mode string, opts ...Option) (*Plugin, string, *syncBuffer) {
	t.Helper()
	control := filepath.Join(t.TempDir(), "control")
	setMode(t, control, mode)
	logs := &syncBuffer{}
	opts = append([]Option{WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
		WithCallTimeout(5 * time.Second)}, opts...)
	p, err := Start(context.Background(), Config{Path: faultBin, Algorithms: []string{"lz4", "zstd"}, Args: []string{"-control", control}}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p, control, logs
}

func setMode(t *testing.T, control, mode string) {
	t.Helper()
	if err := os.WriteFile(control, []byte(mode), 0o600); err != nil {
		t.Fatal(err)
	}
}

func inProcess(t testing.TB, name string) core.Codec {
	if name == "lz4" {
		return lz4.Go()
	}
	z, err := zstd.Go()
	if err != nil {
		t.Fatal(err)
	}
	return z
}

func inputs() [][]byte { return plugintest.Inputs() }

func TestCodecChecksThroughPlugin(t *testing.T) {
	p, _, _ := faultPlugin(t, "ok")
	for _, name := range []string{"lz4", "zstd"} {
		t.Run(name, func(t *testing.T) {
			c, err := p.Codec(name)
			if err != nil {
				t.Fatal(err)
			}
			before, err := p.Stats(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			plugintest.CheckCodec(t, c, inProcess(t, name))
			after, err := p.Stats(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if d := after.Codecs[name].Decompressed - before.Codecs[name].Decompressed; d < uint64(2*len(inputs())) {
				t.Fatalf("plugin decoded %d blocks", d)
			}
		})
	}
}

func TestBatches(t *testing.T) {
	// Small lanes force a batch to be split across several doorbells.
	p, _, _ := faultPlugin(t, "ok", WithLanes(2, 256<<10))
	c, err := p.Codec("zstd")
	if err != nil {
		t.Fatal(err)
	}
	ref := inProcess(t, "zstd")
	ins := inputs()
	blocks := make([]core.CodecBlock, len(ins))
	for i, in := range ins {
		comp := make([]byte, ref.CompressBound(len(in)))
		n, err := ref.Compress(comp, in)
		if err != nil {
			t.Fatal(err)
		}
		blocks[i] = core.CodecBlock{Src: comp[:n], Dst: make([]byte, len(in))}
	}
	blocks[3].Src = []byte("garbage") // one bad block fails alone
	before, err := p.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.(core.BatchCodec).DecompressBatch(blocks); err != nil {
		t.Fatal(err)
	}
	for i, b := range blocks {
		if i == 3 {
			if !errors.Is(b.Err, core.ErrCorrupt) {
				t.Fatalf("bad block: err %v", b.Err)
			}
			continue
		}
		if b.Err != nil || b.N != len(ins[i]) || !bytes.Equal(b.Dst, ins[i]) {
			t.Fatalf("block %d: %d bytes, err %v", i, b.N, b.Err)
		}
	}
	after, err := p.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := after.Codecs["zstd"].Decompressed - before.Codecs["zstd"].Decompressed; got != uint64(len(ins)-1) {
		t.Fatalf("plugin counted %d decoded blocks, want %d", got, len(ins)-1)
	}
	if after.Batches-before.Batches < 2 {
		t.Fatalf("a batch larger than a lane took %d doorbells", after.Batches-before.Batches)
	}
}

func TestConcurrent(t *testing.T) {
	p, _, _ := faultPlugin(t, "ok")
	c, err := p.Codec("lz4")
	if err != nil {
		t.Fatal(err)
	}
	ins := inputs()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 20; k++ {
				in := ins[(g*7+k)%len(ins)]
				comp := make([]byte, c.CompressBound(len(in)))
				n, err := c.Compress(comp, in)
				if err != nil {
					errs <- err
					return
				}
				out := make([]byte, len(in))
				if m, err := c.Decompress(out, comp[:n]); err != nil || !bytes.Equal(out[:m], in) {
					errs <- fmt.Errorf("round trip of %d bytes: %d, %v", len(in), m, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestLoadRegistersAndRestores(t *testing.T) {
	before, _ := core.Codecs.Lookup("zstd")
	dir := filepath.Dir(faultBin)
	h, err := Load(context.Background(), []Config{{Path: filepath.Base(faultBin), Algorithms: []string{"zstd"}}}, dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := core.Codecs.Lookup("zstd")
	if err != nil {
		t.Fatal(err)
	}
	c, err := f()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*codec); !ok {
		t.Fatalf("zstd resolves to %T, want the plugin codec", c)
	}
	if n, _ := core.Codecs.NumberOf("zstd"); n != 2 {
		t.Fatalf("zstd number %d", n)
	}
	if name, _, err := core.Codecs.LookupNumber(2); err != nil || name != "zstd" {
		t.Fatalf("algorithm 2: %q %v", name, err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	f, err = core.Codecs.Lookup("zstd")
	if err != nil {
		t.Fatal(err)
	}
	c, err = f()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*codec); ok {
		t.Fatal("plugin codec still registered after Close")
	}
	_ = before
}

func TestLogsForwarded(t *testing.T) {
	_, _, logs := faultPlugin(t, "ok")
	// The plugin's own start-up record travels through go-plugin's log
	// forwarding into the host's slog logger.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "codec plugin serving") {
		if time.Now().After(deadline) {
			t.Fatalf("plugin log line not forwarded; host log:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "codec plugin started") {
		t.Fatalf("host log:\n%s", logs.String())
	}
}

// compressed returns a zstd block of n patterned bytes and the bytes.
func compressed(t *testing.T, n int) ([]byte, []byte) {
	t.Helper()
	in := make([]byte, n)
	for i := range in {
		in[i] = byte(i * 7 / 5)
	}
	ref := inProcess(t, "zstd")
	comp := make([]byte, ref.CompressBound(n))
	m, err := ref.Compress(comp, in)
	if err != nil {
		t.Fatal(err)
	}
	return comp[:m], in
}

func TestFaultReplies(t *testing.T) {
	cases := []struct {
		mode     string
		checksum bool // the error also wraps core.ErrChecksum
	}{
		{"short-msg", false},
		{"long-msg", false},
		{"long", false},
		{"short", true},
		{"corrupt", true},
		{"badsum", true},
		{"wrongseq", false},
	}
	comp, want := compressed(t, 65536)
	for _, tc := range cases {
		t.Run(tc.mode, func(t *testing.T) {
			p, control, _ := faultPlugin(t, tc.mode)
			c, err := p.Codec("zstd")
			if err != nil {
				t.Fatal(err)
			}
			pid := p.Pid()
			dst := make([]byte, len(want))
			n, err := c.Decompress(dst, comp)
			if err == nil || n != 0 {
				t.Fatalf("misbehaving plugin: n %d, err %v; want an error and no data", n, err)
			}
			if !errors.Is(err, ErrPluginFailed) || !errors.Is(err, core.ErrCorrupt) {
				t.Fatalf("err %v does not wrap ErrPluginFailed and core.ErrCorrupt", err)
			}
			if tc.checksum != errors.Is(err, core.ErrChecksum) {
				t.Fatalf("err %v: wraps ErrChecksum %v, want %v", err, !tc.checksum, tc.checksum)
			}
			if bytes.Equal(dst, want) {
				t.Fatal("destination holds the data although the reply was refused")
			}
			// The host retired the process and serves again once the
			// plugin behaves.
			setMode(t, control, "ok")
			clear(dst)
			if n, err := c.Decompress(dst, comp); err != nil || n != len(want) || !bytes.Equal(dst, want) {
				t.Fatalf("after the fault: %d, %v", n, err)
			}
			if p.Restarts() != 1 || p.Pid() == pid {
				t.Fatalf("restarts %d, pid %d (was %d)", p.Restarts(), p.Pid(), pid)
			}
		})
	}
}

func TestCrashMidBatchRetried(t *testing.T) {
	p, _, _ := faultPlugin(t, "crash-once")
	c, err := p.Codec("zstd")
	if err != nil {
		t.Fatal(err)
	}
	comp, want := compressed(t, 4096)
	blocks := make([]core.CodecBlock, 64)
	for i := range blocks {
		blocks[i] = core.CodecBlock{Src: comp, Dst: make([]byte, 4096)}
	}
	pid := p.Pid()
	if err := c.(core.BatchCodec).DecompressBatch(blocks); err != nil {
		t.Fatalf("batch across a crash: %v", err)
	}
	for i, b := range blocks {
		if b.Err != nil || !bytes.Equal(b.Dst[:b.N], want) {
			t.Fatalf("block %d: %d bytes, %v", i, b.N, b.Err)
		}
	}
	if p.Restarts() != 1 || p.Pid() == pid {
		t.Fatalf("restarts %d, pid %d (was %d)", p.Restarts(), p.Pid(), pid)
	}
}

func TestCrashEveryTimeFails(t *testing.T) {
	p, control, _ := faultPlugin(t, "crash")
	c, err := p.Codec("zstd")
	if err != nil {
		t.Fatal(err)
	}
	comp, want := compressed(t, 4096)
	dst := make([]byte, 4096)
	if n, err := c.Decompress(dst, comp); err == nil || n != 0 || !errors.Is(err, ErrPluginFailed) || !errors.Is(err, core.ErrCorrupt) {
		t.Fatalf("plugin crashing on every request: n %d, err %v", n, err)
	}
	if p.Restarts() != 2 {
		t.Fatalf("restarts %d, want 2 (the request and its one retry)", p.Restarts())
	}
	setMode(t, control, "ok")
	if n, err := c.Decompress(dst, comp); err != nil || !bytes.Equal(dst[:n], want) {
		t.Fatalf("after the crashes: %d, %v", n, err)
	}
}

func TestKillInFlight(t *testing.T) {
	p, control, _ := faultPlugin(t, "hang")
	c, err := p.Codec("zstd")
	if err != nil {
		t.Fatal(err)
	}
	comp, want := compressed(t, 65536)
	pid := p.Pid()
	done := make(chan error, 1)
	dst := make([]byte, len(want))
	go func() {
		n, err := c.Decompress(dst, comp)
		if err == nil && (n != len(want) || !bytes.Equal(dst, want)) {
			err = fmt.Errorf("wrong data: %d bytes", n)
		}
		done <- err
	}()
	time.Sleep(300 * time.Millisecond) // the request is now stuck in the plugin
	setMode(t, control, "ok")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("request in flight when the plugin was killed: %v", err)
	}
	if p.Pid() == pid {
		t.Fatal("plugin not restarted")
	}
}

func TestHangTimesOut(t *testing.T) {
	p, control, _ := faultPlugin(t, "hang", WithCallTimeout(300*time.Millisecond))
	c, err := p.Codec("lz4")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = c.Decompress(make([]byte, 4096), []byte{0x10, 'a'})
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, core.ErrCorrupt) {
		t.Fatalf("hung plugin: err %v, want ErrTimeout wrapping ErrCorrupt", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("timeout took %v", d)
	}
	setMode(t, control, "ok")
	if n, err := c.Decompress(make([]byte, 4096), []byte{0x10, 'a'}); err != nil || n != 1 {
		t.Fatalf("after the hang: %d, %v", n, err)
	}
}

func TestHealthRestartsIdleCrash(t *testing.T) {
	p, _, _ := faultPlugin(t, "ok", WithHealthInterval(100*time.Millisecond))
	pid := p.Pid()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.Pid() == 0 || p.Pid() == pid {
		if time.Now().After(deadline) {
			t.Fatalf("plugin killed while idle was not restarted (pid %d)", p.Pid())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if p.Restarts() != 1 {
		t.Fatalf("restarts %d", p.Restarts())
	}
}

func execOutput(bin string, args ...string) (string, error) {
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}

func TestStoppedProcessReplaced(t *testing.T) {
	p, _, _ := faultPlugin(t, "ok", WithHealthInterval(100*time.Millisecond), WithCallTimeout(300*time.Millisecond))
	pid := p.Pid()
	// A stopped process answers neither the data plane nor gRPC; the
	// health check notices, kills it and starts another.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.Pid() == 0 || p.Pid() == pid {
		if time.Now().After(deadline) {
			t.Fatal("stopped plugin not replaced")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The old process is killed, not left stopped.
	for {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			break
		}
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) == 0 || f[0] == "Z" || f[0] == "X" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replaced plugin %d is still in state %s", pid, f[0])
		}
		time.Sleep(50 * time.Millisecond)
	}
	c, err := p.Codec("lz4")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.Decompress(make([]byte, 16), []byte{0x10, 'a'}); err != nil || n != 1 {
		t.Fatalf("after the replacement: %d, %v", n, err)
	}
}

// orphanHost is the child process of TestPluginExitsWithHost: a host that
// starts a plugin, prints its pid and waits to be killed.
func orphanHost(bin string) {
	p, err := Start(context.Background(), Config{Path: bin, Algorithms: []string{"lz4"}})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println(p.Pid())
	select {}
}

// TestPluginExitsWithHost kills a host with SIGKILL (no Close) and checks
// that its plugin does not outlive it.
func TestPluginExitsWithHost(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PLUGINS_TEST_HOST_PLUGIN="+faultBin)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Fscan(out, &pid); err != nil || pid <= 0 {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("host child: pid %d, %v", pid, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return // gone
		}
		if f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(f) > 0 && (f[0] == "Z" || f[0] == "X") {
			return // exited, waiting for its new parent to reap it
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("plugin %d outlived its host by 10 s", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestBlockLargerThanLane(t *testing.T) {
	p, _, _ := faultPlugin(t, "ok", WithLanes(1, 8192))
	c, err := p.Codec("lz4")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Decompress(make([]byte, 65536), []byte{0x10, 'x'}); !errors.Is(err, core.ErrUnsupported) {
		t.Fatalf("block larger than the lane: %v", err)
	}
	if n, err := c.Decompress(make([]byte, 4096), []byte{0x10, 'x'}); err != nil || n != 1 {
		t.Fatalf("small block after the refusal: %d, %v", n, err)
	}
	if p.Restarts() != 0 {
		t.Fatal("a refused request retired the plugin")
	}
}

// The counters survive a restart: what the retired process answered is
// counted by the host and added to the new process's own counters.
func TestStatsCarryOverRestarts(t *testing.T) {
	p, _, _ := faultPlugin(t, "ok", WithHealthInterval(100*time.Millisecond))
	c, err := p.Codec("lz4")
	if err != nil {
		t.Fatal(err)
	}
	in := bytes.Repeat([]byte("overlaybd "), 400)
	comp := make([]byte, c.CompressBound(len(in)))
	var n int
	for range 5 {
		if n, err = c.Compress(comp, in); err != nil {
			t.Fatal(err)
		}
	}
	pid := p.Pid()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); p.Restarts() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the killed plugin was not retired")
		}
	}
	out := make([]byte, len(in))
	for range 3 {
		if m, err := c.Decompress(out, comp[:n]); err != nil || !bytes.Equal(out[:m], in) {
			t.Fatalf("decompress after the restart: %d, %v", m, err)
		}
	}
	st, err := p.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := st.Codecs["lz4"]
	want := CodecStats{Compressed: 5, CompressedBytes: 5 * uint64(len(in)), Decompressed: 3, DecompressedBytes: 3 * uint64(len(in))}
	if got != want || st.Batches < 8 {
		t.Fatalf("stats after a restart: %+v (batches %d), want %+v and at least 8 batches", got, st.Batches, want)
	}
}
