// Package all links every cache for remote layers into a binary, so that
// core.Caches knows "file", "download" and "ocf".
package all

import (
	_ "github.com/overlaybd-go/overlaybd/caches/download" // "download"
	_ "github.com/overlaybd-go/overlaybd/caches/file"     // "file"
	_ "github.com/overlaybd-go/overlaybd/caches/ocf"      // "ocf"
)
