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

// ErrorClass is the kind of failure that ended a registry operation (a read
// or the opening of a blob) after its retries. Stats counts the operations
// that failed by class.
type ErrorClass uint8

// Error classes.
const (
	// ErrorHTTP4xx: the registry answered with a 4xx status (401/403 after
	// a fresh authentication round, 404, 429 that kept coming back).
	ErrorHTTP4xx ErrorClass = iota
	// ErrorHTTP5xx: the registry (or a proxy) kept answering with a 5xx
	// status.
	ErrorHTTP5xx
	// ErrorTransport: the exchange failed below HTTP (connection refused
	// or reset before a response, TLS, DNS).
	ErrorTransport
	// ErrorBody: a response failed its checks: a short or reset body, a
	// wrong or missing Content-Range, a length that does not match.
	ErrorBody
	// ErrorTimeout: an exchange or the operation's budget timed out.
	ErrorTimeout
	// ErrorOther: anything else (bad URLs, credential helpers, redirect
	// loops, unexpected statuses outside 4xx/5xx).
	ErrorOther
	numErrorClasses
)

var errorClassNames = [numErrorClasses]string{"http_4xx", "http_5xx", "transport", "body", "timeout", "other"}

// String returns the class's metric label: http_4xx, http_5xx, transport,
// body, timeout or other.
func (c ErrorClass) String() string {
	if c < numErrorClasses {
		return errorClassNames[c]
	}
	return "unknown"
}

// ErrorClasses lists every class, in order.
func ErrorClasses() []ErrorClass {
	cs := make([]ErrorClass, numErrorClasses)
	for i := range cs {
		cs[i] = ErrorClass(i)
	}
	return cs
}

// classedError tags an error with the class it counts under.
type classedError struct {
	class ErrorClass
	err   error
}

func (e *classedError) Error() string { return e.err.Error() }
func (e *classedError) Unwrap() error { return e.err }

// withClass tags err with class c (nil stays nil).
func withClass(c ErrorClass, err error) error {
	if err == nil {
		return nil
	}
	return &classedError{class: c, err: err}
}

// classOf returns the class err counts under.
func classOf(err error) ErrorClass {
	var ce *classedError
	switch {
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return ErrorTimeout
	case errors.As(err, &ce):
		return ce.class
	}
	return ErrorOther
}
