package logging_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/core/logging"
	"github.com/overlaybd-go/overlaybd/core/remote"
)

// TestRegistryRunLeavesNoCredential runs the registry client, with Basic
// credentials, a Bearer token and a redirect to a signed URL, through a
// debug-level logger built by this package, then fails an authentication on
// purpose, and checks that none of the secrets reach the log.
func TestRegistryRunLeavesNoCredential(t *testing.T) {
	const (
		user  = "robot"
		pass  = "Pa55-w0rd-XYZ"
		token = "tok3n-9f8e7d6c5b4a"
		sig   = "SiGnAtUrE0123456789"
	)
	basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	blob := bytes.Repeat([]byte("overlaybd"), 100000)
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/token":
			if r.Header.Get("Authorization") != "Basic "+basic {
				http.Error(w, "bad credentials", http.StatusUnauthorized)
				return
			}
			fmt.Fprintf(w, `{"token":%q,"access_token":%q}`, token, token)
		case strings.HasPrefix(r.URL.Path, "/v2/"):
			if r.Header.Get("Authorization") != "Bearer "+token {
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="reg",scope="repository:r:pull"`, srv.URL))
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, srv.URL+"/storage/blob?X-Amz-Credential=AKIDEXAMPLE&X-Amz-Signature="+sig, http.StatusTemporaryRedirect)
		case r.URL.Path == "/storage/blob":
			if r.URL.Query().Get("X-Amz-Signature") != sig {
				http.Error(w, "forbidden", http.StatusForbidden)
				return
			}
			http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(blob))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()

	var out bytes.Buffer
	log, _, err := logging.New(config.LogSettings{Level: 0}, logging.Options{Stderr: &out})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	url := srv.URL + "/v2/r/blobs/sha256:0123"
	c, err := remote.NewClient(remote.Options{
		Credentials: remote.StaticCredentials{Username: user, Password: pass},
		Logger:      log, Retries: 1, Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 3<<20)
	if n, err := b.ReadAt(p[:len(blob)], 0); err != nil || !bytes.Equal(p[:n], blob) {
		t.Fatalf("read %d %v", n, err)
	}
	b.Close()
	c.Close()
	// Log what the daemons log around registry reads, the way they do.
	log.Info("opened blob", "url", url, "stats", fmt.Sprintf("%+v", c.Stats()))

	// Wrong password: authentication fails and is logged.
	c2, err := remote.NewClient(remote.Options{
		Credentials: remote.StaticCredentials{Username: user, Password: pass + "-old"},
		Logger:      log, Retries: 0, Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Open(ctx, url); err == nil {
		t.Fatal("wrong password accepted")
	} else {
		log.Error("open blob failed", "err", err, "user", user, "password", pass+"-old")
	}
	c2.Close()

	s := out.String()
	if !strings.Contains(s, "open blob failed") || !strings.Contains(s, "/v2/r/blobs/sha256:0123") {
		t.Fatalf("expected lines missing from log:\n%s", s)
	}
	for _, secret := range []string{pass, basic, token, sig, "AKIDEXAMPLE"} {
		if strings.Contains(s, secret) {
			t.Errorf("secret %q in log:\n%s", secret, s)
		}
	}
}
