// Package registrytest runs real OCI registries for tests: distribution's
// registry code in-process on 127.0.0.1 with in-memory storage, with no
// authentication, htpasswd basic authentication, or bearer tokens from a
// small ES256 token server. It counts what the registry serves, can send
// blob reads to an "object storage" server through redirects, and offers a
// fault-injecting proxy.
package registrytest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/auth/token"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/bcrypt"

	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
)

// Auth selects how the registry authenticates.
type Auth int

const (
	// NoAuth serves anonymous readers.
	NoAuth Auth = iota
	// Basic uses an htpasswd file.
	Basic
	// Token uses bearer tokens from the test's token server.
	Token
)

// Options configures a test registry.
type Options struct {
	Auth Auth
	// Users maps user names to passwords (Basic and Token).
	Users map[string]string
	// TokenTTL is the lifetime of issued tokens (default 5 minutes). The
	// expiry claim is shifted by the registry's leeway, so that a token
	// really stops working TokenTTL after it is issued.
	TokenTTL time.Duration
	// Redirect sends every successful blob GET to an object-storage server
	// with a signed URL (307), as registries backed by S3 do.
	Redirect bool
	// TLS serves the registry over HTTPS with a self-signed certificate
	// (see Registry.Certificate).
	TLS bool
	// ClientCAs, with TLS, requires readers (GET requests) to present a
	// certificate signed by one of these CAs; others get 403.
	ClientCAs *x509.CertPool
}

// Counts are what the registry served.
type Counts struct {
	// BlobRequests counts GETs of blobs (at the registry, and at the
	// object-storage server when redirecting); BlobBytes their body bytes.
	BlobRequests, BlobBytes int64
	// TokenRequests counts token server requests.
	TokenRequests int64
	// AuthOnObjectStore counts requests to the object-storage server that
	// carried an Authorization header (credentials must never go there).
	AuthOnObjectStore int64
}

// Registry is a running test registry.
type Registry struct {
	// URL is the registry's base URL (http://127.0.0.1:port).
	URL string

	srv, tokenSrv, objSrv *httptest.Server
	app                   http.Handler
	users                 sync.Map // user → password
	htpasswd              string
	opts                  Options
	key                   *ecdsa.PrivateKey
	certDER               []byte

	// htpasswdMu serialises rewrites of the htpasswd file.
	htpasswdMu sync.Mutex

	blobRequests, blobBytes, tokenRequests, authOnObj atomic.Int64

	// Hook, when set, sees every request before the registry does; it
	// returns true when it has answered the request itself.
	Hook atomic.Pointer[func(w http.ResponseWriter, r *http.Request) bool]
}

var logOnce sync.Once

