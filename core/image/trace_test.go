package image

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/caches/file"
	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/core/prefetch"
	"github.com/overlaybd-go/overlaybd/core/remote"
	"github.com/overlaybd-go/overlaybd/internal/logtest"
	"github.com/overlaybd-go/overlaybd/internal/registrytest"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

var stackVectors = []string{"stack/A.commit", "stack/B.zstd-bs16.zcommit", "stack/C.commit"}

// localStack is the three-layer stack vector as local lowers.
func localStack(t *testing.T) []config.Layer {
	var ls []config.Layer
	for _, v := range stackVectors {
		ls = append(ls, config.Layer{File: testvectors.Path(t, v)})
	}
	return ls
}

// remoteStack is the stack vector pushed to a registry.
type remoteStack struct {
	reg     *registrytest.Registry
	clients []*remote.Client
	digests []string
	sizes   []int
}

func newRemoteStack(t *testing.T) *remoteStack {
	rs := &remoteStack{reg: registrytest.New(t, registrytest.Options{})}
	for _, v := range stackVectors {
		data, err := os.ReadFile(testvectors.Path(t, v))
		if err != nil {
			t.Fatal(err)
		}
		rs.digests = append(rs.digests, rs.reg.PushBlob(t, "stack/app", data))
		rs.sizes = append(rs.sizes, len(data))
	}
	return rs
}

// config returns an image config whose lowers are the pushed blobs, each
// with a fresh (empty) dir, read through base (the registry, or a proxy in
// front of it).
func (rs *remoteStack) config(t *testing.T, base string) *config.Image {
	cfg := &config.Image{RepoBlobURL: base + "/v2/stack/app/blobs"}
	for i, d := range rs.digests {
		cfg.Lowers = append(cfg.Lowers, config.Layer{Digest: d, Size: uint64(rs.sizes[i]), Dir: t.TempDir()})
	}
	return cfg
}

