package registrytest_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/overlaybd-go/overlaybd/internal/registrytest"
)

// fill returns n pseudo-random bytes, different for every seed, so that
// every pushed blob has its own digest.
func fill(n int, seed uint64) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	b := make([]byte, n)
	mrand.NewChaCha8(key).Read(b)
	return b
}

// liveHeap returns the bytes of live heap objects after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// get fetches url anonymously and returns the body and status.
func get(t testing.TB, url string) ([]byte, int) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return body, resp.StatusCode
}

// A test that starts many registries, each holding a few MiB, must not
// keep them: when a registry's test ends, its goroutines stop and its
// storage is garbage.
func TestRegistriesAreReleased(t *testing.T) {
	n, size := 16, 4<<20
	if raceEnabled {
		size = 1 << 20
	}
	variants := []registrytest.Options{
		{},
		{Redirect: true},
		{Auth: registrytest.Basic, Users: map[string]string{"u": "p"}},
		{Auth: registrytest.Token, Users: map[string]string{"u": "p"}, Redirect: true},
	}
	run := func(i int) {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			o := variants[i%len(variants)]
			reg := registrytest.New(t, o)
			data := fill(size, uint64(i)+1)
			dgst := reg.PushBlob(t, "leak/check", data)
			if o.Auth == registrytest.NoAuth {
				// The blob is really there (through the object store when
				// redirecting).
				got, code := get(t, reg.RepoBlobURL("leak/check")+"/"+dgst)
				if code != http.StatusOK || !bytes.Equal(got, data) {
					t.Fatalf("read back: status %d, %d bytes, equal %v", code, len(got), bytes.Equal(got, data))
				}
			}
		})
	}
	// The first registry warms up what distribution sets up once per
	// process (its process-wide goroutines are not a registry's).
	run(0)
	ignore := goleak.IgnoreCurrent()
	goBefore := runtime.NumGoroutine()
	before := liveHeap()
	for i := 1; i <= n; i++ {
		run(i)
	}
	after := liveHeap()
	goAfter := runtime.NumGoroutine()
	growth := int64(after) - int64(before)
	t.Logf("%d registries of %d MiB each: live heap %.1f MiB → %.1f MiB (growth %.1f MiB); goroutines %d → %d",
		n, size>>20, float64(before)/(1<<20), float64(after)/(1<<20), float64(growth)/(1<<20), goBefore, goAfter)
	// One registry's worth of slack for what the runtime and the test
	// framework keep; a leak keeps all n.
	if growth > int64(size) {
		t.Errorf("live heap grew by %.1f MiB after %d registries of %d MiB were closed", float64(growth)/(1<<20), n, size>>20)
	}
	// distribution's App starts an event broadcaster that its Shutdown does
	// not close and that nothing outside the package can reach; it holds
	// no storage, only its own (empty) sink list.
	goleak.VerifyNone(t, ignore, goleak.IgnoreTopFunction("github.com/docker/go-events.(*Broadcaster).run"))
}

// With Redirect, blob reads are answered by the object store, which serves
// ranges of what the registry stores, without the registry's own headers
// and without asking for credentials.
func TestObjectStore(t *testing.T) {
	// (The token exchange with Token is the client's; core/remote tests it.)
	for name, auth := range map[string]registrytest.Auth{"anonymous": registrytest.NoAuth, "basic": registrytest.Basic} {
		t.Run(name, func(t *testing.T) {
			reg := registrytest.New(t, registrytest.Options{Auth: auth, Redirect: true, Users: map[string]string{"u": "p"}})
			data := fill(1<<20, 7)
			dgst := reg.PushBlob(t, "some/repo", data)
			reg.ResetCounts()
			// The registry answers with a redirect to a signed URL.
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			noFollow := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			req, _ := http.NewRequest(http.MethodGet, reg.RepoBlobURL("some/repo")+"/"+dgst, nil)
			if auth == registrytest.Basic {
				req.SetBasicAuth("u", "p")
			}
			resp, err := noFollow.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc := resp.Header.Get("Location")
			if resp.StatusCode != http.StatusTemporaryRedirect || loc == "" {
				t.Fatalf("registry answered %d, Location %q", resp.StatusCode, loc)
			}
			obj, _ := http.NewRequest(http.MethodGet, loc, nil)
			obj.Header.Set("Range", "bytes=1000-1999")
			resp, err = noFollow.Do(obj)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[1000:2000]) {
				t.Fatalf("range from the object store: status %d, %d bytes", resp.StatusCode, len(body))
			}
			for _, h := range []string{"Docker-Content-Digest", "Docker-Distribution-Api-Version"} {
				if v := resp.Header.Get(h); v != "" {
					t.Errorf("object store sent %s: %s", h, v)
				}
			}
			if c := reg.Counts(); c.BlobRequests != 1 || c.BlobBytes != 1000 || c.AuthOnObjectStore != 0 {
				t.Errorf("counts %+v, want one request of 1000 bytes", c)
			}
			// An unsigned URL, and an object that is not there, are refused.
			if _, code := get(t, loc[:strings.Index(loc, "?")]); code != http.StatusForbidden {
				t.Errorf("unsigned URL: status %d", code)
			}
			missing := strings.Replace(loc, dgst, registrytest.Digest([]byte("nothing")), 1)
			if _, code := get(t, missing); code != http.StatusNotFound {
				t.Errorf("missing object: status %d", code)
			}
		})
	}
}
