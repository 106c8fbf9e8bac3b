package config

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	_ "github.com/overlaybd-go/overlaybd/engines/psync"
)

func loadFixture(t *testing.T, name string) *Global {
	t.Helper()
	g, err := LoadGlobal(filepath.Join("testdata", "global", name))
	if err != nil {
		t.Fatalf("LoadGlobal(%s): %v", name, err)
	}
	return g
}

func TestGlobalEmptyIsDefaults(t *testing.T) {
	g := loadFixture(t, "empty.json")
	want := DefaultGlobal()
	want.File = filepath.Join("testdata", "global", "empty.json")
	if d := cmp.Diff(want, g); d != "" {
		t.Fatalf("empty file differs from defaults (-want +got):\n%s", d)
	}
	// Spot-check the defaults against upstream's src/config.h.
	checks := map[string][2]any{
		"logLevel":            {g.LogLevel, uint32(1)},
		"logPath":             {g.LogPath, "/var/log/overlaybd.log"},
		"logConfig.logPath":   {g.LogConfig.LogPath, ""},
		"logConfig.logSizeMB": {g.LogConfig.LogSizeMB, uint32(10)},
		"cacheType":           {g.CacheType, "file"},
		"cacheConfig.refill":  {g.CacheConfig.RefillSize, uint32(262144)},
		"cacheConfig.block":   {g.CacheConfig.BlockSize, uint32(65536)},
		"gzip.refill":         {g.GzipCacheConfig.RefillSize, uint32(1 << 20)},
		"credential.timeout":  {g.CredentialConfig.Timeout, 1},
		"credentialFilePath":  {g.CredentialFilePath, "/opt/overlaybd/cred.json"},
		"download.delay":      {g.Download.Delay, 300},
		"download.tryCnt":     {g.Download.TryCnt, 5},
		"download.blockSize":  {g.Download.BlockSize, uint32(262144)},
		"enableAudit":         {g.EnableAudit, true},
		"p2p.address":         {g.P2PConfig.Address, "http://localhost:9731/accelerator"},
		"exporter.port":       {g.ExporterConfig.Port, 9863},
		"exporter.interval":   {g.ExporterConfig.UpdateInterval, uint64(60000000)},
		"registryFsVersion":   {g.RegistryFsVersion, "v2"},
		"prefetch":            {g.PrefetchConfig.Concurrency, 16},
		"service.address":     {g.ServiceConfig.Address, "http://127.0.0.1:9862"},
	}
	for name, c := range checks {
		if c[0] != c[1] {
			t.Errorf("default %s = %v, want %v", name, c[0], c[1])
		}
	}
	if !strings.HasPrefix(g.UserAgent, "overlaybd/") {
		t.Errorf("default userAgent = %q", g.UserAgent)
	}
	if err := g.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

func TestGlobalFull(t *testing.T) {
	g := loadFixture(t, "full.json")
	abs, _ := filepath.Abs(filepath.Join("testdata", "global"))
	want := &Global{
		File:                filepath.Join("testdata", "global", "full.json"),
		LogConfig:           LogConfig{LogLevel: 2, LogPath: "/var/log/obd/overlaybd.log", LogSizeMB: 20, LogRotateNum: 5},
		LogLevel:            1,
		LogPath:             DefaultLogPath,
		CacheConfig:         CacheConfig{CacheType: "ocf", CacheDir: "/data/obd/cache", CacheSizeGB: 16, RefillSize: 1 << 20, BlockSize: 32768},
		CacheType:           "file",
		RegistryCacheDir:    DefaultCacheDir,
		RegistryCacheSizeGB: 4,
		GzipCacheConfig:     GzipCacheConfig{Enable: true, CacheDir: "/data/obd/gzip", CacheSizeGB: 2, RefillSize: 524288},
		CredentialConfig: CredentialConfig{Mode: "https", Path: "https://creds.example.com/auth", Timeout: 3,
			ClientCertPath: "/etc/obd/client.pem", ClientKeyPath: "/etc/obd/client.key", ServerCAPath: "/etc/obd/ca.pem"},
		CredentialFilePath: DefaultCredentialFile,
		IOEngine:           "2",
		Download:           DownloadConfig{Enable: true, Delay: 120, DelayExtra: 10, MaxMBps: 50, TryCnt: 3, BlockSize: 1 << 20},
		EnableAudit:        false,
		AuditPath:          "/var/log/obd/audit.log",
		EnableThread:       true,
		P2PConfig:          P2PConfig{Enable: true, Address: "http://localhost:19145/dadip2p"},
		ExporterConfig:     ExporterConfig{Enable: true, URIPrefix: "/m", Port: 9100, UpdateInterval: 1000000, Address: "127.0.0.1"},
		RegistryFsVersion:  "v1",
		PrefetchConfig:     PrefetchConfig{Concurrency: 8},
		CertConfig:         CertConfig{CertFile: "/etc/obd/reg.crt", KeyFile: "/etc/obd/reg.key"},
		UserAgent:          "test-agent/1.0",
		ServiceConfig:      ServiceConfig{Enable: true, Address: "http://127.0.0.1:19862"},
		RegistryTLS:        RegistryTLS{InsecureSkipVerify: []string{"registry.local:5000", "*.corp.example"}},
		CodecPlugins: []CodecPlugin{{Path: filepath.Join(abs, "plugins", "zstd-cgo"), Algorithms: []string{"zstd"},
			Args: []string{"--level", "3"}, SHA256: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}},
	}
	if d := cmp.Diff(want, g); d != "" {
		t.Fatalf("full.json (-want +got):\n%s", d)
	}
	// Loaded through an absolute path, a relative plugin path becomes absolute.
	ga, err := LoadGlobal(filepath.Join(abs, "full.json"))
	if err != nil {
		t.Fatal(err)
	}
	if p := ga.CodecPlugins[0].Path; p != filepath.Join(abs, "plugins", "zstd-cgo") {
		t.Errorf("plugin path = %s", p)
	}
	if n, _ := g.IOEngine.Name(); n != "posixaio" {
		t.Errorf("ioEngine 2 = %s, want posixaio", n)
	}
	if a := g.ExporterConfig.ListenAddr(); a != "127.0.0.1:9100" {
		t.Errorf("exporter ListenAddr = %s", a)
	}
	// enableThread with... ocf is allowed; everything else is valid.
	if err := g.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestGlobalFixturesParse(t *testing.T) {
	for _, name := range []string{"typical.json", "legacy.json", "aci-convert.json", "ours.json"} {
		t.Run(name, func(t *testing.T) {
			g := loadFixture(t, name)
			if err := g.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
	g := loadFixture(t, "aci-convert.json")
	if g.LogPath != "" || g.EnableAudit || g.Download.Enable || g.CredentialConfig.Mode != "file" ||
		g.EffectiveCache().Dir != "/var/lib/containerd/io.containerd.snapshotter.v1.overlaybd/convert-cache" {
		t.Errorf("aci-convert.json parsed as %+v", g)
	}
	if ls := g.EffectiveLog(); ls.Path != "" || !ls.Legacy {
		t.Errorf("aci-convert log = %+v, want stdout through the legacy keys", ls)
	}
	g = loadFixture(t, "ours.json")
	if n, _ := g.IOEngine.Name(); n != "io_uring" {
		t.Errorf("ioEngine = %q", g.IOEngine)
	}
	if a := g.ExporterConfig.ListenAddr(); a != "[::1]:9863" {
		t.Errorf("ListenAddr = %s", a)
	}
}

func TestGlobalLegacyRules(t *testing.T) {
	g := loadFixture(t, "legacy.json")
	if got, want := g.EffectiveLog(), (LogSettings{Level: 0, Path: "", SizeMB: 10, RotateNum: 3, Legacy: true}); got != want {
		t.Errorf("EffectiveLog = %+v, want %+v", got, want)
	}
	if got, want := g.EffectiveCache(), (CacheSettings{Type: "download", Dir: "/srv/legacy-cache", SizeGB: 12,
		RefillSize: 262144, BlockSize: 65536, Legacy: true}); got != want {
		t.Errorf("EffectiveCache = %+v, want %+v", got, want)
	}
	if got := g.EffectiveCredential(); got.Mode != "file" || got.Path != "/srv/legacy-cred.json" || got.Timeout != 1 {
		t.Errorf("EffectiveCredential = %+v", got)
	}

	cases := []struct {
		name, json string
		log        LogSettings
		cache      CacheSettings
		cred       [2]string
	}{
		{
			name: "logConfig path wins over legacy, all four from logConfig",
			json: `{"logLevel":3,"logPath":"/legacy.log","logConfig":{"logPath":"/new.log","logLevel":0,"logSizeMB":0,"logRotateNum":99}}`,
			log:  LogSettings{Level: 0, Path: "/new.log", SizeMB: 1, RotateNum: 30},
		},
		{
			name: "logConfig without path: legacy values, fixed rotation",
			json: `{"logLevel":3,"logPath":"/legacy.log","logConfig":{"logLevel":0,"logSizeMB":50,"logRotateNum":7}}`,
			log:  LogSettings{Level: 3, Path: "/legacy.log", SizeMB: 10, RotateNum: 3, Legacy: true},
		},
		{
			name:  "cacheConfig type wins; refill from cacheConfig either way",
			json:  `{"cacheType":"ocf","registryCacheDir":"/old","registryCacheSizeGB":1,"cacheConfig":{"cacheType":"download","refillSize":8192}}`,
			cache: CacheSettings{Type: "download", Dir: DefaultCacheDir, SizeGB: 4, RefillSize: 8192, BlockSize: 65536},
		},
		{
			name:  "cacheConfig without type: legacy type, dir and size",
			json:  `{"cacheType":"ocf","registryCacheDir":"/old","registryCacheSizeGB":1,"cacheConfig":{"cacheDir":"/ignored","cacheSizeGB":99,"refillSize":8192}}`,
			cache: CacheSettings{Type: "ocf", Dir: "/old", SizeGB: 1, RefillSize: 8192, BlockSize: 65536, Legacy: true},
		},
		{
			name: "credential mode set: credentialFilePath ignored",
			json: `{"credentialFilePath":"/old.json","credentialConfig":{"mode":"uds","path":"/run/cred.sock"}}`,
			cred: [2]string{"uds", "/run/cred.sock"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, err := ParseGlobal([]byte(c.json), "case.json")
			if err != nil {
				t.Fatal(err)
			}
			if c.log != (LogSettings{}) && g.EffectiveLog() != c.log {
				t.Errorf("EffectiveLog = %+v, want %+v", g.EffectiveLog(), c.log)
			}
			if c.cache != (CacheSettings{}) && g.EffectiveCache() != c.cache {
				t.Errorf("EffectiveCache = %+v, want %+v", g.EffectiveCache(), c.cache)
			}
			if c.cred[0] != "" {
				if cr := g.EffectiveCredential(); cr.Mode != c.cred[0] || cr.Path != c.cred[1] {
					t.Errorf("EffectiveCredential = %+v, want %v", cr, c.cred)
				}
			}
		})
	}
}

func TestGlobalBadInput(t *testing.T) {
	cases := []struct {
		json, field string
		kind        error
		msg         string
	}{
		{`not json`, "", ErrSyntax, "not valid JSON"},
		{``, "", ErrSyntax, "not valid JSON"},
		{`[]`, "", ErrSyntax, "top level is an array"},
		{`{} {}`, "", ErrSyntax, "after the top-level"},
		{`{"logLevel":1,"logLevel":2}`, "logLevel", ErrSyntax, "duplicate key"},
		{`{"cacheConfig":{"cacheDir":"/a","cacheDir":"/b"}}`, "cacheConfig.cacheDir", ErrSyntax, "duplicate key"},
		{`{"logLevel":"1"}`, "logLevel", ErrType, "is a string, want a number"},
		{`{"logLevel":-1}`, "logLevel", ErrType, "out of range"},
		{`{"logLevel":4294967296}`, "logLevel", ErrType, "out of range"},
		{`{"logLevel":1.5}`, "logLevel", ErrType, "want an integer"},
		{`{"logLevel":1e2}`, "logLevel", ErrType, "want an integer"},
		{`{"logConfig":{"logRotateNum":2147483648}}`, "logConfig.logRotateNum", ErrType, "out of range"},
		{`{"logConfig":[]}`, "logConfig", ErrType, "is an array, want an object"},
		{`{"logConfig":"x"}`, "logConfig", ErrType, "want an object"},
		{`{"enableAudit":1}`, "enableAudit", ErrType, "is a number, want a boolean"},
		{`{"enableAudit":"true"}`, "enableAudit", ErrType, "want a boolean"},
		{`{"auditPath":7}`, "auditPath", ErrType, "want a string"},
		{`{"download":{"delay":"300"}}`, "download.delay", ErrType, "want a number"},
		{`{"exporterConfig":{"updateInterval":-5}}`, "exporterConfig.updateInterval", ErrType, "out of range"},
		{`{"credentialConfig":{"client_cert_path":false}}`, "credentialConfig.client_cert_path", ErrType, "want a string"},
		{`{"ioEngine":4}`, "ioEngine", ErrInvalid, "unknown io engine"},
		{`{"ioEngine":"spdk"}`, "ioEngine", ErrInvalid, "unknown io engine \"spdk\""},
		{`{"ioEngine":"1"}`, "ioEngine", ErrType, "write numbers as JSON numbers"},
		{`{"ioEngine":""}`, "ioEngine", ErrInvalid, "is empty"},
		{`{"ioEngine":true}`, "ioEngine", ErrType, "want a number or an engine name"},
		{`{"ioEngine":-1}`, "ioEngine", ErrType, "out of range"},
		{`{"registryTLS":{"insecureSkipVerify":"host"}}`, "registryTLS.insecureSkipVerify", ErrType, "want an array"},
		{`{"registryTLS":{"insecureSkipVerify":["a",1]}}`, "registryTLS.insecureSkipVerify[1]", ErrType, "want a string"},
		{`{"codecPlugins":{}}`, "codecPlugins", ErrType, "want an array"},
		{`{"codecPlugins":[null]}`, "codecPlugins[0]", ErrType, "is null, want an object"},
		{`{"codecPlugins":[{"algorithms":["zstd"]}]}`, "codecPlugins[0].path", ErrInvalid, "is empty"},
		{`{"codecPlugins":[{"path":"/p"}]}`, "codecPlugins[0].algorithms", ErrInvalid, "is empty"},
		{`{"codecPlugins":[{"path":"/p","algorithms":["gzip"]}]}`, "codecPlugins[0].algorithms[0]", ErrInvalid, `unknown algorithm "gzip"`},
		{`{"codecPlugins":[{"path":"/p","algorithms":["zstd"]},{"path":"/q","algorithms":["lz4","zstd"]}]}`, "codecPlugins[1].algorithms[1]", ErrInvalid, "already served by codecPlugins[0]"},
		{`{"codecPlugins":[{"path":"/p","algorithms":["zstd"],"sha256":"abc"}]}`, "codecPlugins[0].sha256", ErrInvalid, "64 hexadecimal"},
		{`{"codecPlugins":[{"path":"/p","algorithms":["zstd"],"args":[1]}]}`, "codecPlugins[0].args[0]", ErrType, "want a string"},
	}
	for _, c := range cases {
		_, err := ParseGlobal([]byte(c.json), "/etc/overlaybd/overlaybd.json")
		if err == nil {
			t.Errorf("%s: parsed without error", c.json)
			continue
		}
		var fe *FieldError
		if !errors.As(err, &fe) || !errors.Is(err, c.kind) || fe.Field != c.field ||
			!strings.Contains(err.Error(), c.msg) || !strings.HasPrefix(err.Error(), "/etc/overlaybd/overlaybd.json: ") {
			t.Errorf("%s: error %q (field %q), want kind %v, field %q, containing %q", c.json, err, fe.Field, c.kind, c.field, c.msg)
		}
	}
}

func TestGlobalNullAndUnknownKeys(t *testing.T) {
	g, err := ParseGlobal([]byte(`{"logConfig":null,"logLevel":null,"LogLevel":"x","cacheconfig":7,"extra":{"a":[1,2]}}`), "f.json")
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultGlobal()
	want.File = "f.json"
	if d := cmp.Diff(want, g); d != "" {
		t.Fatalf("nulls and unknown (case-different) keys should give defaults (-want +got):\n%s", d)
	}
}

func TestIOEngine(t *testing.T) {
	for in, want := range map[string]string{`0`: "psync", `1`: "libaio", `2`: "posixaio", `3`: "io_uring",
		`"psync"`: "psync", `"libaio"`: "libaio", `"posixaio"`: "posixaio", `"io_uring"`: "io_uring"} {
		g, err := ParseGlobal([]byte(`{"ioEngine":`+in+`}`), "x")
		if err != nil {
			t.Fatalf("ioEngine %s: %v", in, err)
		}
		if n, err := g.IOEngine.Name(); err != nil || n != want {
			t.Errorf("ioEngine %s: Name = %q, %v; want %q", in, n, err, want)
		}
		b, _ := json.Marshal(g.IOEngine)
		if string(b) != in {
			t.Errorf("ioEngine %s marshals as %s", in, b)
		}
	}
	if n, err := IOEngine("").Name(); err != nil || n != "psync" {
		t.Errorf("zero IOEngine = %q, %v", n, err)
	}
	if b, _ := json.Marshal(IOEngine("")); string(b) != "0" {
		t.Errorf("zero IOEngine marshals as %s", b)
	}
	name, f, err := IOEngine("0").Factory()
	if err != nil || name != "psync" || f == nil {
		t.Fatalf("Factory(0) = %q, %v", name, err)
	}
	e, err := f(coreEngineConfig())
	if err != nil || e.Name() != "psync" {
		t.Fatalf("psync factory: %v", err)
	}
	e.Close()
}

func TestValidateOrder(t *testing.T) {
	// Each configuration has two problems; the one upstream meets first
	// in ImageService::init is reported.
	cases := []struct{ json, field string }{
		{`{"cacheConfig":{"cacheType":"nfs","refillSize":3}}`, "cacheConfig.cacheType"},
		{`{"cacheType":"nfs","enableThread":true}`, "cacheType"},
		{`{"enableThread":true,"cacheConfig":{"refillSize":3}}`, "enableThread"},
		{`{"exporterConfig":{"enable":true,"port":0},"enableThread":true}`, "exporterConfig.port"},
		{`{"credentialConfig":{"mode":"ftp"},"exporterConfig":{"enable":true,"port":70000}}`, "credentialConfig.mode"},
		{`{"cacheConfig":{"refillSize":12288},"gzipCacheConfig":{"enable":true,"refillSize":100}}`, "cacheConfig.refillSize"},
		{`{"gzipCacheConfig":{"enable":true,"refillSize":100},"serviceConfig":{"enable":true,"address":"localhost"}}`, "gzipCacheConfig.refillSize"},
		{`{"serviceConfig":{"enable":true,"address":"http://example.com:80"},"registryTLS":{"insecureSkipVerify":["http://x"]}}`, "serviceConfig.address"},
		{`{"registryTLS":{"insecureSkipVerify":["a/b"]}}`, "registryTLS.insecureSkipVerify[0]"},
		{`{"cacheConfig":{"cacheType":"ocf","refillSize":1000}}`, "cacheConfig.refillSize"},
		{`{"cacheConfig":{"cacheType":"ocf","blockSize":1024}}`, "cacheConfig.blockSize"},
		{`{"certConfig":{"keyFile":"/k"}}`, "certConfig.keyFile"},
		{`{"exporterConfig":{"enable":true,"address":"1.2.3.4:80"}}`, "exporterConfig.address"},
	}
	for _, c := range cases {
		g, err := ParseGlobal([]byte(c.json), "o.json")
		if err != nil {
			t.Fatalf("%s: %v", c.json, err)
		}
		err = g.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Validate = %v, want an ErrInvalid about %s", c.json, err, c.field)
		}
	}
	// Values that are fine.
	for _, ok := range []string{
		`{"cacheConfig":{"cacheType":"download","refillSize":3}}`,
		`{"cacheConfig":{"cacheType":"ocf","refillSize":1536,"blockSize":4096},"enableThread":true}`,
		`{"exporterConfig":{"enable":false,"port":-1}}`,
		`{"serviceConfig":{"enable":true,"address":"http://localhost:9862"}}`,
		`{"registryTLS":{"insecureSkipVerify":["reg:5000","*.corp.example","10.0.0.1","[::1]:443"]}}`,
	} {
		g, err := ParseGlobal([]byte(ok), "o.json")
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Validate(); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

func TestPrepare(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := PrepareOptions{CABundles: []string{filepath.Join(dir, "none.crt"), ca}}
	cfg := func(extra string) *Global {
		t.Helper()
		js := `{"logConfig":{"logPath":"` + dir + `/log/obd.log"},"auditPath":"` + dir + `/audit.log",` +
			`"cacheConfig":{"cacheType":"file","cacheDir":"` + dir + `/cache/a/b"},` +
			`"gzipCacheConfig":{"enable":true,"cacheDir":"` + dir + `/gzip"}` + extra + `}`
		g, err := ParseGlobal([]byte(js), "p.json")
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	// The log folder does not exist: the log step fails, before the cache
	// type step (which would also fail) is reached.
	g := cfg(``)
	g.CacheConfig.CacheType = "nfs"
	_, err := g.Prepare(opts)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "logConfig.logPath" || !errors.Is(err, ErrStartup) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Prepare with missing log folder = %v", err)
	}
	if err := g.Validate(); err == nil || !strings.Contains(err.Error(), "cacheConfig.cacheType") {
		t.Fatalf("Validate = %v, want the cache type error", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "log"), 0o755); err != nil {
		t.Fatal(err)
	}
	g = cfg(``)
	st, err := g.Prepare(opts)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	if st.CABundle != ca || !st.Audit || len(st.Warnings) != 0 {
		t.Errorf("Startup = %+v", st)
	}
	for _, p := range []string{"log/obd.log", "audit.log", "cache/a/b", "gzip"} {
		fi, err := os.Stat(filepath.Join(dir, p))
		if err != nil {
			t.Errorf("Prepare did not create %s: %v", p, err)
		} else if fi.IsDir() && fi.Mode().Perm()&0o700 != 0o700 {
			t.Errorf("%s mode %v", p, fi.Mode())
		}
	}
	// An audit file that cannot be opened only disables the audit log.
	g = cfg(``)
	g.AuditPath = dir + "/nodir/audit.log"
	st, err = g.Prepare(opts)
	if err != nil || st.Audit || len(st.Warnings) != 1 {
		t.Errorf("Prepare with bad audit path = %+v, %v", st, err)
	}
	// No CA bundle.
	_, err = cfg(``).Prepare(PrepareOptions{CABundles: []string{filepath.Join(dir, "none.crt")}})
	if err == nil || !strings.Contains(err.Error(), "no certificates found") || !errors.Is(err, ErrStartup) {
		t.Errorf("Prepare without CA bundle = %v", err)
	}
	// A client certificate that cannot be loaded.
	_, err = cfg(`,"certConfig":{"certFile":"` + dir + `/missing.pem"}`).Prepare(opts)
	if !errors.As(err, &fe) || fe.Field != "certConfig.certFile" {
		t.Errorf("Prepare with missing client cert = %v", err)
	}
	// A cache directory that cannot be created (a file is in the way).
	g = cfg(``)
	g.CacheConfig.CacheDir = ca + "/sub"
	_, err = g.Prepare(opts)
	if !errors.As(err, &fe) || fe.Field != "cacheConfig.cacheDir" || !errors.Is(err, ErrStartup) {
		t.Errorf("Prepare with uncreatable cache dir = %v", err)
	}
}

func TestLoadGlobal(t *testing.T) {
	dir := t.TempDir()
	old := defaultGlobalPath
	t.Cleanup(func() { defaultGlobalPath = old })

	defaultGlobalPath = filepath.Join(dir, "overlaybd.json")
	g, err := LoadGlobal("")
	if err != nil {
		t.Fatalf("missing default file: %v", err)
	}
	if g.File != "" || g.CacheType != "file" {
		t.Errorf("missing default file should give the built-in defaults, got %+v", g)
	}
	if err := os.WriteFile(defaultGlobalPath, []byte(`{"logLevel":3}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if g, err := LoadGlobal(""); err != nil || g.LogLevel != 3 || g.File != defaultGlobalPath {
		t.Errorf("default file: %+v, %v", g, err)
	}
	if err := os.WriteFile(defaultGlobalPath, []byte(`{"logLevel":`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadGlobal(""); !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), defaultGlobalPath) {
		t.Errorf("broken default file: %v", err)
	}
	_, err = LoadGlobal(filepath.Join(dir, "explicit.json"))
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "explicit.json") {
		t.Errorf("explicit missing path: %v", err)
	}
}

func TestGlobalRoundTrip(t *testing.T) {
	for _, name := range []string{"empty.json", "full.json", "typical.json", "legacy.json", "aci-convert.json", "ours.json"} {
		g := loadFixture(t, name)
		b, err := json.Marshal(g)
		if err != nil {
			t.Fatal(err)
		}
		g2, err := ParseGlobal(b, g.File)
		if err != nil {
			t.Fatalf("%s: reparse of %s: %v", name, b, err)
		}
		if d := cmp.Diff(g, g2); d != "" {
			t.Errorf("%s: round trip (-first +second):\n%s", name, d)
		}
	}
}

func TestRegistryTLSSkipVerify(t *testing.T) {
	tl := RegistryTLS{InsecureSkipVerify: []string{"registry.local:5000", "Plain.Example", "*.corp.example", "*.port.example:8443", "[::1]:5000", "10.0.0.1"}}
	cases := map[string]bool{
		"registry.local:5000":  true,
		"registry.local":       false,
		"registry.local:443":   false,
		"plain.example":        true,
		"plain.example:9999":   true,
		"PLAIN.example:1":      true,
		"a.corp.example":       true,
		"a.b.corp.example:443": true,
		"corp.example":         false,
		"evilcorp.example":     false,
		"x.port.example:8443":  true,
		"x.port.example":       false,
		"[::1]:5000":           true,
		"[::1]:5001":           false,
		"10.0.0.1:443":         true,
		"10.0.0.2":             false,
		"docker.io":            false,
	}
	for host, want := range cases {
		if got := tl.SkipVerify(host); got != want {
			t.Errorf("SkipVerify(%s) = %v, want %v", host, got, want)
		}
	}
}

func TestServiceListenAddr(t *testing.T) {
	cases := map[string]string{
		"http://127.0.0.1:9862": "127.0.0.1:9862",
		"http://localhost:1234": "127.0.0.1:1234",
		"0.0.0.0:80":            "0.0.0.0:80",
		"http://[::1]:9862":     "[::1]:9862",
		"http://example.com:80": "",
		"http://127.0.0.1":      "",
		"http://127.0.0.1:0":    "",
		"http://%zz":            "",
	}
	for in, want := range cases {
		got, err := ServiceConfig{Address: in}.ListenAddr()
		if got != want || (want == "") != (err != nil) {
			t.Errorf("ListenAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
