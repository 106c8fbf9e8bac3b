package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"

	"github.com/overlaybd-go/overlaybd/core"
)

// DefaultGlobalPath is where the daemon and the tools look for overlaybd.json
// when no path is given.
const DefaultGlobalPath = "/etc/overlaybd/overlaybd.json"

// defaultGlobalPath is DefaultGlobalPath; tests point it elsewhere.
var defaultGlobalPath = DefaultGlobalPath

// builtinDefaults names the source of a configuration that did not come from
// a file, in error messages.
const builtinDefaults = "built-in defaults"

// Global is overlaybd.json, the daemon-wide configuration. Field names,
// types and defaults are upstream's (struct GlobalConfig in overlaybd's
// src/config.h) except where a field says "ours". Legacy top-level keys are
// kept as they are in the file; the Effective* methods apply upstream's rule
// for when they count.
type Global struct {
	// File is the path the configuration was loaded from; empty for
	// built-in defaults. Not part of the JSON.
	File string `json:"-"`

	// LogConfig holds the preferred log settings.
	LogConfig LogConfig `json:"logConfig"`
	// LogLevel is the legacy log level, used only when LogConfig.LogPath
	// is empty. Default 1.
	LogLevel uint32 `json:"logLevel"`
	// LogPath is the legacy log file, used only when LogConfig.LogPath is
	// empty. Empty keeps logs on standard output. Default
	// /var/log/overlaybd.log.
	LogPath string `json:"logPath"`

	// CacheConfig holds the preferred settings of the registry cache.
	CacheConfig CacheConfig `json:"cacheConfig"`
	// CacheType is the legacy cache type, used only when
	// CacheConfig.CacheType is empty. Default "file".
	CacheType string `json:"cacheType"`
	// RegistryCacheDir is the legacy cache directory (same condition).
	// Default /opt/overlaybd/registry_cache.
	RegistryCacheDir string `json:"registryCacheDir"`
	// RegistryCacheSizeGB is the legacy cache size in GiB (same
	// condition). Default 4.
	RegistryCacheSizeGB uint32 `json:"registryCacheSizeGB"`

	// GzipCacheConfig configures the cache of decompressed gzip (turboOCI)
	// data.
	GzipCacheConfig GzipCacheConfig `json:"gzipCacheConfig"`

	// CredentialConfig says how registry credentials are obtained.
	CredentialConfig CredentialConfig `json:"credentialConfig"`
	// CredentialFilePath is the legacy credential file, used (in "file"
	// mode) only when CredentialConfig.Mode is empty. Default
	// /opt/overlaybd/cred.json.
	CredentialFilePath string `json:"credentialFilePath"`

	// IOEngine selects the IO engine for local layer files: upstream's
	// numbers 0 psync, 1 libaio, 2 posixaio, plus (ours) 3 io_uring and
	// the names. Default 0.
	IOEngine IOEngine `json:"ioEngine"`

	// Download holds the default background-download settings of devices
	// whose config.v1.json has no "download" object.
	Download DownloadConfig `json:"download"`

	// EnableAudit enables the audit log. Default true.
	EnableAudit bool `json:"enableAudit"`
	// AuditPath is the audit log file. Default
	// /var/log/overlaybd-audit.log.
	AuditPath string `json:"auditPath"`
	// EnableThread runs every device on its own OS thread upstream; it is
	// not allowed with the file cache. Default false.
	EnableThread bool `json:"enableThread"`

	// P2PConfig routes registry data requests through a P2P agent.
	P2PConfig P2PConfig `json:"p2pConfig"`
	// ExporterConfig configures the Prometheus exporter.
	ExporterConfig ExporterConfig `json:"exporterConfig"`
	// RegistryFsVersion selects the registry client: exactly "v2" selects
	// the built-in client, anything else upstream's libcurl one. Default
	// "v2".
	RegistryFsVersion string `json:"registryFsVersion"`
	// PrefetchConfig configures trace prefetching.
	PrefetchConfig PrefetchConfig `json:"prefetchConfig"`
	// CertConfig holds the client TLS certificate for registry
	// connections.
	CertConfig CertConfig `json:"certConfig"`
	// UserAgent is the User-Agent header of registry requests. Default
	// "overlaybd/<version>" (see [DefaultUserAgent]).
	UserAgent string `json:"userAgent"`
	// ServiceConfig configures the live-snapshot HTTP API.
	ServiceConfig ServiceConfig `json:"serviceConfig"`

	// RegistryTLS (ours) tunes TLS towards registries. Certificates are
	// verified by default (upstream never verifies them).
	RegistryTLS RegistryTLS `json:"registryTLS"`
	// CodecPlugins (ours) lists out-of-process codec plugins that serve
	// ZFile algorithms in place of the built-in codecs.
	CodecPlugins []CodecPlugin `json:"codecPlugins"`
}

