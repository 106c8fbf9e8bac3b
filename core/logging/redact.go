package logging

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
)

// Redacted replaces a secret in log output.
const Redacted = "REDACTED"

var (
	// "Authorization: <anything>": the value always goes.
	authHeaderRE = regexp.MustCompile(`(?i)(authorization"?\s*[:=]\s*"?(?:(?:basic|bearer)\s+)?)([^\s",\[\]]+)`)
	// "Basic <b64>", "Bearer <token>" elsewhere; see schemeSecret.
	authSchemeRE = regexp.MustCompile(`(?i)\b(basic|bearer)(\s+)([A-Za-z0-9+/=._~\-]+)`)
	// user:password@ in URLs.
	userinfoRE = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.\-]*://)[^/\s@]*@`)
	// the query of any URL (signed URLs carry their signature there).
	urlQueryRE = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.\-]*://[^\s?#"']*)\?[^\s#"']*`)
	// key=value / "key":"value" pairs whose key names a secret.
	secretPairRE = regexp.MustCompile(`(?i)("?(?:password|passwd|secret|token|access_token|refresh_token|auth|identitytoken|registrytoken|x-amz-signature|signature)"?\s*[:=]\s*"?)([^\s",&}\]]+)`)
)

// Redact removes credentials from s: the argument of Basic/Bearer
// authorization, the user information and the query of URLs, and the value of
// key=value pairs whose key names a secret (password, token, auth, …).
func Redact(s string) string {
	if s == "" {
		return s
	}
	s = authHeaderRE.ReplaceAllString(s, "${1}"+Redacted)
	s = authSchemeRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := authSchemeRE.FindStringSubmatch(m)
		if sub[3] == Redacted || !schemeSecret(sub[3]) {
			return m
		}
		return sub[1] + sub[2] + Redacted
	})
	s = userinfoRE.ReplaceAllString(s, "${1}"+Redacted+"@")
	s = urlQueryRE.ReplaceAllString(s, "${1}?"+Redacted)
	s = secretPairRE.ReplaceAllString(s, "${1}"+Redacted)
	return s
}

// schemeSecret tells a credential after "Basic"/"Bearer" from an ordinary
// word ("Basic authentication", "Bearer realm"): credentials are long and
// carry digits or base64/JWT punctuation.
func schemeSecret(w string) bool {
	if len(w) < 8 {
		return false
	}
	return strings.ContainsAny(w, "0123456789+/=._~-")
}

// secretKey reports whether an attribute key names a secret whose whole value
// is dropped.
func secretKey(k string) bool {
	k = strings.ToLower(k)
	for _, w := range []string{"password", "passwd", "secret", "token", "authorization", "credential", "auth", "cookie", "signature"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// RedactHandler is a slog.Handler that removes credentials (see Redact) from
// the message and from every attribute before passing the record on.
// Attributes whose key names a secret lose their whole value; values of other
// kinds (errors, URLs, headers, Stringers) are rendered and redacted.
type RedactHandler struct {
	next slog.Handler
}

// NewRedactHandler wraps next.
func NewRedactHandler(next slog.Handler) *RedactHandler { return &RedactHandler{next: next} }

// Enabled reports whether the wrapped handler handles level.
func (h *RedactHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle redacts r and passes it on.
func (h *RedactHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, Redact(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

// WithAttrs redacts attrs and returns a handler that adds them.
func (h *RedactHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		red[i] = redactAttr(a)
	}
	return &RedactHandler{next: h.next.WithAttrs(red)}
}

// WithGroup returns a handler that opens group name.
func (h *RedactHandler) WithGroup(name string) slog.Handler {
	return &RedactHandler{next: h.next.WithGroup(name)}
}

func redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		g := v.Group()
		red := make([]any, len(g))
		for i, ga := range g {
			red[i] = redactAttr(ga)
		}
		return slog.Group(a.Key, red...)
	}
	if secretKey(a.Key) {
		if v.Kind() == slog.KindString && v.String() == "" {
			return slog.String(a.Key, "")
		}
		return slog.String(a.Key, Redacted)
	}
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, Redact(v.String()))
	case slog.KindAny:
		return slog.String(a.Key, Redact(render(v.Any())))
	default:
		return slog.Attr{Key: a.Key, Value: v}
	}
}

// render turns any attribute value into text, headers with their secret
// fields dropped.
func render(x any) string {
	switch t := x.(type) {
	case nil:
		return "<nil>"
	case error:
		return t.Error()
	case *url.URL:
		if t == nil {
			return "<nil>"
		}
		return t.String()
	case http.Header:
		c := t.Clone()
		for k := range c {
			if secretKey(k) {
				c[k] = []string{Redacted}
			}
		}
		return fmt.Sprint(map[string][]string(c))
	case *http.Request:
		if t == nil {
			return "<nil>"
		}
		return t.Method + " " + t.URL.String()
	default:
		return fmt.Sprint(x)
	}
}
