package logging

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/core/config"
)

func TestRotatorRenamesAndKeeps(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.log")
	r, err := OpenRotator(p, 100, 2)
	if err != nil {
		t.Fatal(err)
	}
	line := func(i int) []byte { return fmt.Appendf(nil, "line %03d %s\n", i, strings.Repeat("x", 39)) } // 50 bytes
	for i := range 7 {
		if _, err := r.Write(line(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// 7 lines of 50 bytes, two per file: current has line 6, .1 has 4,5, .2 has 2,3; 0,1 dropped.
	want := map[string]string{
		p:        string(line(6)),
		p + ".1": string(line(4)) + string(line(5)),
		p + ".2": string(line(2)) + string(line(3)),
	}
	for f, w := range want {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != w {
			t.Errorf("%s = %q, want %q", f, b, w)
		}
	}
	if _, err := os.Stat(p + ".3"); !os.IsNotExist(err) {
		t.Errorf("%s.3 exists (err %v); only 2 rotated files must be kept", p, err)
	}
}

func TestRotatorAppendsExisting(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.log")
	os.WriteFile(p, []byte("0123456789"), 0o644)
	r, err := OpenRotator(p, 15, 1)
	if err != nil {
		t.Fatal(err)
	}
	r.Write([]byte("abcd"))    // 14 bytes, no rotation
	r.Write([]byte("efghijk")) // would be 21: rotate
	r.Close()
	if b, _ := os.ReadFile(p + ".1"); string(b) != "0123456789abcd" {
		t.Errorf(".1 = %q", b)
	}
	if b, _ := os.ReadFile(p); string(b) != "efghijk" {
		t.Errorf("current = %q", b)
	}
}

func TestRotatorBadArgs(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.log")
	if _, err := OpenRotator(p, 0, 1); err == nil {
		t.Error("zero size accepted")
	}
	if _, err := OpenRotator(p, 10, 31); err == nil {
		t.Error("31 files accepted")
	}
	if _, err := OpenRotator(filepath.Join(p, "no", "dir"), 10, 1); err == nil {
		t.Error("unopenable path accepted")
	}
}

// TestSetupRotatesAtConfiguredSize drives the logger built from a logConfig
// past logSizeMB and checks the renamed files.
func TestSetupRotatesAtConfiguredSize(t *testing.T) {
	p := filepath.Join(t.TempDir(), "overlaybd.log")
	g := config.DefaultGlobal()
	g.LogConfig = config.LogConfig{LogLevel: 1, LogPath: p, LogSizeMB: 1, LogRotateNum: 2}
	log, c, err := New(g.EffectiveLog(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("p", 1000)
	for i := range 3000 { // ~3 MiB
		log.Info("fill", "i", i, "pad", pad)
	}
	log.Debug("not written at INFO")
	c.Close()
	for _, f := range []string{p, p + ".1", p + ".2"} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 1<<20 || st.Size() == 0 {
			t.Errorf("%s: size %d, want 1..1MiB", f, st.Size())
		}
	}
	if _, err := os.Stat(p + ".3"); !os.IsNotExist(err) {
		t.Errorf("%s.3 kept", p)
	}
	b, _ := os.ReadFile(p)
	if !bytes.Contains(b, []byte("i=2999")) || bytes.Contains(b, []byte("not written")) {
		t.Errorf("current file lacks the last line or has a debug line")
	}
}

func TestStderrWhenNoPath(t *testing.T) {
	var buf bytes.Buffer
	log, _, err := New(config.LogSettings{Level: 2}, Options{Stderr: &buf})
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown")
	if s := buf.String(); strings.Contains(s, "hidden") || !strings.Contains(s, "shown") {
		t.Errorf("output %q", s)
	}
}

func TestNoCredentialInLog(t *testing.T) {
	const (
		user    = "alice"
		pass    = "s3cr3t-Pa55"
		b64     = "YWxpY2U6czNjcjN0LVBhNTU="
		bearer  = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
		sig     = "Fhq7x0SIGNATURExyz"
		amzCred = "AKIAEXAMPLEKEY"
	)
	signed := "https://blob.example.com/sha256/ab?X-Amz-Credential=" + amzCred + "&X-Amz-Signature=" + sig
	var buf bytes.Buffer
	log, _, err := New(config.LogSettings{Level: 0}, Options{Stderr: &buf})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set("Authorization", "Basic "+b64)
	u, _ := url.Parse("https://" + user + ":" + pass + "@registry.example.com/v2/")
	log.Info("request with Authorization: Bearer "+bearer, "header", h)
	log.Info("redirected", "url", signed, "location", u)
	log.Warn("auth failed", "err", errors.New("GET "+signed+": 401"), "password", pass)
	log.With("authorization", "Basic "+b64).Info("with attrs", slog.Group("g", "token", bearer, "u", signed))
	log.Debug(fmt.Sprintf(`cred file {"auths":{"r":{"auth":"%s","password":"%s"}}}`, b64, pass))
	log.Info("token request to registry failed: Basic authentication; Bearer realm")
	out := buf.String()
	for _, secret := range []string{pass, b64, bearer, sig, amzCred} {
		if strings.Contains(out, secret) {
			t.Errorf("secret %q found in log:\n%s", secret, out)
		}
	}
	// What is not secret stays.
	for _, keep := range []string{"token request to registry failed: Basic authentication; Bearer realm", "blob.example.com/sha256/ab", "registry.example.com/v2/", "401", "redirected", "Authorization: Bearer REDACTED", "header=map[Authorization:[REDACTED]]"} {
		if !strings.Contains(out, keep) {
			t.Errorf("%q missing from log:\n%s", keep, out)
		}
	}
}

func FuzzRedact(f *testing.F) {
	f.Add("Authorization: Basic YWxpY2U6cGFzcw==")
	f.Add("https://u:p@h/x?sig=1")
	f.Fuzz(func(t *testing.T, s string) {
		r := Redact(s)
		if Redact(r) != r {
			t.Errorf("Redact not idempotent on %q: %q then %q", s, r, Redact(r))
		}
	})
}

// TestRotatorKeepsWritingWhenRenameFails: a rotation that cannot rename
// (a directory in the way) reports the error through Err and logging goes
// on in the current file.
func TestRotatorKeepsWritingWhenRenameFails(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.log")
	if err := os.MkdirAll(filepath.Join(p+".1", "busy"), 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := OpenRotator(p, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Write([]byte("0123456789"))
	if _, err := r.Write([]byte("abc")); err != nil {
		t.Fatalf("line lost on failed rotation: %v", err)
	}
	if r.Err() == nil {
		t.Fatal("rotation into a non-empty directory reported no error")
	}
	if _, err := r.Write([]byte("def")); err != nil {
		t.Fatalf("write after failed rotation: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "0123456789abcdef" {
		t.Errorf("current file %q", b)
	}
}
