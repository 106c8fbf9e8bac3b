package remote_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mbig "math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/core/remote"
	"github.com/overlaybd-go/overlaybd/internal/logtest"
	"github.com/overlaybd-go/overlaybd/internal/registrytest"
)

// layer returns n pseudo-random bytes (deterministic per seed).
func layer(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// big returns n, or n/8 under the race detector.
func bigN(n int) int {
	if raceEnabled {
		return n / 8
	}
	return n
}

// credFile writes a docker-config-style credential file and returns its
// path.
func credFile(t testing.TB, dir, key, user, pass string) string {
	t.Helper()
	p := filepath.Join(dir, "cred.json")
	writeCred(t, p, key, user, pass)
	return p
}

func writeCred(t testing.TB, p, key, user, pass string) {
	t.Helper()
	doc := fmt.Sprintf(`{"auths":{"other.example:5000":{"auth":"%s"},"%s":{"auth":"%s"}}}`,
		base64.StdEncoding.EncodeToString([]byte("wrong:wrong")), key,
		base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
}

// newClient returns a client that logs to the returned buffer (unless o
// has a logger), so tests can look for leaked secrets.
func newClient(t testing.TB, o remote.Options) (*remote.Client, *logtest.Buffer) {
	t.Helper()
	log, lb := logtest.New(slog.LevelDebug)
	if o.Logger == nil {
		o.Logger = log
	}
	c, err := remote.NewClient(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, lb
}

func readAt(t testing.TB, b *remote.Blob, off int64, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	if _, err := b.ReadAtContext(context.Background(), p, off); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("read %d@%d: %v", n, off, err)
	}
	return p
}

func TestTokenAuthRangedReads(t *testing.T) {
	reg := registrytest.New(t, registrytest.Options{Auth: registrytest.Token, Users: map[string]string{"alice": "s3cret-pw"}})
	data := layer(bigN(64<<20), 1)
	dgst := reg.PushBlob(t, "ns/app", data)
	cred := credFile(t, t.TempDir(), reg.Host()+"/ns/app", "alice", "s3cret-pw")
	c, logs := newClient(t, remote.Options{Credentials: &remote.FileCredentials{Path: cred}, UserAgent: "obd-test/1"})
	reg.ResetCounts()

	ctx := context.Background()
	b, err := c.Open(ctx, "/"+remote.BlobURL(reg.RepoBlobURL("ns/app"), dgst))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Size() != int64(len(data)) || b.Key() != dgst {
		t.Fatalf("size %d key %s", b.Size(), b.Key())
	}
	// One file's worth: 96 KiB somewhere in the middle.
	off, n := int64(len(data))*37/64+12345, int64(96<<10)
	if got := readAt(t, b, off, int(n)); !bytes.Equal(got, data[off:off+n]) {
		t.Fatal("data mismatch")
	}
	cnt := reg.Counts()
	t.Logf("registry served %d blob requests, %d bytes for a %d-byte read of a %d-byte blob (%.4f%% of the blob)",
		cnt.BlobRequests, cnt.BlobBytes, n, len(data), 100*float64(cnt.BlobBytes)/float64(len(data)))
	if cnt.BlobBytes > n+16 || cnt.BlobRequests > 4 {
		t.Fatalf("fetched %d bytes in %d requests for a %d-byte read", cnt.BlobBytes, cnt.BlobRequests, n)
	}
	if cnt.TokenRequests != 1 {
		t.Fatalf("token requests = %d, want 1", cnt.TokenRequests)
	}
	// A read across the end returns what exists and io.EOF.
	p := make([]byte, 100)
	k, err := b.ReadAtContext(ctx, p, int64(len(data))-10)
	if k != 10 || !errors.Is(err, io.EOF) || !bytes.Equal(p[:10], data[len(data)-10:]) {
		t.Fatalf("tail read = %d, %v", k, err)
	}
	if strings.Contains(logs.String(), "s3cret") {
		t.Fatal("password in logs")
	}
}

func TestBasicAuthAndUserAgent(t *testing.T) {
	reg := registrytest.New(t, registrytest.Options{Auth: registrytest.Basic, Users: map[string]string{"bob": "hunter2"}})
	data := layer(3<<20+17, 2)
	dgst := reg.PushBlob(t, "lib/x", data)
	var agents sync.Map
	hook := func(w http.ResponseWriter, r *http.Request) bool {
		agents.Store(r.Header.Get("User-Agent"), true)
		return false
	}
	reg.Hook.Store(&hook)
	c, _ := newClient(t, remote.Options{Credentials: remote.StaticCredentials{Username: "bob", Password: "hunter2"}, UserAgent: "obd-test/2"})
	b, err := c.Open(context.Background(), remote.BlobURL(reg.RepoBlobURL("lib/x")+"/", dgst))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// A read larger than a chunk is split into parallel requests.
	got := readAt(t, b, 5, len(data)-5)
	if !bytes.Equal(got, data[5:]) {
		t.Fatal("data mismatch")
	}
	agents.Range(func(k, _ any) bool {
		if k.(string) != "obd-test/2" {
			t.Errorf("User-Agent %q", k)
		}
		return true
	})

	// Wrong password: authentication error, mapped to upstream's reason.
	c2, _ := newClient(t, remote.Options{Credentials: remote.StaticCredentials{Username: "bob", Password: "nope"}, Retries: 1})
	_, err = c2.Open(context.Background(), remote.BlobURL(reg.RepoBlobURL("lib/x"), dgst))
	if !errors.Is(err, remote.ErrAuth) || remote.Reason(err) != "Authentication failed" {
		t.Fatalf("wrong password: %v", err)
	}
	if strings.Contains(err.Error(), "nope") {
		t.Fatal("password in error")
	}
	// Missing blob.
	_, err = c.Open(context.Background(), remote.BlobURL(reg.RepoBlobURL("lib/x"), registrytest.Digest([]byte("absent"))))
	if !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("absent blob: %v", err)
	}
}

// TestCredentialRotation401 reads, lets the token expire while the password
// is rotated (and the credential file rewritten), and reads again: the 401
// makes the client re-read the credentials and recover.
func TestCredentialRotation401(t *testing.T) {
	for _, mode := range []registrytest.Auth{registrytest.Token, registrytest.Basic} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			reg := registrytest.New(t, registrytest.Options{Auth: mode, Users: map[string]string{"carol": "v1-pass"}, TokenTTL: time.Second})
			data := layer(1<<20, 3)
			dgst := reg.PushBlob(t, "rot/app", data)
			cred := credFile(t, t.TempDir(), reg.Host(), "carol", "v1-pass")
			c, logs := newClient(t, remote.Options{Credentials: &remote.FileCredentials{Path: cred}})
			b, err := c.Open(context.Background(), remote.BlobURL(reg.RepoBlobURL("rot/app"), dgst))
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			readAt(t, b, 0, 4096)
			reg.SetPassword(t, "carol", "v2-pass")
			writeCred(t, cred, reg.Host(), "carol", "v2-pass")
			time.Sleep(1200 * time.Millisecond) // tokens issued before now are dead
			before := c.Stats().AuthRounds
			if got := readAt(t, b, 500000, 4096); !bytes.Equal(got, data[500000:504096]) {
				t.Fatal("data mismatch after rotation")
			}
			if c.Stats().AuthRounds == before {
				t.Fatal("no new authentication round after the credentials changed")
			}
			if strings.Contains(logs.String(), "v1-pass") || strings.Contains(logs.String(), "v2-pass") {
				t.Fatal("password in logs")
			}
		})
	}
}

