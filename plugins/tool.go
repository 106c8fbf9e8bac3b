package plugins

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/overlaybd-go/overlaybd/core/config"
)

// LoadForTool is the start-up of a command-line tool that reads or writes
// ZFiles: it parses the service configuration at path with
// config.LoadGlobal ("" means config.DefaultGlobalPath, or the built-in
// defaults when that file does not exist; an explicit path must exist) and
// starts the configured codec plugins with LoadGlobal. It does not run
// Global.Prepare: tools that touch only local files skip the daemons'
// start-up checks. The error says which step failed. On success the caller
// closes the Host on exit (CloseLogging or Close).
func LoadForTool(ctx context.Context, path string, opts ...Option) (*config.Global, *Host, error) {
	g, err := config.LoadGlobal(path)
	if err != nil {
		return nil, nil, fmt.Errorf("load service config: %w", err)
	}
	h, err := LoadGlobal(ctx, g, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("start codec plugins of %s: %w", g.File, err)
	}
	return g, h, nil
}

// statsTimeout bounds the Stats call of CloseLogging per plugin.
const statsTimeout = 2 * time.Second

// CloseLogging logs each plugin's counters at debug level ("codec plugin
// stats": pid, batches, and per codec the blocks and bytes compressed and
// decompressed), then closes the Host. A plugin whose counters cannot be
// read is logged at debug level too; it does not fail the close. A nil
// Host is a no-op.
func (h *Host) CloseLogging(l *slog.Logger) error {
	if h == nil {
		return nil
	}
	if l == nil {
		l = slog.Default()
	}
	if l.Enabled(context.Background(), slog.LevelDebug) {
		for _, p := range h.plugins {
			ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
			st, err := p.Stats(ctx)
			cancel()
			if err != nil {
				l.Debug("codec plugin stats unavailable", "plugin", p.cfg.Path, "err", err)
				continue
			}
			attrs := []any{"plugin", p.cfg.Path, "pid", p.Pid(), "batches", st.Batches, "calls", st.Calls}
			for _, alg := range p.cfg.Algorithms {
				c := st.Codecs[alg]
				attrs = append(attrs, slog.Group(alg,
					"compressed", c.Compressed, "compressed_bytes", c.CompressedBytes,
					"decompressed", c.Decompressed, "decompressed_bytes", c.DecompressedBytes,
					"errors", c.Errors))
			}
			l.Debug("codec plugin stats", attrs...)
		}
	}
	return h.Close()
}
