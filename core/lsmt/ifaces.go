package lsmt

import "github.com/overlaybd-go/overlaybd/core"

// The capabilities each layer type offers.
var (
	_ core.File          = (*ReadOnly)(nil)
	_ core.BlockStatuser = (*ReadOnly)(nil)

	_ core.File          = (*Writable)(nil)
	_ core.Discarder     = (*Writable)(nil)
	_ core.ZeroWriter    = (*Writable)(nil)
	_ core.BlockStatuser = (*Writable)(nil)

	_ core.File          = (*Stack)(nil)
	_ core.Discarder     = (*Stack)(nil)
	_ core.ZeroWriter    = (*Stack)(nil)
	_ core.BlockStatuser = (*Stack)(nil)
)