// opener returns a fresh client and a fresh file cache with 4 KiB refills
// and no read-ahead, so that the registry sees what the image reads.
func (rs *remoteStack) opener(t *testing.T) (*remote.LayerOpener, *file.Cache, *remote.Client) {
	c, err := remote.NewClient(remote.Options{ReadAhead: -1, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rs.clients = append(rs.clients, c)
	fc, err := file.New(file.Options{Dir: t.TempDir(), MinFreeBytes: -1, RefillSize: 4096, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fc.Close() })
	lo := remote.NewLayerOpener(c, remote.LayerOpenerOptions{Cache: fc, Logger: quiet})
	t.Cleanup(func() { lo.Close() })
	return lo, fc, c
}

// settled returns the registry's counts once it has counted every request
// the clients sent (all are blob GETs: no auth, sizes known): the registry
// counts a request when its handler returns, which can be after the client
// has the response.
func (rs *remoteStack) settled(t *testing.T) registrytest.Counts {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var sent uint64
		for _, c := range rs.clients {
			sent += c.Stats().Requests
		}
		c := rs.reg.Counts()
		if uint64(c.BlobRequests) == sent {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("the registry counted %d blob requests, the clients sent %d", c.BlobRequests, sent)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// workload reads a few scattered ranges of img, as a container's start-up
// would, and returns what it read.
func workload(t *testing.T, img *Image) [][]byte {
	t.Helper()
	var out [][]byte
	size := img.Size()
	for k := int64(0); k < 6; k++ {
		off := (size * k / 7) &^ 4095
		p := make([]byte, 16<<10)
		if _, err := img.ReadAt(p, off); err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		out = append(out, p)
	}
	return out
}

func emptyFile(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// prefetchGoroutines lists the goroutines running trace record or replay
// code.
func prefetchGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "/core/prefetch.") {
			out = append(out, g)
		}
	}
	return out
}

// noPrefetchGoroutines fails unless the trace goroutines are gone. A
// goroutine that has signalled its end may still be on its way out, so it
// looks again for a while, as goleak does.
func noPrefetchGoroutines(t *testing.T) {
	t.Helper()
	gs := prefetchGoroutines()
	for deadline := time.Now().Add(2 * time.Second); len(gs) > 0 && time.Now().Before(deadline); gs = prefetchGoroutines() {
		time.Sleep(10 * time.Millisecond)
	}
	if len(gs) > 0 {
		t.Fatalf("%d trace goroutines left after Close:\n%s", len(gs), strings.Join(gs, "\n\n"))
	}
}

// TestTraceRecordReplayRemote records the reads of an image whose lowers
// come from a registry, then opens the image afresh (new client, empty
// cache) with the trace: the replay fetches the traced ranges, and the same
// reads afterwards cost the registry nothing. The same reads on an image
// without the trace do reach the registry.
func TestTraceRecordReplayRemote(t *testing.T) {
	rs := newRemoteStack(t)
	ctx := context.Background()
	trace := filepath.Join(t.TempDir(), "trace")
	emptyFile(t, trace)

	// Record.
	cfg := rs.config(t, rs.reg.URL)
	cfg.RecordTracePath = trace
	lo, _, _ := rs.opener(t)
	img, err := Open(ctx, cfg, Options{Remote: lo, ReadOnly: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if img.TraceRecorder() == nil || img.Prefetch() != nil {
		t.Fatal("an empty trace file must put the image in record mode")
	}
	if !exists(trace + ".lock") {
		t.Fatal("no lock file while recording")
	}
	want := workload(t, img)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	if exists(trace+".lock") || !exists(trace+".ok") {
		t.Fatalf("after Close: lock %v ok %v; want the lock removed and the ok file created", exists(trace+".lock"), exists(trace+".ok"))
	}
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := prefetch.Decode(b)
	if err != nil {
		t.Fatalf("recorded trace: %v", err)
	}
	if len(recs) < len(want) {
		t.Fatalf("%d records for %d reads", len(recs), len(want))
	}
	layersSeen := map[uint32]bool{}
	for _, r := range recs {
		if r.Op != prefetch.OpRead || int(r.Layer) >= len(stackVectors) || r.Count == 0 || r.Offset < 0 {
			t.Fatalf("bad record %+v", r)
		}
		layersSeen[r.Layer] = true
	}
	if len(layersSeen) != len(stackVectors) {
		t.Fatalf("records cover layers %v, want all %d", layersSeen, len(stackVectors))
	}

	// Replay on a fresh image: new client, empty cache.
	before := rs.settled(t)
	cfg = rs.config(t, rs.reg.URL)
	cfg.RecordTracePath = trace
	lo, fc, client := rs.opener(t)
	g := config.DefaultGlobal()
	g.PrefetchConfig.Concurrency = 4
	img, err = Open(ctx, cfg, Options{Remote: lo, ReadOnly: true, Global: g, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if img.Prefetch() == nil || img.TraceRecorder() != nil {
		t.Fatal("a recorded trace must put the image in replay mode")
	}
	st := img.Prefetch().Wait()
	if st.Done != len(recs) || st.Failed != 0 || st.Skipped != 0 || st.Short != 0 {
		t.Fatalf("replay %+v of %d records", st, len(recs))
	}
	afterReplay, cacheAfterReplay, clientAfterReplay := rs.settled(t), fc.Stats(), client.Stats()
	got := workload(t, img)
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("read %d differs after replay", i)
		}
	}
	after, cacheAfter, clientAfter := rs.settled(t), fc.Stats(), client.Stats()
	if clientAfter.DataRequests != clientAfterReplay.DataRequests || after.BlobRequests != afterReplay.BlobRequests {
		t.Fatalf("the traced reads made %d registry requests (%d at the client) after the replay; want 0 (cache after replay %+v, after the reads %+v)",
			after.BlobRequests-afterReplay.BlobRequests, clientAfter.DataRequests-clientAfterReplay.DataRequests, cacheAfterReplay, cacheAfter)
	}
	if cacheAfter.Misses != cacheAfterReplay.Misses || cacheAfter.Hits == cacheAfterReplay.Hits {
		t.Fatalf("cache after replay %+v, after the reads %+v: the reads must all hit", cacheAfterReplay, cacheAfter)
	}
	total := int64(0)
	for _, s := range rs.sizes {
		total += int64(s)
	}
	if fetched := afterReplay.BlobBytes - before.BlobBytes; fetched >= total {
		t.Fatalf("open and replay fetched %d bytes of %d: more than the traced ranges", fetched, total)
	}
	t.Logf("open+replay: %d requests, %d of %d blob bytes; reads after replay: %d requests",
		afterReplay.BlobRequests-before.BlobRequests, afterReplay.BlobBytes-before.BlobBytes, total, after.BlobRequests-afterReplay.BlobRequests)

	// Control: the same reads without the trace go to the registry.
	cfg = rs.config(t, rs.reg.URL)
	lo, _, _ = rs.opener(t)
	ctl, err := Open(ctx, cfg, Options{Remote: lo, ReadOnly: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	before = rs.settled(t)
	workload(t, ctl)
	if n := rs.settled(t).BlobRequests - before.BlobRequests; n == 0 {
		t.Fatal("without the trace the reads made no registry request: the replay check proves nothing")
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ctl.Close(); err != nil {
		t.Fatal(err)
	}
	noPrefetchGoroutines(t)
}

// TestTraceBadReplaySkipped: a trace that fails its checks, or a file list,
// is skipped with a warning; the image opens and reads correctly.
func TestTraceBadReplaySkipped(t *testing.T) {
	good := prefetch.Encode([]prefetch.Record{{Op: prefetch.OpRead, Layer: 0, Count: 4096, Offset: 0}, {Op: prefetch.OpRead, Layer: 1, Count: 4096, Offset: 4096}})
	flipped := bytes.Clone(good)
	flipped[prefetch.HeaderSize+9] ^= 0x40
	cases := []struct {
		name, want string
		data       []byte
	}{
		{"checksum", "checksum", flipped},
		{"truncated", "data size", good[:len(good)-5]},
		{"file-list", "file-list prefetch is not supported yet", []byte("/usr/bin/\n/etc/hosts\n")},
		{"short-magic", "file-list prefetch is not supported yet", good[:10]},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			trace := filepath.Join(t.TempDir(), "trace")
			if err := os.WriteFile(trace, c.data, 0o644); err != nil {
				t.Fatal(err)
			}
			log, lb := logtest.New(slog.LevelDebug)
			img, err := Open(context.Background(), &config.Image{Lowers: localStack(t), RecordTracePath: trace}, Options{ReadOnly: true, Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			if img.Prefetch() != nil || img.TraceRecorder() != nil {
				t.Fatal("a bad trace must neither replay nor record")
			}
			if s := lb.String(); !strings.Contains(s, "level=WARN") || !strings.Contains(s, c.want) {
				t.Fatalf("log %q lacks a warning with %q", s, c.want)
			}
			if got := sha(t, img); got != shaMerged {
				t.Fatalf("image sha %s", got)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(trace); !bytes.Equal(b, c.data) {
				t.Fatal("the trace file was changed")
			}
		})
	}
}

// TestTraceReplayBadRecords: records for unknown layers, other operations,
// impossible ranges and ranges past the end of a layer are skipped or
// counted short; the image is unaffected.
func TestTraceReplayBadRecords(t *testing.T) {
	recs := []prefetch.Record{
		{Op: prefetch.OpRead, Layer: 0, Count: 4096, Offset: 0},
		{Op: prefetch.OpRead, Layer: 7, Count: 4096, Offset: 0},
		{Op: prefetch.OpWrite, Layer: 0, Count: 4096, Offset: 0},
		{Op: prefetch.OpRead, Layer: 1, Count: 1 << 40, Offset: 0},
		{Op: prefetch.OpRead, Layer: 1, Count: 4096, Offset: -4096},
		{Op: prefetch.OpRead, Layer: 2, Count: 4096, Offset: 1 << 40},
		{Op: prefetch.OpRead, Layer: 2, Count: 3 << 20, Offset: 0},
	}
	trace := filepath.Join(t.TempDir(), "trace")
	if err := os.WriteFile(trace, prefetch.Encode(recs), 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := Open(context.Background(), &config.Image{Lowers: localStack(t), RecordTracePath: trace}, Options{ReadOnly: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	st := img.Prefetch().Wait()
	if want := (prefetch.ReplayStats{Done: 1, Skipped: 4, Short: 2}); st != want {
		t.Fatalf("replay %+v, want %+v", st, want)
	}
	if got := sha(t, img); got != shaMerged {
		t.Fatalf("image sha %s", got)
	}
}

// TestTraceCloseDuringReplay: Close interrupts a replay whose registry
// answers slowly, returns once the reads under way finish, and leaves no
// trace goroutine behind.
func TestTraceCloseDuringReplay(t *testing.T) {
	rs := newRemoteStack(t)
	px := registrytest.NewFaultProxy(t, rs.reg.URL)
	// Every 4 KiB block of the bottom layer: far more than the test waits
	// for at one second per request.
	var recs []prefetch.Record
	for off := int64(0); off+4096 <= int64(rs.sizes[0]); off += 4096 {
		recs = append(recs, prefetch.Record{Op: prefetch.OpRead, Layer: 0, Count: 4096, Offset: off})
	}
	trace := filepath.Join(t.TempDir(), "trace")
	if err := os.WriteFile(trace, prefetch.Encode(recs), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := rs.config(t, px.URL)
	cfg.RecordTracePath = trace
	lo, _, _ := rs.opener(t)
	g := config.DefaultGlobal()
	g.PrefetchConfig.Concurrency = 2
	// Slow down every request once the image is open: the replay is the
	// only reader then.
	var slow atomic.Bool
	px.SetDecide(func(n int64, r *http.Request) registrytest.Fault {
		if slow.Load() {
			return registrytest.Fault{Kind: registrytest.Slow, Delay: time.Second}
		}
		return registrytest.Fault{}
	})
	img, err := Open(context.Background(), cfg, Options{Remote: lo, ReadOnly: true, Global: g, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	slow.Store(true)
	rp := img.Prefetch()
	if rp == nil {
		t.Fatal("no replay")
	}
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	select {
	case <-rp.Done():
	default:
		t.Fatal("replay still running after Close")
	}
	st := rp.Stats()
	if st.Done >= len(recs) {
		t.Fatalf("replay finished all %d records before Close: the test proves nothing", len(recs))
	}
	// The bound is functional, not a performance figure: the whole replay
	// would take over a minute.
	if took > 15*time.Second {
		t.Fatalf("Close took %v", took)
	}
	noPrefetchGoroutines(t)
	t.Logf("Close after %d of %d records took %v", st.Done, len(recs), took)
}

// TestTraceLockRemovalStopsRecording: removing "<trace>.lock" ends the
// recording (the trace is written and "<trace>.ok" appears); later reads
// are not recorded and Close leaves the trace as it is.
func TestTraceLockRemovalStopsRecording(t *testing.T) {
	old := prefetch.LockPollInterval
	prefetch.LockPollInterval = 10 * time.Millisecond
	defer func() { prefetch.LockPollInterval = old }()
	trace := filepath.Join(t.TempDir(), "trace")
	emptyFile(t, trace)
	img, err := Open(context.Background(), &config.Image{Lowers: localStack(t), RecordTracePath: trace}, Options{ReadOnly: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	workload(t, img)
	n := len(img.TraceRecorder().Records())
	if err := os.Remove(trace + ".lock"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !exists(trace + ".ok") {
		if time.Now().After(deadline) {
			t.Fatal("the recording did not stop after the lock file was removed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	written, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := prefetch.Decode(written)
	if err != nil || len(recs) != n {
		t.Fatalf("trace after the lock's removal: %d records, err %v; want %d", len(recs), err, n)
	}
	if got := sha(t, img); got != shaMerged {
		t.Fatalf("image sha %s", got)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(trace)
	if !bytes.Equal(after, written) {
		t.Fatal("Close rewrote a finished trace")
	}
	noPrefetchGoroutines(t)
}

// TestTraceAccelerationLayer: the acceleration layer (the last lower) is
// left out of the stack and its "<dir>/trace" is replayed over the others.
func TestTraceAccelerationLayer(t *testing.T) {
	rec := filepath.Join(t.TempDir(), "trace")
	emptyFile(t, rec)
	img, err := Open(context.Background(), &config.Image{Lowers: localStack(t), RecordTracePath: rec}, Options{ReadOnly: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	workload(t, img)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	accel := t.TempDir()
	copyFile(t, rec, filepath.Join(accel, "trace"))
	recs, err := prefetch.LoadTrace(rec)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Image{Lowers: append(localStack(t), config.Layer{Dir: accel}), AccelerationLayer: true}
	img, err = Open(context.Background(), cfg, Options{ReadOnly: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if len(img.Layers) != len(stackVectors) {
		t.Fatalf("%d layers in the stack", len(img.Layers))
	}
	if img.Prefetch() == nil {
		t.Fatal("acceleration layer trace not replayed")
	}
	if st := img.Prefetch().Wait(); st.Done != len(recs) {
		t.Fatalf("replay %+v of %d records", st, len(recs))
	}
	if got := sha(t, img); got != shaMerged {
		t.Fatalf("image sha %s", got)
	}

	// An empty or missing trace in the acceleration layer does nothing.
	os.WriteFile(filepath.Join(accel, "trace"), nil, 0o644)
	img2, err := Open(context.Background(), cfg, Options{ReadOnly: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer img2.Close()
	if img2.Prefetch() != nil || img2.TraceRecorder() != nil {
		t.Fatal("an empty acceleration-layer trace must do nothing")
	}
	if exists(filepath.Join(accel, "trace.lock")) {
		t.Fatal("acceleration layer put in record mode")
	}
}

// TestTraceRecordAbortedOnFailedOpen: an image that fails to open after
// recording started leaves the trace empty (the next open records again)
// and removes the lock.
func TestTraceRecordAbortedOnFailedOpen(t *testing.T) {
	dir := t.TempDir()
	trace := filepath.Join(dir, "trace")
	emptyFile(t, trace)
	lowers := append(localStack(t), config.Layer{File: filepath.Join(dir, "missing.commit")})
	_, err := Open(context.Background(), &config.Image{Lowers: lowers, RecordTracePath: trace}, Options{ReadOnly: true, Logger: quiet})
	if err == nil {
		t.Fatal("image with a missing layer opened")
	}
	if st, err := os.Stat(trace); err != nil || st.Size() != 0 {
		t.Fatalf("trace after a failed open: %v, %v", st, err)
	}
	if exists(trace+".lock") || exists(trace+".ok") {
		t.Fatal("lock or ok file left after a failed open")
	}
	noPrefetchGoroutines(t)
}

// TestTraceRecordLockTaken: a lock file left by another recorder keeps the
// image from recording (with a warning) but not from opening.
func TestTraceRecordLockTaken(t *testing.T) {
	trace := filepath.Join(t.TempDir(), "trace")
	emptyFile(t, trace)
	emptyFile(t, trace+".lock")
	log, lb := logtest.New(slog.LevelDebug)
	img, err := Open(context.Background(), &config.Image{Lowers: localStack(t), RecordTracePath: trace}, Options{ReadOnly: true, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if img.TraceRecorder() != nil {
		t.Fatal("recording despite a taken lock")
	}
	if !strings.Contains(lb.String(), "recording skipped") {
		t.Fatalf("log %q", lb.String())
	}
	if got := sha(t, img); got != shaMerged {
		t.Fatalf("image sha %s", got)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(trace); st.Size() != 0 || !exists(trace+".lock") {
		t.Fatal("the other recorder's files were touched")
	}
}

// TestTraceMissingPathIgnored: a recordTracePath that does not exist is
// silently ignored, as upstream does.
func TestTraceMissingPathIgnored(t *testing.T) {
	trace := filepath.Join(t.TempDir(), "trace")
	log, lb := logtest.New(slog.LevelDebug)
	img, err := Open(context.Background(), &config.Image{Lowers: localStack(t), RecordTracePath: trace}, Options{ReadOnly: true, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if img.TraceRecorder() != nil || img.Prefetch() != nil || exists(trace) || strings.Contains(lb.String(), "level=WARN") {
		t.Fatalf("missing trace path not ignored: log %q", lb.String())
	}
}

// TestTraceNoTrace: Options.NoTrace neither records nor replays.
func TestTraceNoTrace(t *testing.T) {
	dir := t.TempDir()
	rec, rep := filepath.Join(dir, "rec"), filepath.Join(dir, "rep")
	emptyFile(t, rec)
	if err := os.WriteFile(rep, prefetch.Encode([]prefetch.Record{{Op: prefetch.OpRead, Count: 4096}}), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{rec, rep} {
		img, err := Open(context.Background(), &config.Image{Lowers: localStack(t), RecordTracePath: p}, Options{ReadOnly: true, NoTrace: true, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		workload(t, img)
		if img.TraceRecorder() != nil || img.Prefetch() != nil || exists(p+".lock") {
			t.Fatalf("%s: trace used despite NoTrace", p)
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if st, _ := os.Stat(rec); st.Size() != 0 || exists(rec+".ok") {
		t.Fatal("trace written despite NoTrace")
	}
}
