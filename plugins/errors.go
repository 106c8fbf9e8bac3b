package plugins

import (
	"errors"
	"fmt"

	"github.com/overlaybd-go/overlaybd/core"
)

// Sentinel errors of the plugin host. Every error a plugin codec returns for
// a block that the plugin failed to serve (crash, hang, protocol violation,
// bad reply checksum) wraps ErrPluginFailed and core.ErrCorrupt, so that the
// frontends report it as an I/O error and never as data; a bad reply
// checksum also wraps core.ErrChecksum, a hang also ErrTimeout.
var (
	// ErrPluginFailed reports a block the plugin did not serve correctly.
	ErrPluginFailed = errors.New("codec plugin failed")
	// ErrTimeout reports a plugin that did not answer in time; the host
	// kills and restarts it.
	ErrTimeout = errors.New("codec plugin timed out")
	// ErrUntrusted reports a plugin binary the host refuses to start: it,
	// or its folder, is writable by other users, or it does not match its
	// pinned sha256.
	ErrUntrusted = errors.New("untrusted codec plugin binary")
	// ErrProtocol reports a plugin that does not speak the host's protocol
	// (handshake, control service or data plane).
	ErrProtocol = errors.New("codec plugin protocol violation")
)

// failure is an error that retires the plugin instance that caused it.
type failure struct {
	err       error
	retryable bool // the process died: a fresh instance may serve the request
}

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

// crashed reports a plugin process that went away mid-request.
func crashed(format string, args ...any) error {
	return &failure{err: fmt.Errorf("%w: %w: %s", ErrPluginFailed, core.ErrCorrupt, fmt.Sprintf(format, args...)), retryable: true}
}

// violated reports a reply that breaks the protocol; extra is wrapped too.
func violated(extra error, format string, args ...any) error {
	if extra == nil {
		extra = ErrProtocol
	}
	return &failure{err: fmt.Errorf("%w: %w: %w: %s", ErrPluginFailed, core.ErrCorrupt, extra, fmt.Sprintf(format, args...))}
}
