// Package logtest captures log output in tests: a buffer that a logger's
// handler writes to while a test reads it, from any goroutine.
package logtest

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
)

// Buffer keeps everything written to it. Its methods are safe for
// concurrent use, so a handler may write while the test reads.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Lines returns the lines written so far that contain substr.
func (l *Buffer) Lines(substr string) []string {
	var out []string
	for line := range strings.Lines(l.String()) {
		if line = strings.TrimSuffix(line, "\n"); strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return out
}

// New returns a logger that writes text records at level and above (nil:
// slog's default, Info) to a new Buffer, and the buffer.
func New(level slog.Leveler) (*slog.Logger, *Buffer) {
	lb := &Buffer{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: level})), lb
}
