package remote

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Options.
const (
	// DefaultTimeout is the time budget of one operation (a read, the
	// opening of a blob), upstream's 30 s.
	DefaultTimeout = 30 * time.Second
	// DefaultAttemptTimeout bounds one HTTP exchange inside that budget,
	// so that a stalled connection is abandoned and retried.
	DefaultAttemptTimeout = 10 * time.Second
	// DefaultRetries is the number of retries after a failed attempt.
	DefaultRetries = 5
	// DefaultChunkSize is the largest range one request asks for when a
	// read is split into parallel requests.
	DefaultChunkSize = 1 << 20
	// DefaultMaxInFlight bounds the requests in flight per blob.
	DefaultMaxInFlight = 8
	// DefaultReadAhead is the number of chunks read ahead of a sequential
	// reader.
	DefaultReadAhead = 4
	// DefaultUserAgent is sent when Options.UserAgent is empty.
	DefaultUserAgent = "overlaybd-go"
)

// Options configures a Client. The zero value is usable: anonymous access,
// verified TLS, upstream's time budget.
type Options struct {
	// UserAgent is the User-Agent header of every request.
	UserAgent string
	// Credentials is asked for credentials at every authentication round
	// (nil: anonymous).
	Credentials Credentials
	// ClientCertFile and ClientKeyFile are a PEM client certificate and key
	// presented to registries (certConfig). An empty key file means the key
	// is in the certificate file.
	ClientCertFile, ClientKeyFile string
	// RootCAs are the CAs trusted for registry certificates (nil: the
	// system roots).
	RootCAs *x509.CertPool
	// InsecureHosts lists registry hosts ("host" or "host:port") whose
	// certificates are not verified. "*" disables verification for every
	// host, as upstream does. Verification is on for any host not listed.
	InsecureHosts []string
	// SkipVerify, when set, decides per "host:port" (or "host") whether a
	// registry's certificate goes unverified, in addition to InsecureHosts
	// (config.RegistryTLS.SkipVerify fits here).
	SkipVerify func(hostport string) bool
	// Timeout is the time budget of one operation (default 30 s).
	Timeout time.Duration
	// AttemptTimeout bounds one HTTP exchange (default 10 s).
	AttemptTimeout time.Duration
	// Retries is the number of retries of a failed exchange within the
	// budget (default 5; negative: none).
	Retries int
	// ChunkSize is the largest range of one request (default 1 MiB).
	ChunkSize int64
	// MaxInFlight bounds the requests in flight per blob (default 8).
	MaxInFlight int
	// ReadAhead is the number of chunks read ahead of a sequential reader
	// (default 4; negative: none).
	ReadAhead int
	// Transport, when set, replaces the client's own HTTP transport (TLS
	// options are then the transport's business).
	Transport http.RoundTripper
	// Logger receives the client's log lines (nil: slog.Default()).
	Logger *slog.Logger
}

// Stats are a client's counters.
type Stats struct {
	// Requests counts HTTP requests sent (all kinds); DataRequests the
	// ranged data requests among them.
	Requests, DataRequests uint64
	// Bytes counts body bytes received by data requests.
	Bytes uint64
	// Retries counts retried attempts; AuthRounds authentication rounds.
	Retries, AuthRounds uint64
	// Errors counts operations (reads of a range, the opening of a blob)
	// that failed for good, after their retries; ErrorsByClass splits
	// them by the class of the failure that ended them (indexed by
	// ErrorClass). Operations cancelled by their caller are not errors.
	Errors        uint64
	ErrorsByClass [numErrorClasses]uint64
}

// ErrorCounts returns ErrorsByClass keyed by class name (the
// overlaybd_registry_errors_by_class_total label).
func (s Stats) ErrorCounts() map[string]uint64 {
	m := make(map[string]uint64, numErrorClasses)
	for i, v := range s.ErrorsByClass {
		m[ErrorClass(i).String()] = v
	}
	return m
}

// Client is the registry client shared by every blob of a daemon. It is safe
// for concurrent use.
type Client struct {
	opts   Options
	http   *http.Client
	log    *slog.Logger
	creds  Credentials
	p2p    atomic.Pointer[string]
	closed atomic.Bool

	mu     sync.Mutex
	urls   map[string]*urlEntry   // blob URL → resolved location
	tokens map[string]*tokenEntry // scope → bearer token
	sizes  map[string]sizeEntry   // blob URL → size

	stats struct {
		requests, dataRequests, bytes, retries, authRounds atomic.Uint64
		errors                                             [numErrorClasses]atomic.Uint64
	}
}

// Lifetimes of the shared caches (REMOTE.md §3.1).
const (
	urlLife   = 300 * time.Second
	tokenLife = 30 * time.Second
	sizeLife  = 300 * time.Second
)

