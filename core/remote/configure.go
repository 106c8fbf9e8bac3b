package remote

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/config"
)

// CredentialsFromConfig builds the credential source of credentialConfig
// (after upstream's legacy rule: an empty mode reads credentialFilePath).
// An unknown mode or an empty path yields anonymous access with a log
// line, as upstream behaves.
func CredentialsFromConfig(g *config.Global, log *slog.Logger) (Credentials, error) {
	cc := g.EffectiveCredential()
	log = logger(log)
	if cc.Path == "" {
		log.Warn("credentialConfig: empty authentication path; registry requests go out anonymous")
		return Anonymous{}, nil
	}
	switch cc.Mode {
	case "file":
		return &FileCredentials{Path: cc.Path, Logger: log}, nil
	case "http", "https", "uds":
		timeout := time.Duration(cc.Timeout) * time.Second
		return NewHelperCredentials(HelperOptions{Mode: cc.Mode, Path: cc.Path, Timeout: timeout,
			ClientCertFile: cc.ClientCertPath, ClientKeyFile: cc.ClientKeyPath, ServerCAFile: cc.ServerCAPath})
	default:
		log.Warn("credentialConfig: invalid mode for authentication; registry requests go out anonymous", "mode", cc.Mode)
		return Anonymous{}, nil
	}
}

// NewClientFromConfig builds the registry client of overlaybd.json:
// credentials, certConfig, userAgent, registryTLS, and the P2P agent when
// p2pConfig is enabled and the agent answers (REMOTE.md §6; call
// UpdateP2P again at each device open to re-evaluate it as upstream does).
func NewClientFromConfig(ctx context.Context, g *config.Global, log *slog.Logger) (*Client, error) {
	log = logger(log)
	creds, err := CredentialsFromConfig(g, log)
	if err != nil {
		return nil, err
	}
	if g.RegistryFsVersion != "" && g.RegistryFsVersion != "v2" {
		log.Info("registryFsVersion is not v2; the v2 registry protocol is used", "registryFsVersion", g.RegistryFsVersion)
	}
	c, err := NewClient(Options{
		UserAgent:      g.UserAgent,
		Credentials:    creds,
		ClientCertFile: g.CertConfig.CertFile,
		ClientKeyFile:  g.CertConfig.KeyFile,
		SkipVerify:     g.RegistryTLS.SkipVerify,
		Logger:         log,
	})
	if err != nil {
		return nil, err
	}
	c.UpdateP2P(ctx, g.P2PConfig)
	return c, nil
}

// UpdateP2P switches data requests to the P2P agent of p2pConfig when it is
// enabled and reachable, and back to the registry otherwise.
func (c *Client) UpdateP2P(ctx context.Context, p config.P2PConfig) {
	if p.Enable && ProbeP2P(ctx, p.Address, 2*time.Second) {
		c.SetP2PAddress(p.Address)
		return
	}
	if p.Enable {
		c.log.Warn("P2P agent not reachable; reading from the registry", "address", Redact(p.Address))
	}
	c.SetP2PAddress("")
}

// CacheFromConfig creates the cache of cacheConfig through core.Caches (the
// binary must link the caches, e.g. with caches/all). The cache's files are
// served by an engine of its own of the kind ioEngine selects (the binary
// must link it, e.g. with engines/all), which the cache closes. capacity in
// bytes overrides cacheSizeGB when positive (tests).
func CacheFromConfig(g *config.Global, capacity int64, log *slog.Logger) (core.Cache, error) {
	cs := g.EffectiveCache()
	f, err := core.Caches.Lookup(cs.Type)
	if err != nil {
		return nil, fmt.Errorf("cacheConfig: %w", err)
	}
	if capacity <= 0 {
		capacity = int64(cs.SizeGB) << 30
	}
	name, ef, err := g.IOEngine.Factory()
	if err != nil {
		return nil, fmt.Errorf("ioEngine: %w", err)
	}
	eng, err := ef(core.EngineConfig{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("io engine %s for the cache: %w", name, err)
	}
	c, err := f(core.CacheConfig{Dir: cs.Dir, CapacityBytes: capacity, RefillSize: int64(cs.RefillSize),
		BlockSize: int64(cs.BlockSize), Logger: log, Engine: eng, CloseEngine: true})
	if err != nil {
		eng.Close()
		return nil, err
	}
	return c, nil
}

// NewLayerOpenerForImage returns the opener of one device: the cache (nil
// while P2P is active), and background downloads per the image's download
// settings (its own "download" object, else the global one), disabled when
// the image records a trace.
func NewLayerOpenerForImage(c *Client, cache core.Cache, g *config.Global, img *config.Image, log *slog.Logger) *LayerOpener {
	dl := g.Download
	if img != nil {
		dl = img.EffectiveDownload(g)
	}
	o := LayerOpenerOptions{Cache: cache, Download: DownloadOptionsFromConfig(dl), Logger: log}
	if img != nil && img.RecordTracePath != "" {
		// An existing, empty trace file means record mode (REMOTE.md §10.1).
		if st, err := os.Stat(img.RecordTracePath); err == nil && st.Size() == 0 {
			o.Download = nil
		}
	}
	return NewLayerOpener(c, o)
}
