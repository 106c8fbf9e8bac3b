package remote

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Credentials is a source of registry credentials. Lookup is called with the
// blob URL every time the client authenticates (token fetch, Basic auth), so
// a source that reads a file or asks a helper picks up rotated credentials
// at the next authentication round. An empty username means anonymous.
//
// Implementations must not cache credentials across calls unless they know
// when they change, and must never log them.
type Credentials interface {
	Lookup(ctx context.Context, blobURL string) (username, password string, err error)
}

// Anonymous is the credential source that has no credentials.
type Anonymous struct{}

// Lookup returns empty credentials.
func (Anonymous) Lookup(context.Context, string) (string, string, error) { return "", "", nil }

// StaticCredentials returns the same username and password for every URL.
// It is meant for tools given credentials on their command line.
type StaticCredentials struct{ Username, Password string }

// Lookup returns the fixed credentials.
func (s StaticCredentials) Lookup(context.Context, string) (string, string, error) {
	return s.Username, s.Password, nil
}

// authEntry is one value of a docker config.json "auths" object.
type authEntry struct {
	Auth     *string `json:"auth"`
	Username *string `json:"username"`
	Password *string `json:"password"`
}

// authCandidates returns the keys a blob URL may be matched by, as upstream
// computes them (REMOTE.md §5.4): host, host/p1, …, host/p1/…/pk for
// "scheme://host/v2/p1/…/pk/blobs/<digest>".
func authCandidates(blobURL string) []string {
	var rest string
	switch {
	case strings.HasPrefix(blobURL, "https://"):
		rest = blobURL[len("https://"):]
	case strings.HasPrefix(blobURL, "http://"):
		rest = blobURL[len("http://"):]
	default:
		return nil
	}
	// Drop the text after the last '/' (the digest).
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return nil
	}
	segs := strings.Split(rest[:i], "/")
	if len(segs) == 0 || segs[0] == "" {
		return nil
	}
	cands := []string{segs[0]}
	// segs = [host, "v2", p1, ..., pk, "blobs"]: the 2nd segment and the
	// last one are dropped positionally.
	if len(segs) >= 3 {
		prefix := segs[0]
		for _, p := range segs[2 : len(segs)-1] {
			prefix += "/" + p
			cands = append(cands, prefix)
		}
	}
	return cands
}

// MatchAuths finds the credentials for blobURL in the raw JSON text of a
// docker-config-style "auths" object, with upstream's rule: entries are
// tried in document order, an entry is selected when its key equals one of
// the URL's candidates exactly, and the first selected entry that yields
// credentials wins. ok is false when nothing matches.
func MatchAuths(auths json.RawMessage, blobURL string) (username, password string, ok bool, err error) {
	cands := authCandidates(blobURL)
	if len(cands) == 0 {
		return "", "", false, nil
	}
	dec := json.NewDecoder(bytes.NewReader(auths))
	tok, err := dec.Token()
	if err != nil {
		return "", "", false, fmt.Errorf("auths: %w", err)
	}
	if d, isDelim := tok.(json.Delim); !isDelim || d != '{' {
		return "", "", false, errors.New("auths: not an object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", "", false, fmt.Errorf("auths: %w", err)
		}
		key, _ := tok.(string)
		var e authEntry
		if err := dec.Decode(&e); err != nil {
			return "", "", false, fmt.Errorf("auths entry: %w", err)
		}
		selected := false
		for _, c := range cands {
			if key == c {
				selected = true
				break
			}
		}
		if !selected {
			continue
		}
		if e.Auth != nil {
			raw, err := base64.StdEncoding.DecodeString(*e.Auth)
			if err != nil {
				continue
			}
			u, p, found := strings.Cut(string(raw), ":")
			if !found {
				continue
			}
			return u, p, true, nil
		}
		if e.Username != nil && e.Password != nil {
			return *e.Username, *e.Password, true, nil
		}
	}
	return "", "", false, nil
}

// FileCredentials reads a docker-config-style credential file
// ({"auths": {...}}) at every lookup. A file that other users can read is
// used, with one warning per path.
type FileCredentials struct {
	// Path is the credential file.
	Path string
	// Logger receives the permission warning (nil: slog.Default()).
	Logger *slog.Logger

	warned sync.Once
}