// New starts a registry that stops when the test ends: its servers close,
// then the registry app shuts down, so that its goroutines end and its
// in-memory storage, with every blob pushed, becomes garbage.
func New(t testing.TB, o Options) *Registry {
	t.Helper()
	logOnce.Do(func() {
		logrus.SetLevel(logrus.ErrorLevel)
		logrus.SetOutput(io.Discard)
	})
	if o.TokenTTL <= 0 {
		o.TokenTTL = 5 * time.Minute
	}
	r := &Registry{opts: o}
	for u, p := range o.Users {
		r.users.Store(u, p)
	}
	dir := t.TempDir()
	cfg := &configuration.Configuration{}
	cfg.Storage = configuration.Storage{"inmemory": configuration.Parameters{}, "delete": configuration.Parameters{"enabled": true}}
	cfg.HTTP.Secret = "registrytest"
	cfg.Log.Level = "error"
	cfg.Log.AccessLog.Disabled = true

	// The token server is started first: the registry's config names it.
	if o.Auth == Token {
		r.tokenSrv = httptest.NewServer(http.HandlerFunc(r.serveToken))
		t.Cleanup(r.tokenSrv.Close)
		var err error
		r.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "registrytest token"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
		r.certDER, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &r.key.PublicKey, r.key)
		if err != nil {
			t.Fatal(err)
		}
		bundle := filepath.Join(dir, "root.pem")
		if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.certDER}), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg.Auth = configuration.Auth{"token": configuration.Parameters{
			"realm": r.tokenSrv.URL + "/token", "service": "registrytest", "issuer": "registrytest-issuer",
			"rootcertbundle": bundle,
		}}
	}
	if o.Auth == Basic {
		r.htpasswd = filepath.Join(dir, "htpasswd")
		if err := r.writeHtpasswd(); err != nil {
			t.Fatal(err)
		}
		cfg.Auth = configuration.Auth{"htpasswd": configuration.Parameters{"realm": "registrytest", "path": r.htpasswd}}
	}
	// The app's background work (the upload purger) holds the app, and with
	// it the in-memory storage and every blob pushed, until its context
	// ends: shut it down when the test ends, after the servers in front of
	// it (cleanups run last-registered first).
	ctx, cancel := context.WithCancel(context.Background())
	app := handlers.NewApp(ctx, cfg)
	r.app = app
	t.Cleanup(func() {
		_ = app.Shutdown()
		cancel()
	})
	if o.Redirect {
		r.objSrv = httptest.NewServer(http.HandlerFunc(r.serveObject))
		t.Cleanup(r.objSrv.Close)
	}
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if h := r.Hook.Load(); h != nil && (*h)(w, req) {
			return
		}
		if o.ClientCAs != nil && req.Method == http.MethodGet && (req.TLS == nil || len(req.TLS.VerifiedChains) == 0) {
			http.Error(w, "client certificate required", http.StatusForbidden)
			return
		}
		isBlob := req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:")
		if isBlob && o.Redirect {
			r.redirect(w, req)
			return
		}
		if isBlob {
			cw := &countingWriter{ResponseWriter: w}
			app.ServeHTTP(cw, req)
			r.blobRequests.Add(1)
			r.blobBytes.Add(cw.n)
			return
		}
		app.ServeHTTP(w, req)
	}))
	r.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if o.TLS {
		if o.ClientCAs != nil {
			r.srv.TLS = &tls.Config{ClientCAs: o.ClientCAs, ClientAuth: tls.VerifyClientCertIfGiven}
		}
		r.srv.StartTLS()
	} else {
		r.srv.Start()
	}
	t.Cleanup(r.srv.Close)
	r.URL = r.srv.URL
	return r
}

// Host returns host:port of the registry.
func (r *Registry) Host() string {
	return strings.TrimPrefix(strings.TrimPrefix(r.URL, "http://"), "https://")
}

// Certificate returns the registry's TLS certificate (nil without TLS).
func (r *Registry) Certificate() *x509.Certificate { return r.srv.Certificate() }

// RepoBlobURL returns the repoBlobUrl of repo.
func (r *Registry) RepoBlobURL(repo string) string { return r.URL + "/v2/" + repo + "/blobs" }

// Counts returns what the registry served so far.
func (r *Registry) Counts() Counts {
	return Counts{BlobRequests: r.blobRequests.Load(), BlobBytes: r.blobBytes.Load(),
		TokenRequests: r.tokenRequests.Load(), AuthOnObjectStore: r.authOnObj.Load()}
}

// ResetCounts sets the counters to zero.
func (r *Registry) ResetCounts() {
	r.blobRequests.Store(0)
	r.blobBytes.Store(0)
	r.tokenRequests.Store(0)
	r.authOnObj.Store(0)
}

// SetPassword sets (rotates) a user's password.
func (r *Registry) SetPassword(t testing.TB, user, pass string) {
	t.Helper()
	if err := r.setPassword(user, pass); err != nil {
		t.Fatal(err)
	}
}

func (r *Registry) setPassword(user, pass string) error {
	r.users.Store(user, pass)
	if r.opts.Auth == Basic {
		return r.writeHtpasswd()
	}
	return nil
}