// LogConfig is "logConfig".
type LogConfig struct {
	// LogLevel is 0 DEBUG, 1 INFO, 2 WARN, 3 ERROR, 4 FATAL. Default 1.
	LogLevel uint32 `json:"logLevel"`
	// LogPath is the log file. Empty (the default) means: use the legacy
	// top-level logLevel and logPath with 10 MiB × 3 rotation.
	LogPath string `json:"logPath"`
	// LogSizeMB is the rotation size in MiB. Default 10.
	LogSizeMB uint32 `json:"logSizeMB"`
	// LogRotateNum is the number of rotated files kept. Default 3.
	LogRotateNum int `json:"logRotateNum"`
}

// CacheConfig is "cacheConfig".
type CacheConfig struct {
	// CacheType is "file", "download" or "ocf". Empty (the default) means:
	// use the legacy top-level cacheType, registryCacheDir and
	// registryCacheSizeGB.
	CacheType string `json:"cacheType"`
	// CacheDir is the cache directory. Default
	// /opt/overlaybd/registry_cache.
	CacheDir string `json:"cacheDir"`
	// CacheSizeGB is the capacity in GiB (file and ocf). Default 4.
	CacheSizeGB uint32 `json:"cacheSizeGB"`
	// RefillSize is the fetch granularity in bytes, always taken from
	// here, even in legacy mode. Default 262144.
	RefillSize uint32 `json:"refillSize"`
	// BlockSize is the ocf cache-line size: 4096, 8192, 16384, 32768 or
	// 65536. Default 65536.
	BlockSize uint32 `json:"blockSize"`
}

// GzipCacheConfig is "gzipCacheConfig".
type GzipCacheConfig struct {
	// Enable creates the gzip cache. Default false.
	Enable bool `json:"enable"`
	// CacheDir is its directory. Default /opt/overlaybd/gzip_cache.
	CacheDir string `json:"cacheDir"`
	// CacheSizeGB is its capacity in GiB. Default 4.
	CacheSizeGB uint32 `json:"cacheSizeGB"`
	// RefillSize is the refill unit in bytes, a multiple of 4096. Default
	// 1048576 (upstream's README wrongly says 262144).
	RefillSize uint32 `json:"refillSize"`
}

// CredentialConfig is "credentialConfig".
type CredentialConfig struct {
	// Mode is "file", "http", "https" or "uds"; empty (the default) means
	// the legacy credentialFilePath in file mode.
	Mode string `json:"mode"`
	// Path is the file path, base URL or Unix socket path of the mode.
	Path string `json:"path"`
	// Timeout is the time allowed for one credential request, in seconds.
	// Default 1.
	Timeout int `json:"timeout"`
	// ClientCertPath is the client certificate (PEM) of https mode.
	ClientCertPath string `json:"client_cert_path"`
	// ClientKeyPath is the client key of https mode, if separate.
	ClientKeyPath string `json:"client_key_path"`
	// ServerCAPath, in https mode, is the only CA the helper's certificate
	// is verified against.
	ServerCAPath string `json:"server_ca_path"`
}

// DownloadConfig is "download", globally and per device.
type DownloadConfig struct {
	// Enable downloads every remote layer blob in the background. Default
	// false.
	Enable bool `json:"enable"`
	// Delay is the base delay in seconds before downloading starts.
	// Default 300.
	Delay int `json:"delay"`
	// DelayExtra is the bound of a random extra delay in seconds; a value
	// ≤ 0 counts as 30. Default 30.
	DelayExtra int `json:"delayExtra"`
	// MaxMBps limits each download's read rate in MiB/s; ≤ 0 means
	// unlimited. Default 100.
	MaxMBps int `json:"maxMBps"`
	// TryCnt is the number of attempts per layer. Default 5.
	TryCnt int `json:"tryCnt"`
	// BlockSize is the size of each registry read while downloading.
	// Default 262144.
	BlockSize uint32 `json:"blockSize"`
}