// NewClient returns a client.
func NewClient(o Options) (*Client, error) {
	if o.UserAgent == "" {
		o.UserAgent = DefaultUserAgent
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = DefaultAttemptTimeout
	}
	if o.Retries == 0 {
		o.Retries = DefaultRetries
	} else if o.Retries < 0 {
		o.Retries = 0
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.ReadAhead == 0 {
		o.ReadAhead = DefaultReadAhead
	} else if o.ReadAhead < 0 {
		o.ReadAhead = 0
	}
	c := &Client{
		opts:   o,
		log:    logger(o.Logger),
		creds:  o.Credentials,
		urls:   map[string]*urlEntry{},
		tokens: map[string]*tokenEntry{},
		sizes:  map[string]sizeEntry{},
	}
	if c.creds == nil {
		c.creds = Anonymous{}
	}
	rt := o.Transport
	if rt == nil {
		var err error
		rt, err = newTransport(o)
		if err != nil {
			return nil, err
		}
	}
	c.http = &http.Client{
		Transport: rt,
		// Redirects are followed by hand so that credentials never
		// travel to another host.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
}

// newTransport builds the client's transport: pooled keep-alive
// connections, no environment proxy (as upstream), TLS verified except for
// the insecure hosts.
func newTransport(o Options) (http.RoundTripper, error) {
	base := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: o.RootCAs}
	if o.ClientCertFile == "" && o.ClientKeyFile != "" {
		return nil, errors.New("certConfig: keyFile without certFile")
	}
	if o.ClientCertFile != "" {
		key := o.ClientKeyFile
		if key == "" {
			key = o.ClientCertFile
		}
		cert, err := tls.LoadX509KeyPair(o.ClientCertFile, key)
		if err != nil {
			return nil, fmt.Errorf("certConfig: load client certificate: %w", err)
		}
		base.Certificates = []tls.Certificate{cert}
	}
	mk := func(tc *tls.Config) *http.Transport {
		return &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:     tc,
			TLSHandshakeTimeout: 10 * time.Second,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
			ForceAttemptHTTP2:   true,
		}
	}
	secure := mk(base)
	if len(o.InsecureHosts) == 0 && o.SkipVerify == nil {
		return secure, nil
	}
	ins := base.Clone()
	ins.InsecureSkipVerify = true
	return &hostSwitch{secure: secure, insecure: mk(ins), hosts: o.InsecureHosts, skip: o.SkipVerify}, nil
}

// hostSwitch sends requests for the insecure hosts through a transport that
// does not verify certificates, and every other request through the
// verifying one.
type hostSwitch struct {
	secure, insecure *http.Transport
	hosts            []string
	skip             func(string) bool
}

func (h *hostSwitch) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme == "https" && (hostListed(h.hosts, r.URL) || h.skip != nil && h.skip(r.URL.Host)) {
		return h.insecure.RoundTrip(r)
	}
	return h.secure.RoundTrip(r)
}

// CloseIdleConnections closes both transports' idle connections.
func (h *hostSwitch) CloseIdleConnections() {
	h.secure.CloseIdleConnections()
	h.insecure.CloseIdleConnections()
}

func hostListed(hosts []string, u *url.URL) bool {
	for _, h := range hosts {
		if h == "*" || strings.EqualFold(h, u.Host) || strings.EqualFold(h, u.Hostname()) {
			return true
		}
	}
	return false
}

// SetP2PAddress makes data requests go through a P2P agent: the URL becomes
// address + "/" + the resolved blob URL (REMOTE.md §6). Authentication still
// talks to the registry directly. An empty address switches P2P off.
func (c *Client) SetP2PAddress(address string) {
	address = strings.TrimRight(address, "/")
	c.p2p.Store(&address)
}

// P2PAddress returns the P2P agent address in use ("" when off).
func (c *Client) P2PAddress() string {
	if p := c.p2p.Load(); p != nil {
		return *p
	}
	return ""
}

// Logger returns the client's logger.
func (c *Client) Logger() *slog.Logger { return c.log }

// Stats returns a snapshot of the client's counters.
func (c *Client) Stats() Stats {
	s := Stats{
		Requests:     c.stats.requests.Load(),
		DataRequests: c.stats.dataRequests.Load(),
		Bytes:        c.stats.bytes.Load(),
		Retries:      c.stats.retries.Load(),
		AuthRounds:   c.stats.authRounds.Load(),
	}
	for i := range s.ErrorsByClass {
		s.ErrorsByClass[i] = c.stats.errors[i].Load()
		s.Errors += s.ErrorsByClass[i]
	}
	return s
}

// Close releases idle connections. Blobs must be closed first.
func (c *Client) Close() error {
	c.closed.Store(true)
	c.http.CloseIdleConnections()
	if h, ok := c.creds.(interface{ CloseIdleConnections() }); ok {
		h.CloseIdleConnections()
	}
	return nil
}

// ProbeP2P reports whether a TCP connection to the agent at address (a URL;
// default ports 80/443) can be made within timeout. Names are resolved
// (upstream only accepts IPv4 literals).
func ProbeP2P(ctx context.Context, address string, timeout time.Duration) bool {
	u, err := url.Parse(address)
	if err != nil || u.Host == "" {
		return false
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// hostname is used for log lines that identify a registry.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}