// Lookup reads the file and matches blobURL against its auths. A missing
// file means anonymous access, as upstream does.
func (f *FileCredentials) Lookup(_ context.Context, blobURL string) (string, string, error) {
	if f.Path == "" {
		return "", "", nil
	}
	fh, err := os.Open(f.Path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", "", nil
		}
		return "", "", fmt.Errorf("credential file: %w", err)
	}
	defer fh.Close()
	if st, err := fh.Stat(); err == nil && st.Mode().Perm()&0o044 != 0 {
		f.warned.Do(func() {
			logger(f.Logger).Warn("credential file is readable by other users; restrict it to its owner (chmod 600)",
				"path", f.Path, "mode", st.Mode().Perm().String())
		})
	}
	data, err := io.ReadAll(io.LimitReader(fh, 16<<20))
	if err != nil {
		return "", "", fmt.Errorf("credential file %s: %w", f.Path, err)
	}
	var doc struct {
		Auths json.RawMessage `json:"auths"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return "", "", fmt.Errorf("credential file %s: %w", f.Path, err)
	}
	if len(doc.Auths) == 0 {
		return "", "", nil
	}
	u, p, _, err := MatchAuths(doc.Auths, blobURL)
	if err != nil {
		return "", "", fmt.Errorf("credential file %s: %w", f.Path, err)
	}
	return u, p, nil
}

// HelperCredentials asks an HTTP credential helper (credentialConfig modes
// http, https and uds): GET <base>?remote_url=<blob URL>, answered with
// {"success": true, "data": {"auths": {...}}}.
type HelperCredentials struct {
	// base is the URL prefix the query is appended to.
	base   string
	client *http.Client
}

// HelperOptions configures a credential helper client.
type HelperOptions struct {
	// Mode is "http", "https" or "uds".
	Mode string
	// Path is the base URL (http, https; a missing scheme is added) or the
	// Unix socket path (uds).
	Path string
	// Timeout bounds one request (default 1 s, as upstream).
	Timeout time.Duration
	// ClientCertFile and ClientKeyFile give a client certificate for https
	// (the key may be inside the certificate file).
	ClientCertFile, ClientKeyFile string
	// ServerCAFile, when set, is the only CA trusted for the helper's
	// server certificate; otherwise the system roots are used.
	ServerCAFile string
}

// NewHelperCredentials returns a credential source that asks an HTTP
// helper.
func NewHelperCredentials(o HelperOptions) (*HelperCredentials, error) {
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.Path == "" {
		return nil, errors.New("credential helper: empty path")
	}
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: false, MaxIdleConnsPerHost: 2}
	h := &HelperCredentials{client: &http.Client{Transport: tr, Timeout: o.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	switch o.Mode {
	case "http":
		h.base = o.Path
		if !strings.Contains(h.base, "://") {
			h.base = "http://" + h.base
		}
	case "https":
		h.base = o.Path
		if !strings.Contains(h.base, "://") {
			h.base = "https://" + h.base
		}
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if o.ClientCertFile != "" {
			key := o.ClientKeyFile
			if key == "" {
				key = o.ClientCertFile
			}
			cert, err := tls.LoadX509KeyPair(o.ClientCertFile, key)
			if err != nil {
				return nil, fmt.Errorf("credential helper client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		if o.ServerCAFile != "" {
			pem, err := os.ReadFile(o.ServerCAFile)
			if err != nil {
				return nil, fmt.Errorf("credential helper server CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("credential helper server CA %s: no certificate found", o.ServerCAFile)
			}
			tc.RootCAs = pool
		}
		tr.TLSClientConfig = tc
	case "uds":
		sock := o.Path
		h.base = "http://localhost/auth"
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			if err := unix.Access(sock, unix.W_OK); err != nil {
				return nil, fmt.Errorf("credential socket %s: %w", sock, err)
			}
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}
	default:
		return nil, fmt.Errorf("credential helper: unknown mode %q (known: http, https, uds)", o.Mode)
	}
	return h, nil
}

// Lookup asks the helper. The blob URL is passed verbatim (not
// percent-encoded), as upstream's helpers expect.
func (h *HelperCredentials) Lookup(ctx context.Context, blobURL string) (string, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.base+"?remote_url="+blobURL, nil)
	if err != nil {
		return "", "", fmt.Errorf("credential helper request: %w", err)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return "", "", fmt.Errorf("credential helper: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("credential helper: status %d", resp.StatusCode)
	}
	var doc struct {
		Success bool `json:"success"`
		Data    struct {
			Auths json.RawMessage `json:"auths"`
		} `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc); err != nil {
		return "", "", fmt.Errorf("credential helper response: %w", err)
	}
	if !doc.Success {
		return "", "", errors.New("credential helper: success is false")
	}
	if len(doc.Data.Auths) == 0 {
		return "", "", nil
	}
	u, p, _, err := MatchAuths(doc.Data.Auths, blobURL)
	if err != nil {
		return "", "", fmt.Errorf("credential helper response: %w", err)
	}
	return u, p, nil
}

// CloseIdleConnections releases the helper client's idle connections.
func (h *HelperCredentials) CloseIdleConnections() { h.client.CloseIdleConnections() }

func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.Default()
	}
	return l
}