// P2PConfig is "p2pConfig".
type P2PConfig struct {
	// Enable routes registry data requests through the agent. Default
	// false.
	Enable bool `json:"enable"`
	// Address is the agent's URL prefix, scheme included. Default
	// http://localhost:9731/accelerator.
	Address string `json:"address"`
}

// ExporterConfig is "exporterConfig".
type ExporterConfig struct {
	// Enable starts the Prometheus endpoint. Default false.
	Enable bool `json:"enable"`
	// URIPrefix is the path prefix served. Default /metrics.
	URIPrefix string `json:"uriPrefix"`
	// Port is the TCP port. Default 9863.
	Port int `json:"port"`
	// UpdateInterval is accepted and ignored, as upstream ignores it.
	// Default 60000000.
	UpdateInterval uint64 `json:"updateInterval"`
	// Address (ours) is the one IP address or host name to bind, without
	// a port. Empty (the default) binds every interface, as upstream.
	Address string `json:"address"`
}

// ListenAddr returns the host:port the exporter listens on.
func (e ExporterConfig) ListenAddr() string {
	return joinHostPort(e.Address, e.Port)
}

// PrefetchConfig is "prefetchConfig".
type PrefetchConfig struct {
	// Concurrency is the number of trace replay workers. Default 16.
	Concurrency int `json:"concurrency"`
}

// CertConfig is "certConfig".
type CertConfig struct {
	// CertFile is the client certificate (PEM) for registry connections.
	CertFile string `json:"certFile"`
	// KeyFile is its key (PEM); empty means the key is in CertFile.
	KeyFile string `json:"keyFile"`
}

// ServiceConfig is "serviceConfig".
type ServiceConfig struct {
	// Enable starts the live-snapshot API. Default false.
	Enable bool `json:"enable"`
	// Address is the listen URL; only host and port are used. Default
	// http://127.0.0.1:9862.
	Address string `json:"address"`
}

// Defaults of the global configuration.
const (
	DefaultLogPath          = "/var/log/overlaybd.log"
	DefaultAuditPath        = "/var/log/overlaybd-audit.log"
	DefaultCacheDir         = "/opt/overlaybd/registry_cache"
	DefaultGzipCacheDir     = "/opt/overlaybd/gzip_cache"
	DefaultCredentialFile   = "/opt/overlaybd/cred.json"
	DefaultP2PAddress       = "http://localhost:9731/accelerator"
	DefaultServiceAddress   = "http://127.0.0.1:9862"
	DefaultExporterPrefix   = "/metrics"
	DefaultExporterPort     = 9863
	DefaultRefillSize       = 262144
	DefaultGzipRefillSize   = 1 << 20
	DefaultOCFBlockSize     = 65536
	DefaultDownloadBlock    = 262144
	DefaultPrefetchWorkers  = 16
	DefaultUpdateIntervalUS = 60_000_000
)

// DefaultDownload returns the defaults of a "download" object.
func DefaultDownload() DownloadConfig {
	return DownloadConfig{Delay: 300, DelayExtra: 30, MaxMBps: 100, TryCnt: 5, BlockSize: DefaultDownloadBlock}
}

// DefaultGlobal returns the configuration of an empty overlaybd.json.
func DefaultGlobal() *Global {
	return &Global{
		LogConfig:           LogConfig{LogLevel: 1, LogSizeMB: 10, LogRotateNum: 3},
		LogLevel:            1,
		LogPath:             DefaultLogPath,
		CacheConfig:         CacheConfig{CacheDir: DefaultCacheDir, CacheSizeGB: 4, RefillSize: DefaultRefillSize, BlockSize: DefaultOCFBlockSize},
		CacheType:           "file",
		RegistryCacheDir:    DefaultCacheDir,
		RegistryCacheSizeGB: 4,
		GzipCacheConfig:     GzipCacheConfig{CacheDir: DefaultGzipCacheDir, CacheSizeGB: 4, RefillSize: DefaultGzipRefillSize},
		CredentialConfig:    CredentialConfig{Timeout: 1},
		CredentialFilePath:  DefaultCredentialFile,
		IOEngine:            "0",
		Download:            DefaultDownload(),
		EnableAudit:         true,
		AuditPath:           DefaultAuditPath,
		P2PConfig:           P2PConfig{Address: DefaultP2PAddress},
		ExporterConfig:      ExporterConfig{URIPrefix: DefaultExporterPrefix, Port: DefaultExporterPort, UpdateInterval: DefaultUpdateIntervalUS},
		RegistryFsVersion:   "v2",
		PrefetchConfig:      PrefetchConfig{Concurrency: DefaultPrefetchWorkers},
		UserAgent:           DefaultUserAgent(),
		ServiceConfig:       ServiceConfig{Address: DefaultServiceAddress},
	}
}

