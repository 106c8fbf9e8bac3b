// Package all registers every IO engine with core.Engines; binaries import
// it for its side effect:
//
//	import _ "github.com/overlaybd-go/overlaybd/engines/all"
//
// The engines and their ioEngine numbers are psync (0), libaio (1),
// posixaio (2) and io_uring (3, this project's addition).
package all

import (
	// Registered for their side effect.
	_ "github.com/overlaybd-go/overlaybd/engines/iouring"
	_ "github.com/overlaybd-go/overlaybd/engines/libaio"
	_ "github.com/overlaybd-go/overlaybd/engines/posixaio"
	_ "github.com/overlaybd-go/overlaybd/engines/psync"
)
