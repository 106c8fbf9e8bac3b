package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/core/prefetch"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/frontends/tcmu"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

// TestWaitRun: Run's result is waited for until a second signal; after it
// Run gets quickGrace, and a Run that has not returned by then is left.
func TestWaitRun(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	done := make(chan error, 1)
	done <- context.Canceled
	if drained, err := waitRun(done, nil, log); !drained || err != context.Canceled {
		t.Fatalf("drained %v, %v", drained, err)
	}
	// A second signal, then Run returns within the grace.
	quick := make(chan struct{})
	close(quick)
	go func() { time.Sleep(100 * time.Millisecond); done <- nil }()
	if drained, err := waitRun(done, quick, log); !drained || err != nil {
		t.Fatalf("drained %v, %v", drained, err)
	}
	if testing.Short() {
		t.Skip("waits for quickGrace")
	}
	start := time.Now()
	if drained, _ := waitRun(make(chan error), quick, log); drained {
		t.Fatal("a Run that never returns was taken for drained")
	}
	if d := time.Since(start); d < quickGrace {
		t.Fatalf("gave up after %v, before quickGrace", d)
	}
}

// TestFinishBeside opens a device image with a trace recording through the
// daemon's open callback, reads and writes it, and finishes beside it, as
// after a second signal: the trace is whole (checksummed, P.ok, no P.lock),
// the write is in the upper's files while the image is still open (the
// flush itself is an fsync, which a test cannot observe), and the device
// still serves.
func TestFinishBeside(t *testing.T) {
	dir := t.TempDir()
	data, index := filepath.Join(dir, "data"), filepath.Join(dir, "index")
	eng := psync.New(core.EngineConfig{})
	openUpper := func(flag int) *lsmt.Writable {
		df, err := eng.Open(data, core.OpenOptions{Flag: flag, Perm: 0o644})
		if err != nil {
			t.Fatal(err)
		}
		xf, err := eng.Open(index, core.OpenOptions{Flag: flag, Perm: 0o644})
		if err != nil {
			t.Fatal(err)
		}
		if flag&os.O_CREATE != 0 {
			w, err := lsmt.Create(df, xf, lsmt.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return w
		}
		w, err := lsmt.OpenWritable(df, xf)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	openUpper(os.O_RDWR | os.O_CREATE | os.O_EXCL).Close()
	trace := filepath.Join(dir, "trace")
	if err := os.WriteFile(trace, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.v1.json")
	writeFile(t, cfg, `{"lowers": [{"file": "`+testvectors.Path(t, "stack/A.commit")+`"}],
		"upper": {"data": "`+data+`", "index": "`+index+`"},
		"recordTracePath": "`+trace+`", "resultFile": "`+filepath.Join(dir, "result")+`"}`)
	svc := filepath.Join(dir, "overlaybd.json")
	writeFile(t, svc, `{"logPath": "", "enableAudit": false}`)
	global, err := config.LoadGlobal(svc)
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{globalPath: svc, global: global, log: slog.New(slog.DiscardHandler), devIDs: map[string]bool{}, files: map[*deviceFile]string{}}
	img, err := d.open(context.Background(), tcmu.DeviceInfo{HBA: "user_1", Name: "dev1", Path: cfg + ";dev1"})
	if err != nil {
		t.Fatal(err)
	}
	defer img.File.Close()
	b := make([]byte, 1<<20)
	for off := int64(0); off < img.File.Size(); off += int64(len(b)) {
		if _, err := img.File.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	pattern := bytes.Repeat([]byte{0xa5}, 64<<10)
	if _, err := img.File.WriteAt(pattern, 8<<20); err != nil {
		t.Fatal(err)
	}
	d.finishBeside()

	recs, err := prefetch.LoadTrace(trace)
	if err != nil || len(recs) == 0 {
		t.Fatalf("trace: %d records, %v", len(recs), err)
	}
	if _, err := os.Stat(trace + ".ok"); err != nil {
		t.Errorf("no %s.ok: %v", trace, err)
	}
	if _, err := os.Stat(trace + ".lock"); err == nil {
		t.Errorf("%s.lock left behind", trace)
	}
	w := openUpper(os.O_RDONLY)
	defer w.Close()
	got := make([]byte, len(pattern))
	if _, err := w.ReadAt(got, 8<<20); err != nil || !bytes.Equal(got, pattern) {
		t.Errorf("the upper's files do not hold the write (%v)", err)
	}
	// The device still serves after finishing beside it.
	if _, err := img.File.ReadAt(b[:4096], 0); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