var userAgent = sync.OnceValue(func() string {
	v := "devel"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 && v == "devel" {
				v = s.Value[:12]
			}
		}
	}
	return "overlaybd/" + v
})

// DefaultUserAgent returns the default "userAgent": "overlaybd/" followed by
// the module version of the binary, its VCS revision, or "devel".
func DefaultUserAgent() string { return userAgent() }

// LoadGlobal reads overlaybd.json. An empty path means DefaultGlobalPath,
// and then a missing file yields the built-in defaults; a path given
// explicitly must exist. Only the file is read: see [Global.Validate] and
// [Global.Prepare] for the start-up checks.
func LoadGlobal(path string) (*Global, error) {
	explicit := path != ""
	if !explicit {
		path = defaultGlobalPath
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if !explicit && errors.Is(err, fs.ErrNotExist) {
			return DefaultGlobal(), nil
		}
		return nil, &FieldError{File: path, Kind: ErrInvalid, Msg: "cannot read the global configuration", Err: err}
	}
	return ParseGlobal(data, path)
}

// ParseGlobal parses the content of overlaybd.json. file names the source in
// errors, and its folder is the base of relative codec plugin paths (the
// current directory when file is empty).
func ParseGlobal(data []byte, file string) (*Global, error) {
	doc, err := parseDocument(data, file)
	if err != nil {
		return nil, err
	}
	g := DefaultGlobal()
	g.File = file
	r := newReader(file, doc)

	lc, _ := r.object("logConfig")
	lc.uint32("logLevel", &g.LogConfig.LogLevel)
	lc.str("logPath", &g.LogConfig.LogPath)
	lc.uint32("logSizeMB", &g.LogConfig.LogSizeMB)
	lc.int32("logRotateNum", &g.LogConfig.LogRotateNum)
	r.uint32("logLevel", &g.LogLevel)
	r.str("logPath", &g.LogPath)

	cc, _ := r.object("cacheConfig")
	cc.str("cacheType", &g.CacheConfig.CacheType)
	cc.str("cacheDir", &g.CacheConfig.CacheDir)
	cc.uint32("cacheSizeGB", &g.CacheConfig.CacheSizeGB)
	cc.uint32("refillSize", &g.CacheConfig.RefillSize)
	cc.uint32("blockSize", &g.CacheConfig.BlockSize)
	r.str("cacheType", &g.CacheType)
	r.str("registryCacheDir", &g.RegistryCacheDir)
	r.uint32("registryCacheSizeGB", &g.RegistryCacheSizeGB)

	gz, _ := r.object("gzipCacheConfig")
	gz.boolean("enable", &g.GzipCacheConfig.Enable)
	gz.str("cacheDir", &g.GzipCacheConfig.CacheDir)
	gz.uint32("cacheSizeGB", &g.GzipCacheConfig.CacheSizeGB)
	gz.uint32("refillSize", &g.GzipCacheConfig.RefillSize)

	cr, _ := r.object("credentialConfig")
	cr.str("mode", &g.CredentialConfig.Mode)
	cr.str("path", &g.CredentialConfig.Path)
	cr.int32("timeout", &g.CredentialConfig.Timeout)
	cr.str("client_cert_path", &g.CredentialConfig.ClientCertPath)
	cr.str("client_key_path", &g.CredentialConfig.ClientKeyPath)
	cr.str("server_ca_path", &g.CredentialConfig.ServerCAPath)
	r.str("credentialFilePath", &g.CredentialFilePath)

	g.IOEngine = readIOEngine(r, "ioEngine", g.IOEngine)

	dl, _ := r.object("download")
	readDownload(dl, &g.Download)

	r.boolean("enableAudit", &g.EnableAudit)
	r.str("auditPath", &g.AuditPath)
	r.boolean("enableThread", &g.EnableThread)

	p2p, _ := r.object("p2pConfig")
	p2p.boolean("enable", &g.P2PConfig.Enable)
	p2p.str("address", &g.P2PConfig.Address)

	ex, _ := r.object("exporterConfig")
	ex.boolean("enable", &g.ExporterConfig.Enable)
	ex.str("uriPrefix", &g.ExporterConfig.URIPrefix)
	ex.int32("port", &g.ExporterConfig.Port)
	ex.uint64("updateInterval", &g.ExporterConfig.UpdateInterval)
	ex.str("address", &g.ExporterConfig.Address)

	r.str("registryFsVersion", &g.RegistryFsVersion)
	pf, _ := r.object("prefetchConfig")
	pf.int32("concurrency", &g.PrefetchConfig.Concurrency)
	ct, _ := r.object("certConfig")
	ct.str("certFile", &g.CertConfig.CertFile)
	ct.str("keyFile", &g.CertConfig.KeyFile)
	r.str("userAgent", &g.UserAgent)
	sc, _ := r.object("serviceConfig")
	sc.boolean("enable", &g.ServiceConfig.Enable)
	sc.str("address", &g.ServiceConfig.Address)

	tl, _ := r.object("registryTLS")
	tl.strings("insecureSkipVerify", &g.RegistryTLS.InsecureSkipVerify)

	elems, field := r.array("codecPlugins")
	for i, e := range elems {
		er := r.element(field, i, e)
		var p CodecPlugin
		er.str("path", &p.Path)
		er.strings("algorithms", &p.Algorithms)
		er.strings("args", &p.Args)
		er.str("sha256", &p.SHA256)
		if p.Path != "" && !filepath.IsAbs(p.Path) {
			abs, err := filepath.Abs(filepath.Join(filepath.Dir(file), p.Path))
			if err != nil {
				return nil, &FieldError{File: file, Field: field + "[" + strconv.Itoa(i) + "].path", Kind: ErrInvalid, Msg: "cannot make the path absolute", Err: err}
			}
			p.Path = abs
		}
		g.CodecPlugins = append(g.CodecPlugins, p)
	}
	if *r.err != nil {
		return nil, *r.err
	}
	// What every binary needs to touch local files is checked now; the
	// rest waits for Validate or Prepare.
	if err := g.checkIOEngine(); err != nil {
		return nil, err
	}
	if err := g.checkCodecPlugins(); err != nil {
		return nil, err
	}
	return g, nil
}