func (r *Registry) writeHtpasswd() error {
	r.htpasswdMu.Lock()
	defer r.htpasswdMu.Unlock()
	var b bytes.Buffer
	var err error
	r.users.Range(func(k, v any) bool {
		var h []byte
		if h, err = bcrypt.GenerateFromPassword([]byte(v.(string)), bcrypt.MinCost); err != nil {
			return false
		}
		fmt.Fprintf(&b, "%s:%s\n", k, h)
		return true
	})
	if err != nil {
		return fmt.Errorf("htpasswd: %w", err)
	}
	tmp := r.htpasswd + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("htpasswd: %w", err)
	}
	// The registry reloads the file when its modification time changes.
	if st, err := os.Stat(r.htpasswd); err == nil {
		_ = os.Chtimes(tmp, time.Now(), st.ModTime().Add(time.Second))
	}
	if err := os.Rename(tmp, r.htpasswd); err != nil {
		return fmt.Errorf("htpasswd: %w", err)
	}
	return nil
}

func (r *Registry) checkUser(u, p string) bool {
	v, ok := r.users.Load(u)
	return ok && v.(string) == p
}

// serveToken is the token server: it checks Basic credentials (anonymous
// requests get a token without access) and signs an ES256 JWT for the
// requested scope.
func (r *Registry) serveToken(w http.ResponseWriter, req *http.Request) {
	r.tokenRequests.Add(1)
	var access []map[string]any
	u, p, ok := req.BasicAuth()
	if ok && !r.checkUser(u, p) {
		http.Error(w, "bad credentials", http.StatusUnauthorized)
		return
	}
	if ok {
		for _, scope := range req.URL.Query()["scope"] {
			parts := strings.Split(scope, ":")
			if len(parts) != 3 {
				continue
			}
			access = append(access, map[string]any{"type": parts[0], "name": parts[1], "actions": strings.Split(parts[2], ",")})
		}
	}
	tok, err := r.sign(u, access)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_in": int(r.opts.TokenTTL / time.Second)})
}