// TestRedirectKeepsCredentialsHome: blob reads redirected to object storage
// carry no Authorization header, the signed URL is reused, and it never
// appears in logs or errors.
func TestRedirectKeepsCredentialsHome(t *testing.T) {
	reg := registrytest.New(t, registrytest.Options{Auth: registrytest.Token, Users: map[string]string{"dave": "pw-dave"}, Redirect: true})
	data := layer(2<<20, 4)
	dgst := reg.PushBlob(t, "r/app", data)
	c, logs := newClient(t, remote.Options{Credentials: remote.StaticCredentials{Username: "dave", Password: "pw-dave"}})
	var regGets sync.Map
	hook := func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet {
			v, _ := regGets.LoadOrStore("n", new(int64))
			*(v.(*int64))++
		}
		return false
	}
	reg.Hook.Store(&hook)
	b, err := c.Open(context.Background(), remote.BlobURL(reg.RepoBlobURL("r/app"), dgst))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i := 0; i < 10; i++ {
		off := int64(i) * 200000
		if got := readAt(t, b, off, 5000); !bytes.Equal(got, data[off:off+5000]) {
			t.Fatal("data mismatch")
		}
	}
	cnt := reg.Counts()
	if cnt.AuthOnObjectStore != 0 {
		t.Fatalf("%d requests to object storage carried credentials", cnt.AuthOnObjectStore)
	}
	v, _ := regGets.Load("n")
	if n := *(v.(*int64)); n > 3 {
		t.Fatalf("%d GETs reached the registry: the resolved URL is not reused", n)
	}
	if strings.Contains(logs.String(), "secret-signature") {
		t.Fatal("signed URL in logs")
	}
}

