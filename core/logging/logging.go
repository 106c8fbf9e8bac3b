// Package logging sets up the daemons' log/slog logger from the global
// configuration (logConfig and the legacy logLevel/logPath): the level, the
// log file with upstream's size-based rotation (<path> → <path>.1 → …), or
// standard error when no file is configured, and the removal of credentials
// and signed-URL queries from every line.
//
// Upstream writes its log to standard output when no path is set; this
// project keeps standard output free for data and writes to standard error.
package logging

import (
	"io"
	"log/slog"
	"os"

	"github.com/overlaybd-go/overlaybd/core/config"
)

// Options tune New.
type Options struct {
	// Stderr receives the log when no file is configured; nil means
	// os.Stderr.
	Stderr io.Writer
	// Debug forces the DEBUG level (a -v flag).
	Debug bool
}

// Level maps upstream's numeric level (0 DEBUG, 1 INFO, 2 WARN, 3 ERROR,
// 4 FATAL) to a slog level. FATAL maps to a level above ERROR.
func Level(n uint32) slog.Level {
	switch n {
	case 0:
		return slog.LevelDebug
	case 1:
		return slog.LevelInfo
	case 2:
		return slog.LevelWarn
	case 3:
		return slog.LevelError
	default:
		return slog.LevelError + 4
	}
}

// Setup builds the daemon's logger from global's effective log settings (see
// config.Global.EffectiveLog) and makes it the slog default. The closer closes
// the log file; it is a no-op when logging goes to standard error.
func Setup(global *config.Global) (*slog.Logger, io.Closer, error) {
	log, c, err := New(global.EffectiveLog(), Options{})
	if err != nil {
		return nil, nil, err
	}
	slog.SetDefault(log)
	return log, c, nil
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// New builds a logger for s: a slog text handler writing to the rotated file
// s.Path (s.SizeMB MiB × s.RotateNum files) or to standard error, behind a
// RedactHandler.
func New(s config.LogSettings, opts Options) (*slog.Logger, io.Closer, error) {
	level := Level(s.Level)
	if opts.Debug {
		level = slog.LevelDebug
	}
	var out io.Writer = opts.Stderr
	if out == nil {
		out = os.Stderr
	}
	var closer io.Closer = nopCloser{}
	if s.Path != "" {
		size := int64(s.SizeMB) << 20
		if size <= 0 {
			size = 1 << 20
		}
		keep := min(max(s.RotateNum, 0), MaxRotateNum)
		r, err := OpenRotator(s.Path, size, keep)
		if err != nil {
			return nil, nil, err
		}
		out, closer = r, r
	}
	h := slog.NewTextHandler(out, &slog.HandlerOptions{Level: level})
	return slog.New(NewRedactHandler(h)), closer, nil
}
