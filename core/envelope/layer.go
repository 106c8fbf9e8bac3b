package envelope

import (
	"fmt"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
)

// OpenLayer opens f, a committed or sealed layer in any envelope (plain,
// ZFile, tar, tar around ZFile), as a read-only LSMT layer. It takes f over:
// the layer owns it and closes it on Close, and on error f is already
// closed. Content that is not an LSMT layer gives an error wrapping
// core.ErrCorrupt that says what it is ("tar > zfile > raw").
func OpenLayer(f core.File, opts ...Option) (*lsmt.ReadOnly, error) {
	inner, desc, err := Open(f, opts...)
	if err != nil {
		f.Close()
		return nil, err
	}
	if desc.Inner() != KindLSMT {
		inner.Close()
		return nil, fmt.Errorf("envelope: %s, not an LSMT layer: %w", desc, core.ErrCorrupt)
	}
	r, err := lsmt.OpenReadOnly(inner)
	if err != nil {
		inner.Close()
		return nil, err
	}
	return r, nil
}