func readDownload(r reader, d *DownloadConfig) {
	r.boolean("enable", &d.Enable)
	r.int32("delay", &d.Delay)
	r.int32("delayExtra", &d.DelayExtra)
	r.int32("maxMBps", &d.MaxMBps)
	r.int32("tryCnt", &d.TryCnt)
	r.uint32("blockSize", &d.BlockSize)
}

// source names the configuration in errors.
func (g *Global) source() string {
	if g.File == "" {
		return builtinDefaults
	}
	return g.File
}

// LogSettings are the log settings in force after upstream's legacy rule.
type LogSettings struct {
	// Level is 0 DEBUG, 1 INFO, 2 WARN, 3 ERROR, 4 FATAL.
	Level uint32
	// Path is the log file; empty means standard output.
	Path string
	// SizeMB is the rotation size in MiB (at least 1).
	SizeMB uint32
	// RotateNum is the number of rotated files kept (0 to 30).
	RotateNum int
	// Legacy reports that the top-level logLevel/logPath were used.
	Legacy bool
}

// EffectiveLog applies upstream's rule: when logConfig.logPath is empty the
// settings are the top-level logLevel and logPath with 10 MiB × 3 rotation,
// otherwise all four come from logConfig. The logging library's limits
// (at least 1 MiB, at most 30 files) are applied.
func (g *Global) EffectiveLog() LogSettings {
	s := LogSettings{Level: g.LogConfig.LogLevel, Path: g.LogConfig.LogPath,
		SizeMB: g.LogConfig.LogSizeMB, RotateNum: g.LogConfig.LogRotateNum}
	if s.Path == "" {
		s = LogSettings{Level: g.LogLevel, Path: g.LogPath, SizeMB: 10, RotateNum: 3, Legacy: true}
	}
	s.SizeMB = max(s.SizeMB, 1)
	s.RotateNum = min(max(s.RotateNum, 0), 30)
	return s
}