func selfSigned(t testing.TB, cn string) (tls.Certificate, *x509.Certificate, []byte, []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: mbig.NewInt(7), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return pair, leaf, certPEM, keyPEM
}

func TestTLSVerificationAndClientCert(t *testing.T) {
	_, clientLeaf, certPEM, keyPEM := selfSigned(t, "obd client")
	pool := x509.NewCertPool()
	pool.AddCert(clientLeaf)
	reg := registrytest.New(t, registrytest.Options{TLS: true, ClientCAs: pool})
	data := layer(100000, 5)
	dgst := reg.PushBlob(t, "tls/app", data)
	u := remote.BlobURL(reg.RepoBlobURL("tls/app"), dgst)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	os.WriteFile(certFile, certPEM, 0o600)
	os.WriteFile(keyFile, keyPEM, 0o600)

	// Verification is on by default: a self-signed registry is refused.
	c, _ := newClient(t, remote.Options{ClientCertFile: certFile, ClientKeyFile: keyFile, Retries: -1})
	if _, err := c.Open(context.Background(), u); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("unverified registry accepted: %v", err)
	}
	// Trusted through its CA, with the client certificate: works.
	roots := x509.NewCertPool()
	roots.AddCert(reg.Certificate())
	c, _ = newClient(t, remote.Options{ClientCertFile: certFile, ClientKeyFile: keyFile, RootCAs: roots})
	b, err := c.Open(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAt(t, b, 99000, 1000); !bytes.Equal(got, data[99000:]) {
		t.Fatal("data mismatch")
	}
	b.Close()
	// Opt-out for this host only; without the client certificate the
	// registry refuses (403).
	c, _ = newClient(t, remote.Options{InsecureHosts: []string{reg.Host()}, Retries: 1})
	if _, err := c.Open(context.Background(), u); !errors.Is(err, remote.ErrAuth) {
		t.Fatalf("no client certificate: %v", err)
	}
	c, _ = newClient(t, remote.Options{InsecureHosts: []string{"127.0.0.1"}, ClientCertFile: certFile, ClientKeyFile: keyFile})
	if _, err := c.Open(context.Background(), u); err != nil {
		t.Fatalf("insecure host opt-out: %v", err)
	}
}

// helperServer answers credential helper requests the way upstream's
// helpers do, and records the remote_url values it was asked for.
func helperHandler(reg *registrytest.Registry, user, pass string, asked *sync.Map) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		asked.Store(r.URL.Query().Get("remote_url"), true)
		json.NewEncoder(w).Encode(map[string]any{"traceId": "t", "success": true, "data": map[string]any{
			"auths": map[string]any{reg.Host(): map[string]string{"username": user, "password": pass}}}})
	}
}

