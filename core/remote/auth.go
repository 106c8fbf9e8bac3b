package remote

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// urlEntry is the resolved location of one blob URL (REMOTE.md §3.1 "URL
// info"). It is built once under concurrency: later users wait on ready.
type urlEntry struct {
	ready chan struct{}
	err   error

	// target is the URL of data requests: the redirect target, or the blob
	// URL itself.
	target     string
	redirected bool
	// auth is the Authorization value for data requests in self mode.
	auth string
	// size is the blob size learned while resolving (-1: unknown).
	size    int64
	expires time.Time
}

type tokenEntry struct {
	token   string
	expires time.Time
}

type sizeEntry struct {
	size    int64
	expires time.Time
}

// challenge is a parsed WWW-Authenticate value.
type challenge struct {
	scheme                string // "basic" or "bearer"
	realm, service, scope string
}

// parseChallenge parses a WWW-Authenticate value as upstream's v2 client
// does (REMOTE.md §3.3): Basic, or Bearer with realm, service and scope all
// present; commas inside quoted values are kept.
func parseChallenge(v string) (challenge, error) {
	switch {
	case strings.HasPrefix(v, "Basic ") || v == "Basic" ||
		len(v) >= 6 && strings.EqualFold(v[:6], "basic "):
		return challenge{scheme: "basic"}, nil
	case len(v) >= 7 && strings.EqualFold(v[:7], "bearer "):
	default:
		return challenge{}, fmt.Errorf("%w: unsupported authentication challenge", ErrAuth)
	}
	params := map[string]string{}
	for _, part := range splitParams(v[7:]) {
		k, val, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		k = strings.TrimSpace(k)
		val = strings.Trim(strings.TrimSpace(val), `"`)
		params[k] = val
	}
	ch := challenge{scheme: "bearer", realm: params["realm"], service: params["service"], scope: params["scope"]}
	if ch.realm == "" {
		return challenge{}, fmt.Errorf("%w: bearer challenge without realm", ErrAuth)
	}
	return ch, nil
}

