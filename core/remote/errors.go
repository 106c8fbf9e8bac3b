package remote

import (
	"context"
	"errors"
	"net/url"
	"strings"
)

// Errors returned by the client, wrapped with context. They match the
// conditions upstream reports with an errno (REMOTE.md §3.2).
var (
	// ErrAuth reports that the registry refused the credentials (401 or
	// 403 after a fresh authentication round). Upstream: EPERM.
	ErrAuth = errors.New("authentication failed")
	// ErrNotFound reports a blob the registry does not have (404).
	// Upstream: ENOENT.
	ErrNotFound = errors.New("blob not found")
	// ErrTooManyRequests reports a registry that kept answering 429.
	// Upstream: EBUSY.
	ErrTooManyRequests = errors.New("too many requests")
	// ErrTimeout reports that the time budget of an operation ran out.
	// Upstream: ETIMEDOUT.
	ErrTimeout = errors.New("timed out")
	// ErrBadResponse reports responses that kept failing their checks
	// (wrong status, wrong Content-Range, short body, reset connection).
	// Upstream: EIO.
	ErrBadResponse = errors.New("unexpected response")
	// ErrBadURL reports a blob URL that is not an absolute http(s) URL.
	ErrBadURL = errors.New("bad blob URL")
)

// Reason returns the text upstream writes into resultFile for a remote
// failure (CONFIG.md §5.7): "Authentication failed", "Get meta timedout",
// "No such file or directory", "Too many requests", "Unexpected response",
// or the error's own text.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrAuth):
		return "Authentication failed"
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return "Get meta timedout"
	case errors.Is(err, ErrNotFound):
		return "No such file or directory"
	case errors.Is(err, ErrTooManyRequests):
		return "Too many requests"
	case errors.Is(err, ErrBadResponse):
		return "Unexpected response"
	}
	return err.Error()
}

// Redact returns u without user information and query string: signed
// object-storage URLs carry credentials in their query, and URLs with
// user information carry a password. Every URL that reaches a log line or
// an error goes through Redact.
func Redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		// Keep only what cannot be a secret: up to the first '?' and
		// without anything before an '@'.
		if i := strings.IndexByte(u, '?'); i >= 0 {
			u = u[:i]
		}
		if i := strings.LastIndexByte(u, '@'); i >= 0 {
			u = u[i+1:]
		}
		return u
	}
	p.User = nil
	if p.RawQuery != "" {
		p.RawQuery = "REDACTED"
	}
	p.Fragment = ""
	return p.String()
}
