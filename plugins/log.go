package plugins

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// newHCLogger returns the hclog.Logger go-plugin writes to, forwarding every
// record (go-plugin's own and the plugin's forwarded log lines) to l.
func newHCLogger(l *slog.Logger) hclog.Logger {
	il := hclog.NewInterceptLogger(&hclog.LoggerOptions{Name: "codec-plugin", Level: hclog.Trace, Output: io.Discard})
	il.RegisterSink(slogSink{l})
	return il
}

type slogSink struct{ l *slog.Logger }

// Accept implements hclog.SinkAdapter.
func (s slogSink) Accept(name string, level hclog.Level, msg string, args ...any) {
	lv := slog.LevelInfo
	switch {
	case level <= hclog.Debug:
		lv = slog.LevelDebug
	case level == hclog.Warn:
		lv = slog.LevelWarn
	case level >= hclog.Error:
		lv = slog.LevelError
	}
	ctx := context.Background()
	if !s.l.Enabled(ctx, lv) {
		return
	}
	attrs := make([]slog.Attr, 0, len(args)/2+1)
	attrs = append(attrs, slog.String("logger", name))
	for i := 0; i+1 < len(args); i += 2 {
		attrs = append(attrs, slog.Any(fmt.Sprint(args[i]), args[i+1]))
	}
	s.l.LogAttrs(ctx, lv, msg, attrs...)
}