// splitParams splits auth-params on commas outside quotes.
func splitParams(s string) []string {
	var out []string
	inQ := false
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			inQ = !inQ
		case ',':
			if !inQ {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// tokenURL builds the token request URL. Upstream concatenates verbatim;
// here the query values are escaped, which registries accept equally.
func (ch challenge) tokenURL() (string, error) {
	u, err := url.Parse(ch.realm)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("%w: bad token realm", ErrAuth)
	}
	q := u.Query()
	if ch.service != "" {
		q.Set("service", ch.service)
	}
	if ch.scope != "" {
		q.Set("scope", ch.scope)
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func basicValue(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// lookupCreds asks the credential source; a failure means anonymous, as
// upstream does, with a log line that names the source's error only.
func (c *Client) lookupCreds(ctx context.Context, blobURL string) (string, string) {
	u, p, err := c.creds.Lookup(ctx, blobURL)
	if err != nil {
		c.log.Warn("credential lookup failed; continuing anonymously", "url", Redact(blobURL), "err", err)
		return "", ""
	}
	return u, p
}

// entry returns the resolved location of blobURL, resolving it (once, even
// under concurrent callers) when absent or expired.
func (c *Client) entry(ctx context.Context, blobURL string) (*urlEntry, error) {
	c.mu.Lock()
	e, ok := c.urls[blobURL]
	if ok {
		select {
		case <-e.ready:
			if e.err == nil && time.Now().Before(e.expires) {
				e.expires = time.Now().Add(urlLife)
				c.mu.Unlock()
				return e, nil
			}
			delete(c.urls, blobURL)
			ok = false
		default:
		}
	}
	if !ok {
		e = &urlEntry{ready: make(chan struct{}), size: -1}
		c.urls[blobURL] = e
		c.mu.Unlock()
		err := c.resolve(ctx, blobURL, e)
		c.mu.Lock()
		e.err = err
		e.expires = time.Now().Add(urlLife)
		if err != nil && c.urls[blobURL] == e {
			delete(c.urls, blobURL)
		}
		close(e.ready)
		c.mu.Unlock()
		return e, err
	}
	c.mu.Unlock()
	select {
	case <-e.ready:
		return e, e.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// evict forgets e so that the next request redoes the whole resolution
// (upstream evicts on every data response that is not 200/206).
func (c *Client) evict(blobURL string, e *urlEntry) {
	c.mu.Lock()
	if c.urls[blobURL] == e {
		delete(c.urls, blobURL)
	}
	c.mu.Unlock()
}

// send performs one request with the client's common headers.
func (c *Client) send(ctx context.Context, target string, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadURL, Redact(target), err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", c.opts.UserAgent)
	c.stats.requests.Add(1)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, cleanNetErr(err)
	}
	return resp, nil
}

// cleanNetErr strips the URL (which may carry a signed query) from a
// transport error and marks it as a retryable bad exchange.
func cleanNetErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if errors.Is(ue.Err, context.Canceled) || errors.Is(ue.Err, context.DeadlineExceeded) {
			return fmt.Errorf("%s %s: %w", ue.Op, Redact(ue.URL), ue.Err)
		}
		return withClass(ErrorTransport, fmt.Errorf("%w: %s %s: %w", ErrBadResponse, ue.Op, Redact(ue.URL), ue.Err))
	}
	return withClass(ErrorTransport, fmt.Errorf("%w: %w", ErrBadResponse, err))
}

func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

func rangeHeader(off, n int64) http.Header {
	return http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", off, off+n-1)}}
}

// statusErr maps a final HTTP status to the package's sentinel errors.
func statusErr(what, u string, code int) error {
	var s error
	switch {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		s = ErrAuth
	case code == http.StatusNotFound:
		s = ErrNotFound
	case code == http.StatusTooManyRequests:
		s = ErrTooManyRequests
	default:
		s = ErrBadResponse
	}
	class := ErrorOther
	switch {
	case code >= 400 && code < 500:
		class = ErrorHTTP4xx
	case code >= 500 && code < 600:
		class = ErrorHTTP5xx
	}
	return withClass(class, fmt.Errorf("%s %s: status %d: %w", what, Redact(u), code, s))
}

// resolve runs the authentication dance for blobURL (REMOTE.md §3.3) and
// fills e. The probe, the Basic retry and the Bearer resolve are GETs with
// "Range: bytes=0-0", so a registry that serves the blob itself also tells
// its size.
func (c *Client) resolve(ctx context.Context, blobURL string, e *urlEntry) error {
	resp, err := c.send(ctx, blobURL, rangeHeader(0, 1))
	if err != nil {
		return err
	}
	if done, err := c.settle(blobURL, resp, e, ""); done {
		return err
	}
	// 401 or 403: authenticate.
	c.stats.authRounds.Add(1)
	chv := resp.Header.Get("WWW-Authenticate")
	drain(resp)
	if chv == "" {
		return fmt.Errorf("probe %s: status %d without WWW-Authenticate: %w", Redact(blobURL), resp.StatusCode, ErrAuth)
	}
	ch, err := parseChallenge(chv)
	if err != nil {
		return fmt.Errorf("probe %s: %w", Redact(blobURL), err)
	}
	if ch.scheme == "basic" {
		user, pass := c.lookupCreds(ctx, blobURL)
		if user == "" {
			return fmt.Errorf("registry %s asks for credentials and none are configured: %w", hostOf(blobURL), ErrAuth)
		}
		auth := basicValue(user, pass)
		resp, err := c.send(ctx, blobURL, withAuth(rangeHeader(0, 1), auth))
		if err != nil {
			return err
		}
		if done, err := c.settle(blobURL, resp, e, auth); done {
			return err
		}
		drain(resp)
		return fmt.Errorf("registry %s refused the credentials (status %d): %w", hostOf(blobURL), resp.StatusCode, ErrAuth)
	}
	// Bearer: a cached token first, then a fresh one.
	for fresh := false; ; fresh = true {
		tok, cached, err := c.token(ctx, blobURL, ch, fresh)
		if err != nil {
			return err
		}
		auth := ""
		if tok != "" {
			auth = "Bearer " + tok
		}
		resp, err := c.send(ctx, blobURL, withAuth(rangeHeader(0, 1), auth))
		if err != nil {
			return err
		}
		if done, err := c.settle(blobURL, resp, e, auth); done {
			return err
		}
		drain(resp)
		c.dropToken(ch.scope)
		if !cached || fresh {
			return fmt.Errorf("registry %s refused the token (status %d): %w", hostOf(blobURL), resp.StatusCode, ErrAuth)
		}
	}
}

func withAuth(h http.Header, auth string) http.Header {
	if auth != "" {
		h.Set("Authorization", auth)
	}
	return h
}

// settle interprets a resolution response. done is false for 401/403 (the
// caller authenticates); otherwise e is filled or err says why not. The
// body of a 2xx response is at most one byte and is discarded.
func (c *Client) settle(blobURL string, resp *http.Response, e *urlEntry, auth string) (done bool, err error) {
	switch code := resp.StatusCode; {
	case code == http.StatusOK || code == http.StatusPartialContent:
		defer drain(resp)
		e.target, e.redirected, e.auth = blobURL, false, auth
		if sz, err := responseSize(resp); err == nil {
			e.size = sz
		}
		return true, nil
	case code >= 300 && code < 400 && resp.Header.Get("Location") != "":
		drain(resp)
		loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
		if err != nil || (loc.Scheme != "http" && loc.Scheme != "https") {
			return true, fmt.Errorf("%w: redirect of %s to a bad location", ErrBadResponse, Redact(blobURL))
		}
		e.target, e.redirected, e.auth = loc.String(), true, ""
		return true, nil
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return false, nil
	default:
		drain(resp)
		return true, statusErr("probe", blobURL, code)
	}
}

// responseSize returns the total size a response tells: the total of
// Content-Range, or Content-Length of a 200.
func responseSize(resp *http.Response) (int64, error) {
	if cr := resp.Header.Get("Content-Range"); cr != "" {
		_, _, total, err := parseContentRange(cr)
		if err != nil {
			return 0, err
		}
		if total < 0 {
			return 0, withClass(ErrorBody, fmt.Errorf("%w: Content-Range without total", ErrBadResponse))
		}
		return total, nil
	}
	if resp.StatusCode == http.StatusOK && resp.ContentLength >= 0 {
		return resp.ContentLength, nil
	}
	return 0, withClass(ErrorBody, fmt.Errorf("%w: no size in response", ErrBadResponse))
}

// parseContentRange parses "bytes first-last/total" (total -1 for "*").
func parseContentRange(v string) (first, last, total int64, err error) {
	bad := func() (int64, int64, int64, error) {
		return 0, 0, 0, withClass(ErrorBody, fmt.Errorf("%w: bad Content-Range %q", ErrBadResponse, v))
	}
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return bad()
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return bad()
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return bad()
	}
	if _, err := fmt.Sscanf(a+" "+b, "%d %d", &first, &last); err != nil || first < 0 || last < first {
		return bad()
	}
	if tot == "*" {
		return first, last, -1, nil
	}
	if _, err := fmt.Sscanf(tot, "%d", &total); err != nil || total <= last {
		return bad()
	}
	return first, last, total, nil
}

// token returns a bearer token for the challenge's scope: the cached one
// unless fresh is set, else a new one fetched with the credentials of
// blobURL.
func (c *Client) token(ctx context.Context, blobURL string, ch challenge, fresh bool) (tok string, cached bool, err error) {
	if !fresh {
		c.mu.Lock()
		te, ok := c.tokens[ch.scope]
		if ok && time.Now().Before(te.expires) {
			c.mu.Unlock()
			return te.token, true, nil
		}
		c.mu.Unlock()
	}
	tu, err := ch.tokenURL()
	if err != nil {
		return "", false, err
	}
	hdr := http.Header{}
	user, pass := c.lookupCreds(ctx, blobURL)
	if user != "" {
		// Credentials go to the realm the registry named, and only over
		// TLS when the registry itself is reached over TLS.
		if strings.HasPrefix(blobURL, "https://") && !strings.HasPrefix(tu, "https://") {
			return "", false, fmt.Errorf("%w: registry %s names a token realm without TLS; refusing to send credentials there", ErrAuth, hostOf(blobURL))
		}
		hdr.Set("Authorization", basicValue(user, pass))
	}
	resp, err := c.send(ctx, tu, hdr)
	if err != nil {
		return "", false, fmt.Errorf("token request to %s: %w", hostOf(tu), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", false, fmt.Errorf("token request to %s: status %d: %w", hostOf(tu), resp.StatusCode, ErrAuth)
	}
	var doc struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc); err != nil {
		return "", false, fmt.Errorf("token response from %s: %w: %v", hostOf(tu), ErrAuth, err)
	}
	tok = doc.Token
	if tok == "" {
		tok = doc.AccessToken
	}
	if tok == "" {
		return "", false, fmt.Errorf("token response from %s has no token: %w", hostOf(tu), ErrAuth)
	}
	life := tokenLife
	if doc.ExpiresIn > 0 {
		// Renew a little before the registry would refuse it.
		life = time.Duration(doc.ExpiresIn)*time.Second*9/10 + 0
	}
	c.mu.Lock()
	c.tokens[ch.scope] = &tokenEntry{token: tok, expires: time.Now().Add(life)}
	c.mu.Unlock()
	return tok, false, nil
}

func (c *Client) dropToken(scope string) {
	c.mu.Lock()
	delete(c.tokens, scope)
	c.mu.Unlock()
}