// sign makes a compact JWS (ES256, x5c header) over the claims.
func (r *Registry) sign(sub string, access []map[string]any) (string, error) {
	now := time.Now()
	if access == nil {
		access = []map[string]any{}
	}
	hdr, _ := json.Marshal(map[string]any{"alg": "ES256", "typ": "JWT",
		"x5c": []string{base64.StdEncoding.EncodeToString(r.certDER)}})
	var jti [8]byte
	rand.Read(jti[:])
	claims, _ := json.Marshal(map[string]any{"iss": "registrytest-issuer", "sub": sub, "aud": "registrytest",
		"exp": now.Add(r.opts.TokenTTL - token.Leeway).Unix(), "nbf": now.Add(-time.Second).Unix(), "iat": now.Unix(),
		"jti": hex.EncodeToString(jti[:]), "access": access})
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString(hdr) + "." + enc.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signing))
	rr, ss, err := ecdsa.Sign(rand.Reader, r.key, sum[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	rr.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	return signing + "." + enc.EncodeToString(sig), nil
}

// redirect answers a blob GET the way an S3-backed registry does: after the
// registry's own checks (auth, existence) pass, a 307 to a signed URL on the
// object-storage server. The URL names the object by repository and digest.
func (r *Registry) redirect(w http.ResponseWriter, req *http.Request) {
	head := req.Clone(req.Context())
	head.Method = http.MethodHead
	head.Header.Del("Range")
	rec := httptest.NewRecorder()
	r.app.ServeHTTP(rec, head)
	if rec.Code != http.StatusOK {
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		return
	}
	p := req.URL.Path
	repo := p[len("/v2/"):strings.LastIndex(p, "/blobs/")]
	dgst := p[strings.LastIndex(p, "/")+1:]
	w.Header().Set("Location", r.objSrv.URL+"/bucket/"+repo+"/"+dgst+"?X-Signature=secret-signature-"+dgst[7:15])
	w.WriteHeader(http.StatusTemporaryRedirect)
}

// registryOnlyHeaders are the registry's own response headers, which an
// object store does not send.
var registryOnlyHeaders = []string{"Docker-Content-Digest", "Docker-Distribution-Api-Version"}

// serveObject is the object-storage server. It holds no copy of the blobs:
// it reads them from the registry's storage, as the registry's own
// administrator, with the client's Range and conditional headers.
func (r *Registry) serveObject(w http.ResponseWriter, req *http.Request) {
	if req.Header.Get("Authorization") != "" {
		r.authOnObj.Add(1)
	}
	if !strings.HasPrefix(req.URL.Query().Get("X-Signature"), "secret-signature-") {
		http.Error(w, "signature required", http.StatusForbidden)
		return
	}
	obj := strings.TrimPrefix(req.URL.Path, "/bucket/")
	i := strings.LastIndex(obj, "/")
	if i <= 0 || !strings.HasPrefix(obj[i+1:], "sha256:") {
		http.NotFound(w, req)
		return
	}
	repo, dgst := obj[:i], obj[i+1:]
	auth, err := r.adminAuth(repo)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	in := req.Clone(req.Context())
	in.URL.Path, in.URL.RawPath, in.URL.RawQuery = "/v2/"+repo+"/blobs/"+dgst, "", ""
	in.RequestURI = ""
	in.Header.Del("Authorization")
	if auth != "" {
		in.Header.Set("Authorization", auth)
	}
	cw := &countingWriter{ResponseWriter: w, drop: registryOnlyHeaders}
	r.app.ServeHTTP(cw, in)
	if cw.code != http.StatusNotFound {
		r.blobRequests.Add(1)
		r.blobBytes.Add(cw.n)
	}
}

// countingWriter counts the body bytes of successful (2xx) responses, and
// removes the headers named in drop before the response goes out.
type countingWriter struct {
	http.ResponseWriter
	n    int64
	code int
	drop []string
}

func (c *countingWriter) WriteHeader(code int) {
	if c.code == 0 {
		for _, h := range c.drop {
			c.Header().Del(h)
		}
	}
	c.code = code
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.code == 0 {
		c.WriteHeader(http.StatusOK)
	}
	n, err := c.ResponseWriter.Write(p)
	if c.code/100 == 2 {
		c.n += int64(n)
	}
	return n, err
}

// Digest returns "sha256:<hex>" of data.
func Digest(data []byte) string {
	s := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(s[:])
}

// PushBlob uploads data as a blob of repo (monolithic upload) and returns
// its digest. It authenticates with the registry's mechanism as an
// administrator, not as any configured user.
func (r *Registry) PushBlob(t testing.TB, repo string, data []byte) string {
	t.Helper()
	dgst := Digest(data)
	auth, err := r.adminAuth(repo)
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, u string, body io.Reader, hdr map[string]string) *http.Response {
		req, err := http.NewRequest(method, u, body)
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := r.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := do(http.MethodPost, r.URL+"/v2/"+repo+"/blobs/uploads/", nil, nil)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: status %d", resp.StatusCode)
	}
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	q := loc.Query()
	q.Set("digest", dgst)
	loc.RawQuery = q.Encode()
	resp = do(http.MethodPut, loc.String(), bytes.NewReader(data), map[string]string{"Content-Type": "application/octet-stream"})
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("finish upload: status %d", resp.StatusCode)
	}
	return dgst
}

const (
	adminUser     = "registrytest-admin"
	adminPassword = "admin-password"
)

// adminAuth returns the Authorization header value with which the
// registry's administrator may push and pull repo ("" without
// authentication).
func (r *Registry) adminAuth(repo string) (string, error) {
	switch r.opts.Auth {
	case Basic:
		if _, ok := r.users.Load(adminUser); !ok {
			if err := r.setPassword(adminUser, adminPassword); err != nil {
				return "", err
			}
		}
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(adminUser+":"+adminPassword)), nil
	case Token:
		tok, err := r.sign(adminUser, []map[string]any{{"type": "repository", "name": repo, "actions": []string{"pull", "push"}}})
		if err != nil {
			return "", fmt.Errorf("sign administrator token: %w", err)
		}
		return "Bearer " + tok, nil
	}
	return "", nil
}
