package config

import (
	"crypto/tls"

	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// DefaultCABundles are the CA bundle files upstream looks for at start-up,
// in order.
var DefaultCABundles = []string{"/etc/ssl/certs/ca-bundle.crt", "/etc/ssl/certs/ca-certificates.crt"}

// PrepareOptions tunes [Global.Prepare].
type PrepareOptions struct {
	// CABundles are the candidate CA bundle files, first existing wins;
	// nil means DefaultCABundles.
	CABundles []string
}

// Startup is what [Global.Prepare] found and decided.
type Startup struct {
	// CABundle is the CA bundle file found.
	CABundle string
	// Audit reports whether the audit log is written: enableAudit is true,
	// auditPath is set and the file could be opened.
	Audit bool
	// Warnings are the conditions upstream only logs (audit disabled
	// because its file cannot be opened, ...).
	Warnings []string
}

// startupStep is one step of upstream's start-up sequence (ImageService::init):
// check is the part that only looks at the configuration, apply the part
// that touches the system. Either may be nil.
type startupStep struct {
	check func(g *Global) error
	apply func(g *Global, opts *PrepareOptions, st *Startup) error
}

// startupSteps are in upstream's order (spec CONFIG.md §4); the project's own
// keys are checked last.
var startupSteps = []startupStep{
	{check: (*Global).checkIOEngine},
	{apply: prepareAudit},
	{apply: prepareLog},
	{check: checkCacheType},
	{apply: prepareCacheDir},
	{apply: prepareCABundle},
	{check: checkRegistryClient, apply: prepareClientCert},
	{check: checkExporter},
	{check: checkThread},
	{check: checkCacheParams},
	{check: checkGzipCache, apply: prepareGzipCache},
	{check: checkService},
	{check: checkRegistryTLS},
	{check: (*Global).checkCodecPlugins},
}

// Validate checks every value of the configuration that can be checked
// without touching the system, in upstream's start-up order, and returns
// the first problem. Tools that only touch local files need not call it;
// the daemons call [Global.Prepare], which includes it.
func (g *Global) Validate() error {
	for _, s := range startupSteps {
		if s.check != nil {
			if err := s.check(g); err != nil {
				return err
			}
		}
	}
	return nil
}

// Prepare runs upstream's start-up checks in upstream's order, including
// those that touch the system: it opens (creating) the log file and the audit
// file, creates the cache directory (and the gzip cache directory when that
// cache is enabled) with mode 0755, looks for a CA bundle, and loads the
// client certificate. Building the registry client, the caches, the exporter
// and the API server is left to the daemon, which does it after Prepare in
// the same order.
func (g *Global) Prepare(opts PrepareOptions) (*Startup, error) {
	if opts.CABundles == nil {
		opts.CABundles = DefaultCABundles
	}
	st := &Startup{}
	for _, s := range startupSteps {
		if s.check != nil {
			if err := s.check(g); err != nil {
				return nil, err
			}
		}
		if s.apply != nil {
			if err := s.apply(g, &opts, st); err != nil {
				return nil, err
			}
		}
	}
	return st, nil
}

func (g *Global) invalid(field, format string, args ...any) error {
	return fieldErr(g.source(), field, ErrInvalid, format, args...)
}

func (g *Global) startupErr(field, msg string, err error) error {
	return &FieldError{File: g.source(), Field: field, Kind: ErrStartup, Msg: msg, Err: err}
}

func appendOnly(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

func prepareAudit(g *Global, _ *PrepareOptions, st *Startup) error {
	switch {
	case !g.EnableAudit:
	case g.AuditPath == "":
		st.Warnings = append(st.Warnings, "enableAudit is true but auditPath is empty: audit log not written")
	default:
		if err := appendOnly(g.AuditPath); err != nil {
			st.Warnings = append(st.Warnings, fmt.Sprintf("audit log disabled: %v", err))
		} else {
			st.Audit = true
		}
	}
	return nil
}

func prepareLog(g *Global, _ *PrepareOptions, _ *Startup) error {
	ls := g.EffectiveLog()
	if ls.Path == "" {
		return nil
	}
	if err := appendOnly(ls.Path); err != nil {
		field := "logConfig.logPath"
		if ls.Legacy {
			field = "logPath"
		}
		return g.startupErr(field, "cannot open the log file", err)
	}
	return nil
}

func checkCacheType(g *Global) error {
	switch t := g.EffectiveCache().Type; t {
	case CacheFile, CacheDownload, CacheOCF:
		return nil
	default:
		return g.invalid(g.cacheTypeField(), "unknown cache type %q (known: file, download, ocf)", t)
	}
}

func prepareCacheDir(g *Global, _ *PrepareOptions, _ *Startup) error {
	c := g.EffectiveCache()
	field := "cacheConfig.cacheDir"
	if c.Legacy {
		field = "registryCacheDir"
	}
	if c.Dir == "" {
		return g.invalid(field, "is empty")
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return g.startupErr(field, "cannot create the cache directory", err)
	}
	return nil
}

func prepareCABundle(g *Global, opts *PrepareOptions, st *Startup) error {
	for _, p := range opts.CABundles {
		if _, err := os.Stat(p); err == nil {
			st.CABundle = p
			return nil
		}
	}
	return g.startupErr("", "no certificates found (looked for "+strings.Join(opts.CABundles, ", ")+")", fs.ErrNotExist)
}

func checkRegistryClient(g *Global) error {
	switch m := g.CredentialConfig.Mode; m {
	case "", CredentialFile, CredentialHTTP, CredentialHTTPS, CredentialUDS:
	default:
		// Upstream starts and sends every request anonymously; a typo
		// here would fail silently, so it is refused.
		return g.invalid("credentialConfig.mode", "unknown mode %q (known: file, http, https, uds, or empty for credentialFilePath)", m)
	}
	if g.CertConfig.KeyFile != "" && g.CertConfig.CertFile == "" {
		return g.invalid("certConfig.keyFile", "is set but certConfig.certFile is empty")
	}
	return nil
}

func prepareClientCert(g *Global, _ *PrepareOptions, _ *Startup) error {
	c := g.CertConfig
	if c.CertFile == "" {
		return nil
	}
	key := c.KeyFile
	if key == "" {
		key = c.CertFile
	}
	if _, err := tls.LoadX509KeyPair(c.CertFile, key); err != nil {
		return g.startupErr("certConfig.certFile", "cannot load the client certificate", err)
	}
	return nil
}

func checkExporter(g *Global) error {
	e := g.ExporterConfig
	if !e.Enable {
		return nil
	}
	if e.Port < 1 || e.Port > 65535 {
		return g.invalid("exporterConfig.port", "%d is not a TCP port (1-65535)", e.Port)
	}
	if e.Address != "" {
		if h, p := splitHostPort(e.Address); p != "" || !validHostPattern(h, false) {
			return g.invalid("exporterConfig.address", "%q is not an IP address or host name without a port", e.Address)
		}
	}
	return nil
}

func checkThread(g *Global) error {
	if g.EnableThread && g.EffectiveCache().Type == CacheFile {
		return g.invalid("enableThread", "multi-thread has not been valid for file cache")
	}
	return nil
}

func checkCacheParams(g *Global) error {
	c := g.EffectiveCache()
	switch c.Type {
	case CacheFile:
		if c.RefillSize == 0 || c.RefillSize&(c.RefillSize-1) != 0 || c.RefillSize%4096 != 0 {
			return g.invalid("cacheConfig.refillSize", "%d must be a power of two and a multiple of 4096 for the file cache", c.RefillSize)
		}
	case CacheOCF:
		if c.RefillSize == 0 || c.RefillSize%512 != 0 {
			return g.invalid("cacheConfig.refillSize", "%d must be a non-zero multiple of 512 for the ocf cache", c.RefillSize)
		}
		switch c.BlockSize {
		case 4096, 8192, 16384, 32768, 65536:
		default:
			return g.invalid("cacheConfig.blockSize", "%d must be 4096, 8192, 16384, 32768 or 65536", c.BlockSize)
		}
	}
	return nil
}

func checkGzipCache(g *Global) error {
	z := g.GzipCacheConfig
	if !z.Enable {
		return nil
	}
	if z.RefillSize == 0 || z.RefillSize%4096 != 0 {
		return g.invalid("gzipCacheConfig.refillSize", "%d must be a non-zero multiple of 4096", z.RefillSize)
	}
	if z.CacheDir == "" {
		return g.invalid("gzipCacheConfig.cacheDir", "is empty")
	}
	return nil
}

func prepareGzipCache(g *Global, _ *PrepareOptions, _ *Startup) error {
	if !g.GzipCacheConfig.Enable {
		return nil
	}
	if err := os.MkdirAll(g.GzipCacheConfig.CacheDir, 0o755); err != nil {
		return g.startupErr("gzipCacheConfig.cacheDir", "cannot create the gzip cache directory", err)
	}
	return nil
}

func checkService(g *Global) error {
	if !g.ServiceConfig.Enable {
		return nil
	}
	if _, err := g.ServiceConfig.ListenAddr(); err != nil {
		return g.invalid("serviceConfig.address", "%v", err)
	}
	return nil
}

// ListenAddr returns the host:port the live-snapshot API listens on. The
// address is a URL ("http://127.0.0.1:9862") or a bare "host:port"; the host
// must be an IP address or "localhost" (loopback), and the port is
// required. Upstream binds 0.0.0.0 for any host that is not a dotted IPv4
// address; this port refuses such hosts instead.
func (s ServiceConfig) ListenAddr() (string, error) {
	a := s.Address
	if !strings.Contains(a, "://") {
		a = "http://" + a
	}
	u, err := url.Parse(a)
	if err != nil {
		return "", fmt.Errorf("%q is not a URL: %w", s.Address, err)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		return "", fmt.Errorf("%q has no port", s.Address)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("%q: port %s is not a TCP port", s.Address, port)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	if net.ParseIP(host) == nil {
		return "", fmt.Errorf("%q: host %q is not an IP address", s.Address, host)
	}
	return net.JoinHostPort(host, port), nil
}

func checkRegistryTLS(g *Global) error {
	for i, e := range g.RegistryTLS.InsecureSkipVerify {
		if !validHostPattern(e, true) {
			return g.invalid(fmt.Sprintf("registryTLS.insecureSkipVerify[%d]", i),
				"%q is not a host, host:port or *.domain", e)
		}
	}
	return nil
}
