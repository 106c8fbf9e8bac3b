package remote_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/caches/download"
	"github.com/overlaybd-go/overlaybd/caches/file"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/core/remote"
	"github.com/overlaybd-go/overlaybd/internal/logtest"
	"github.com/overlaybd-go/overlaybd/internal/registrytest"
)

func isData(r *http.Request) bool {
	return r.Header.Get("Range") != "" && r.Header.Get("Range") != "bytes=0-0"
}

// onData is a fault schedule for a FaultProxy: the data requests that pick
// chooses (nil: all of them) get f, every other request passes.
func onData(f registrytest.Fault, pick func() bool) func(int64, *http.Request) registrytest.Fault {
	return func(_ int64, r *http.Request) registrytest.Fault {
		if isData(r) && (pick == nil || pick()) {
			return f
		}
		return registrytest.Fault{}
	}
}

// waitLocal waits up to 20 s for f, a remote.SwitchFile, to switch to its
// downloaded copy, and fails the test with the client's logs when it does
// not.
func waitLocal(t *testing.T, f core.File, logs *logtest.Buffer) {
	t.Helper()
	sf := f.(*remote.SwitchFile)
	deadline := time.Now().Add(20 * time.Second)
	for !sf.Local() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !sf.Local() {
		t.Fatalf("download never completed; logs:\n%s", logs.String())
	}
}

// everyOther chooses the first data request, the third, the fifth, ...
func everyOther() func() bool {
	var n atomic.Int64
	return func() bool { return n.Add(1)%2 == 1 }
}

// firstOnly chooses the first data request.
func firstOnly() func() bool {
	var n atomic.Int64
	return func() bool { return n.Add(1) == 1 }
}