// Cache types.
const (
	CacheFile     = "file"
	CacheDownload = "download"
	CacheOCF      = "ocf"
)

// CacheSettings are the registry cache settings in force after upstream's
// legacy rule.
type CacheSettings struct {
	// Type is "file", "download" or "ocf".
	Type string
	// Dir is the cache directory.
	Dir string
	// SizeGB is the capacity in GiB.
	SizeGB uint32
	// RefillSize is the fetch granularity in bytes.
	RefillSize uint32
	// BlockSize is the ocf cache-line size.
	BlockSize uint32
	// Legacy reports that the top-level cacheType, registryCacheDir and
	// registryCacheSizeGB were used.
	Legacy bool
}

// EffectiveCache applies upstream's rule: when cacheConfig.cacheType is
// empty, type, directory and size come from the legacy top-level keys;
// refillSize and blockSize always come from cacheConfig.
func (g *Global) EffectiveCache() CacheSettings {
	c := g.CacheConfig
	s := CacheSettings{Type: c.CacheType, Dir: c.CacheDir, SizeGB: c.CacheSizeGB,
		RefillSize: c.RefillSize, BlockSize: c.BlockSize}
	if s.Type == "" {
		s.Type, s.Dir, s.SizeGB, s.Legacy = g.CacheType, g.RegistryCacheDir, g.RegistryCacheSizeGB, true
	}
	return s
}

// cacheTypeField names the field the cache type came from.
func (g *Global) cacheTypeField() string {
	if g.CacheConfig.CacheType == "" {
		return "cacheType"
	}
	return "cacheConfig.cacheType"
}

// Credential modes.
const (
	CredentialFile  = "file"
	CredentialHTTP  = "http"
	CredentialHTTPS = "https"
	CredentialUDS   = "uds"
)

// EffectiveCredential applies upstream's rule: when credentialConfig.mode
// is empty, credentials come from the legacy credentialFilePath in file
// mode. The result has a non-empty Mode.
func (g *Global) EffectiveCredential() CredentialConfig {
	c := g.CredentialConfig
	if c.Mode == "" {
		c.Mode, c.Path = CredentialFile, g.CredentialFilePath
	}
	return c
}

// IOEngine is the "ioEngine" value as written: the decimal form of a JSON
// number (upstream's 0 psync, 1 libaio, 2 posixaio, and ours 3 io_uring) or
// one of the names psync, libaio, posixaio, io_uring. The C++ daemon accepts
// only the numbers 0 to 2.
type IOEngine string

// ioEngineNames maps the accepted numbers to the engine names.
var ioEngineNames = []string{"psync", "libaio", "posixaio", "io_uring"}

// Name returns the engine's registry name, or an error for a value that is
// neither a known number nor a known name. The zero value is the default,
// psync.
func (e IOEngine) Name() (string, error) {
	if e == "" {
		return ioEngineNames[0], nil
	}
	if n, ok := e.Number(); ok {
		if n < len(ioEngineNames) {
			return ioEngineNames[n], nil
		}
	} else {
		for _, name := range ioEngineNames {
			if string(e) == name {
				return name, nil
			}
		}
	}
	return "", fmt.Errorf("unknown io engine %q (known: 0 psync, 1 libaio, 2 posixaio, 3 io_uring)", string(e))
}