func TestCredentialHelpers(t *testing.T) {
	reg := registrytest.New(t, registrytest.Options{Auth: registrytest.Token, Users: map[string]string{"erin": "helper-pw"}})
	data := layer(50000, 6)
	dgst := reg.PushBlob(t, "h/app", data)
	u := remote.BlobURL(reg.RepoBlobURL("h/app"), dgst)
	check := func(t *testing.T, creds remote.Credentials, asked *sync.Map) {
		c, _ := newClient(t, remote.Options{Credentials: creds})
		b, err := c.Open(context.Background(), u)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if got := readAt(t, b, 1000, 1000); !bytes.Equal(got, data[1000:2000]) {
			t.Fatal("data mismatch")
		}
		if _, ok := asked.Load(u); !ok {
			t.Fatal("helper was not asked with the blob URL")
		}
	}
	t.Run("http", func(t *testing.T) {
		var asked sync.Map
		srv := httptest.NewServer(helperHandler(reg, "erin", "helper-pw", &asked))
		defer srv.Close()
		h, err := remote.NewHelperCredentials(remote.HelperOptions{Mode: "http", Path: strings.TrimPrefix(srv.URL, "http://") + "/auth"})
		if err != nil {
			t.Fatal(err)
		}
		check(t, h, &asked)
	})
	t.Run("https", func(t *testing.T) {
		var asked sync.Map
		srv := httptest.NewTLSServer(helperHandler(reg, "erin", "helper-pw", &asked))
		defer srv.Close()
		ca := filepath.Join(t.TempDir(), "ca.pem")
		os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
		h, err := remote.NewHelperCredentials(remote.HelperOptions{Mode: "https", Path: srv.URL + "/auth", ServerCAFile: ca})
		if err != nil {
			t.Fatal(err)
		}
		check(t, h, &asked)
	})
	t.Run("uds", func(t *testing.T) {
		var asked sync.Map
		sock := filepath.Join(t.TempDir(), "auth.sock")
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: helperHandler(reg, "erin", "helper-pw", &asked)}
		go srv.Serve(l)
		defer srv.Close()
		h, err := remote.NewHelperCredentials(remote.HelperOptions{Mode: "uds", Path: sock})
		if err != nil {
			t.Fatal(err)
		}
		check(t, h, &asked)
	})
	t.Run("file-readable-by-others", func(t *testing.T) {
		p := credFile(t, t.TempDir(), reg.Host()+"/h/app", "erin", "helper-pw")
		os.Chmod(p, 0o644)
		log, lb := logtest.New(nil)
		fc := &remote.FileCredentials{Path: p, Logger: log}
		var asked sync.Map
		asked.Store(u, true)
		check(t, fc, &asked)
		if !strings.Contains(lb.String(), "readable by other users") {
			t.Fatal("no warning for a world-readable credential file")
		}
		if strings.Contains(lb.String(), "helper-pw") {
			t.Fatal("password in logs")
		}
	})
}

// TestP2PRewrite sends data requests through a P2P agent as
// "<address>/<blob URL>".
func TestP2PRewrite(t *testing.T) {
	reg := registrytest.New(t, registrytest.Options{})
	data := layer(300000, 7)
	dgst := reg.PushBlob(t, "p/app", data)
	var mu sync.Mutex
	var seen []string
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target := strings.TrimPrefix(r.URL.Path, "/accelerator/")
		mu.Lock()
		seen = append(seen, target)
		mu.Unlock()
		req, _ := http.NewRequest(http.MethodGet, target, nil)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	defer agent.Close()
	addr := agent.URL + "/accelerator"
	if !remote.ProbeP2P(context.Background(), addr, time.Second) {
		t.Fatal("agent not reachable")
	}
	c, _ := newClient(t, remote.Options{})
	c.SetP2PAddress(addr)
	u := remote.BlobURL(reg.RepoBlobURL("p/app"), dgst)
	b, err := c.Open(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if got := readAt(t, b, 1234, 4096); !bytes.Equal(got, data[1234:1234+4096]) {
		t.Fatal("data mismatch")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) == 0 || seen[len(seen)-1] != strings.Replace(u, "http://", "http:/", 1) && seen[len(seen)-1] != u {
		t.Fatalf("agent saw %q, want %q", seen, u)
	}
}