// TestFaultsRetried puts a fault-injecting proxy between the client and the
// registry. Every fault the protocol can reveal ends in a retry with the
// right bytes; when the fault persists the read fails and nothing is
// cached.
func TestFaultsRetried(t *testing.T) {
	reg := registrytest.New(t, registrytest.Options{Auth: registrytest.Token, Users: map[string]string{"u": "p"}})
	data := layer(4<<20, 21)
	dgst := reg.PushBlob(t, "f/app", data)
	px := registrytest.NewFaultProxy(t, reg.URL)
	u := remote.BlobURL(px.URL+"/v2/f/app/blobs", dgst)
	faults := []struct {
		name string
		f    registrytest.Fault
	}{
		{"500", registrytest.Fault{Kind: registrytest.Status, Status: 500}},
		{"503", registrytest.Fault{Kind: registrytest.Status, Status: 503}},
		{"429", registrytest.Fault{Kind: registrytest.Status, Status: 429}},
		{"reset", registrytest.Fault{Kind: registrytest.Reset}},
		{"truncate", registrytest.Fault{Kind: registrytest.Truncate}},
		{"wrong-range", registrytest.Fault{Kind: registrytest.WrongRange}},
		{"slow", registrytest.Fault{Kind: registrytest.Slow, Delay: 2 * time.Second}},
	}
	for _, fc := range faults {
		t.Run(fc.name, func(t *testing.T) {
			c, _ := newClient(t, remote.Options{Credentials: remote.StaticCredentials{Username: "u", Password: "p"},
				ReadAhead: -1, AttemptTimeout: 300 * time.Millisecond, Retries: 4})
			b, err := c.Open(context.Background(), u)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			// Every other data request misbehaves.
			px.SetDecide(onData(fc.f, everyOther()))
			defer px.SetDecide(nil)
			inj := px.Injected.Load()
			for i := 0; i < 6; i++ {
				off := int64(i)*600000 + 333
				if got := readAt(t, b, off, 70000); !bytes.Equal(got, data[off:off+70000]) {
					t.Fatal("wrong data returned")
				}
			}
			if px.Injected.Load() == inj {
				t.Fatal("no fault injected")
			}
			// The fault on every request: an error, and no bytes cached.
			px.SetDecide(onData(fc.f, nil))
			fc2, err := file.New(file.Options{Dir: t.TempDir(), MinFreeBytes: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer fc2.Close()
			cf, err := fc2.Open(context.Background(), b)
			if err != nil {
				t.Fatal(err)
			}
			defer cf.Close()
			p := make([]byte, 5000)
			_, err = cf.ReadAt(p, 1<<20)
			if err == nil {
				t.Fatal("read succeeded through a proxy that always fails")
			}
			if !errors.Is(err, remote.ErrBadResponse) && !errors.Is(err, remote.ErrTimeout) &&
				!errors.Is(err, remote.ErrTooManyRequests) {
				t.Fatalf("error %v does not say why", err)
			}
			px.SetDecide(nil)
			before := c.Stats().DataRequests
			if _, err := cf.ReadAt(p, 1<<20); err != nil || !bytes.Equal(p, data[1<<20:1<<20+5000]) {
				t.Fatalf("after the faults stop: %v", err)
			}
			if c.Stats().DataRequests == before {
				t.Fatal("a range that failed was served from the cache")
			}
		})
	}
}

// TestFlippedBytesHealedByDownload: a flipped byte in a layer without block
// checksums reaches a lazy reader (nothing in HTTP can reveal it), but the
// background download's digest check catches it, discards the download file
// (the download cache's file too) and fetches the blob again; reads then
// switch to the verified copy.
func TestFlippedBytesHealedByDownload(t *testing.T) {
	reg := registrytest.New(t, registrytest.Options{})
	data := layer(3<<20, 22)
	dgst := reg.PushBlob(t, "flip/app", data)
	px := registrytest.NewFaultProxy(t, reg.URL)
	u := remote.BlobURL(px.URL+"/v2/flip/app/blobs", dgst)
	c, logs := newClient(t, remote.Options{ReadAhead: -1})
	dc, err := download.New(download.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	px.SetDecide(onData(registrytest.Fault{Kind: registrytest.Flip}, firstOnly()))
	lo := remote.NewLayerOpener(c, remote.LayerOpenerOptions{Cache: dc,
		Download: &remote.DownloadOptions{BlockSize: 1 << 20, Logger: c.Logger()}})
	defer lo.Close()
	f, err := lo.OpenRemote(context.Background(), u, config.Layer{Digest: dgst, Size: uint64(len(data)), Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	waitLocal(t, f, logs)
	if !strings.Contains(logs.String(), "does not match its digest") {
		t.Fatalf("the mismatch was not reported; logs:\n%s", logs.String())
	}
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after the switch: %v, equal=%v", err, bytes.Equal(got, data))
	}
	local, _ := os.ReadFile(filepath.Join(dir, remote.CommitFileName))
	if !bytes.Equal(local, data) {
		t.Fatal("committed layer differs from the blob")
	}
}

// childEnv runs the test binary again as a child running one test.
func startChild(t *testing.T, test string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.v")
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("child output:\n%s", out.String())
		}
	})
	return cmd
}

// TestDownloadResumesAfterKill kills a child process (SIGKILL) in the middle
// of a rate-limited download; a new download resumes from what is on disk
// and the result matches the digest.
func TestDownloadResumesAfterKill(t *testing.T) {
	if os.Getenv("OBD_DL_CHILD_URL") != "" {
		c, _ := remote.NewClient(remote.Options{})
		b, err := c.Open(context.Background(), os.Getenv("OBD_DL_CHILD_URL"))
		if err != nil {
			os.Exit(3)
		}
		remote.DownloadLayer(context.Background(), b, os.Getenv("OBD_DL_CHILD_DIR"), os.Getenv("OBD_DL_CHILD_DIGEST"),
			remote.DownloadOptions{MaxBytesPerSecond: int64(bigN(4 << 20)), BlockSize: 256 << 10}, false)
		os.Exit(0)
	}
	reg := registrytest.New(t, registrytest.Options{})
	data := layer(bigN(16<<20), 23)
	dgst := reg.PushBlob(t, "dl/app", data)
	u := remote.BlobURL(reg.RepoBlobURL("dl/app"), dgst)
	dir := t.TempDir()
	cmd := startChild(t, "TestDownloadResumesAfterKill", "OBD_DL_CHILD_URL="+u, "OBD_DL_CHILD_DIR="+dir, "OBD_DL_CHILD_DIGEST="+dgst)
	dl := filepath.Join(dir, remote.DownloadFileName)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if onDisk(dl) >= int64(len(data))*3/8 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if _, err := os.Stat(dl); err != nil {
		t.Fatalf("no download file after the kill: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, remote.CommitFileName)); err == nil {
		t.Fatal("download finished before the kill; slow it down")
	}
	reg.ResetCounts()
	c, _ := newClient(t, remote.Options{ReadAhead: -1})
	b, err := c.Open(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	path, err := remote.DownloadLayer(context.Background(), b, dir, dgst, remote.DownloadOptions{BlockSize: 256 << 10}, false)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, data) {
		t.Fatal("resumed download differs")
	}
	fetched := reg.Counts().BlobBytes
	t.Logf("resume fetched %d of %d bytes", fetched, len(data))
	if fetched > int64(len(data))*3/4 {
		t.Fatalf("resume fetched %d of %d bytes: it started over", fetched, len(data))
	}
}

func onDisk(p string) int64 {
	var st syscall.Stat_t
	if syscall.Stat(p, &st) != nil {
		return 0
	}
	return st.Blocks * 512
}

// TestFileCacheSurvivesKill fills the file cache from a child process that
// is killed with SIGKILL mid-way; after a restart every read is correct.
func TestFileCacheSurvivesKill(t *testing.T) {
	if os.Getenv("OBD_FC_CHILD_URL") != "" {
		c, _ := remote.NewClient(remote.Options{})
		b, err := c.Open(context.Background(), os.Getenv("OBD_FC_CHILD_URL"))
		if err != nil {
			os.Exit(3)
		}
		fc, _ := file.New(file.Options{Dir: os.Getenv("OBD_FC_CHILD_DIR"), MinFreeBytes: -1, CapacityBytes: 6 << 20})
		f, _ := fc.Open(context.Background(), b)
		seed, _ := strconv.Atoi(os.Getenv("OBD_FC_SEED"))
		p := make([]byte, 100000)
		for i := 0; ; i++ {
			off := int64((i*7919 + seed) % (int(b.Size()) - len(p)))
			f.ReadAt(p, off)
		}
	}
	reg := registrytest.New(t, registrytest.Options{})
	data := layer(8<<20, 24)
	dgst := reg.PushBlob(t, "fc/app", data)
	u := remote.BlobURL(reg.RepoBlobURL("fc/app"), dgst)
	dir := t.TempDir()
	for round := 0; round < 3; round++ {
		cmd := startChild(t, "TestFileCacheSurvivesKill", "OBD_FC_CHILD_URL="+u, "OBD_FC_CHILD_DIR="+dir, fmt.Sprintf("OBD_FC_SEED=%d", round*1000003))
		start := reg.Counts().BlobRequests
		for i := 0; i < 500 && reg.Counts().BlobRequests < start+5+int64(round)*3; i++ {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(time.Duration(20+round*15) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}
	c, _ := newClient(t, remote.Options{})
	b, err := c.Open(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	fc, err := file.New(file.Options{Dir: dir, MinFreeBytes: -1, CapacityBytes: 6 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	f, err := fc.Open(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	reg.ResetCounts()
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after kills: %v, equal=%v", err, bytes.Equal(got, data))
	}
	t.Logf("after 3 kills: %d of %d bytes were still cached", int64(len(data))-reg.Counts().BlobBytes, len(data))
}

// TestOpenerAmplification reads one file's worth of a 64 MiB layer through
// each cache and reports what the registry served.
func TestOpenerAmplification(t *testing.T) {
	reg := registrytest.New(t, registrytest.Options{Auth: registrytest.Token, Users: map[string]string{"amp": "pw"}})
	data := layer(bigN(64<<20), 25)
	dgst := reg.PushBlob(t, "amp/app", data)
	u := remote.BlobURL(reg.RepoBlobURL("amp/app"), dgst)
	caches := map[string]func(dir string) core.Cache{
		"none": func(string) core.Cache { return nil },
		"file": func(dir string) core.Cache {
			c, _ := file.New(file.Options{Dir: dir, MinFreeBytes: -1})
			return c
		},
		"download": func(string) core.Cache {
			c, _ := download.New(download.Options{})
			return c
		},
	}
	for _, name := range []string{"none", "file", "download"} {
		t.Run(name, func(t *testing.T) {
			cache := caches[name](t.TempDir())
			if cache != nil {
				defer cache.Close()
			}
			c, _ := newClient(t, remote.Options{Credentials: remote.StaticCredentials{Username: "amp", Password: "pw"}})
			lo := remote.NewLayerOpener(c, remote.LayerOpenerOptions{Cache: cache})
			defer lo.Close()
			reg.ResetCounts()
			f, err := lo.OpenRemote(context.Background(), u, config.Layer{Digest: dgst, Size: uint64(len(data)), Dir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			// One file of 120 KiB read as the kernel would: 4 KiB pages.
			off, n := int64(len(data))*40/64+3*4096, int64(120<<10)
			for o := int64(off); o < off+n; o += 4096 {
				p := make([]byte, 4096)
				if _, err := f.ReadAt(p, o); err != nil || !bytes.Equal(p, data[o:o+4096]) {
					t.Fatalf("read at %d: %v", o, err)
				}
			}
			cnt := reg.Counts()
			t.Logf("client stats %+v", c.Stats())
			amp := float64(cnt.BlobBytes) / float64(n)
			t.Logf("cache=%s: read %d bytes of a %d-byte layer; registry served %d requests, %d bytes (%.3f%% of the layer, amplification %.2f)",
				name, n, len(data), cnt.BlobRequests, cnt.BlobBytes, 100*float64(cnt.BlobBytes)/float64(len(data)), amp)
			if cnt.BlobBytes > 8<<20 {
				t.Fatalf("fetched %d bytes for a %d-byte file", cnt.BlobBytes, n)
			}
		})
	}
}