// Number reports whether the value was written as a number, and the number.
func (e IOEngine) Number() (int, bool) {
	if e == "" || strings.TrimLeft(string(e), "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(string(e))
	return n, err == nil
}

// Factory resolves the engine through core.Engines (the engine's package
// must be linked in, e.g. through engines/all).
func (e IOEngine) Factory() (name string, f core.EngineFactory, err error) {
	name, err = e.Name()
	if err != nil {
		return "", nil, err
	}
	return core.Engines.Resolve(name)
}

// MarshalJSON writes a number when the value was a number, else the name;
// the zero value is written as 0.
func (e IOEngine) MarshalJSON() ([]byte, error) {
	if e == "" {
		return []byte("0"), nil
	}
	if _, ok := e.Number(); ok {
		return []byte(e), nil
	}
	return json.Marshal(string(e))
}

func readIOEngine(r reader, key string, def IOEngine) IOEngine {
	v, field := r.get(key)
	if v == nil {
		return def
	}
	switch v.kind {
	case kindString:
		if v.str == "" {
			r.fail(field, ErrInvalid, "is empty (known: 0 psync, 1 libaio, 2 posixaio, 3 io_uring)")
			return def
		}
		if _, isNumber := IOEngine(v.str).Number(); isNumber {
			r.fail(field, ErrType, "is the string %q; write numbers as JSON numbers", v.str)
			return def
		}
		return IOEngine(v.str)
	case kindNumber:
		if _, u, ok := r.integer(v, field, 0, 1<<32-1); ok {
			return IOEngine(strconv.FormatUint(u, 10))
		}
	default:
		r.fail(field, ErrType, "is %s, want a number or an engine name", v.kind)
	}
	return def
}

func (g *Global) checkIOEngine() error {
	if _, err := g.IOEngine.Name(); err != nil {
		return &FieldError{File: g.source(), Field: "ioEngine", Kind: ErrInvalid, Msg: err.Error()}
	}
	return nil
}

// RegistryTLS is "registryTLS" (ours).
type RegistryTLS struct {
	// InsecureSkipVerify lists the registries whose TLS certificate is not
	// verified: "host" (any port), "host:port", or "*.domain" (every
	// subdomain of domain, any port). Matching ignores case. Certificates
	// of every other registry are verified against the system roots.
	InsecureSkipVerify []string `json:"insecureSkipVerify"`
}

// SkipVerify reports whether the certificate of the registry at hostport
// ("host" or "host:port", as in a URL) is exempt from verification.
func (t RegistryTLS) SkipVerify(hostport string) bool {
	host, port := splitHostPort(strings.ToLower(hostport))
	for _, e := range t.InsecureSkipVerify {
		eh, ep := splitHostPort(strings.ToLower(e))
		if ep != "" && ep != port {
			continue
		}
		if suffix, ok := strings.CutPrefix(eh, "*"); ok {
			if len(host) > len(suffix) && strings.HasSuffix(host, suffix) {
				return true
			}
		} else if eh == host {
			return true
		}
	}
	return false
}

// CodecPlugin is one entry of "codecPlugins" (ours): an out-of-process codec
// binary launched and supervised by the plugin host.
type CodecPlugin struct {
	// Path is the plugin binary. A relative path in the file is resolved
	// against the folder of the configuration file (the current directory
	// for a configuration parsed from memory) when it is parsed, so Path
	// is absolute after ParseGlobal and LoadGlobal.
	Path string `json:"path"`
	// Algorithms are the ZFile codec names the plugin serves, for encoding
	// and decoding: "lz4", "zstd".
	Algorithms []string `json:"algorithms"`
	// Args are extra command-line arguments for the plugin.
	Args []string `json:"args,omitempty"`
	// SHA256, when set, pins the binary: the plugin is started only if its
	// sha256 (64 hex digits) matches.
	SHA256 string `json:"sha256,omitempty"`
}

// PluginAlgorithms are the codec names a plugin may serve: a plugin never
// introduces a ZFile algorithm upstream could not read.
var PluginAlgorithms = []string{"lz4", "zstd"}

func (g *Global) checkCodecPlugins() error {
	seen := map[string]int{}
	for i, p := range g.CodecPlugins {
		field := fmt.Sprintf("codecPlugins[%d]", i)
		if p.Path == "" {
			return fieldErr(g.source(), field+".path", ErrInvalid, "is empty, want the plugin binary")
		}
		if len(p.Algorithms) == 0 {
			return fieldErr(g.source(), field+".algorithms", ErrInvalid, "is empty, want one or more of %s", strings.Join(PluginAlgorithms, ", "))
		}
		for j, a := range p.Algorithms {
			af := fmt.Sprintf("%s.algorithms[%d]", field, j)
			known := false
			for _, k := range PluginAlgorithms {
				known = known || a == k
			}
			if !known {
				return fieldErr(g.source(), af, ErrInvalid, "unknown algorithm %q (known: %s)", a, strings.Join(PluginAlgorithms, ", "))
			}
			if prev, dup := seen[a]; dup {
				return fieldErr(g.source(), af, ErrInvalid, "algorithm %q is already served by codecPlugins[%d]", a, prev)
			}
			seen[a] = i
		}
		if p.SHA256 != "" && !isHex(p.SHA256, 64) {
			return fieldErr(g.source(), field+".sha256", ErrInvalid, "is not 64 hexadecimal digits")
		}
	}
	return nil
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}
