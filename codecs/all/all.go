// Package all registers every codec and checksum of the project with core.
// Binaries import it for its side effects:
//
//	import _ "github.com/overlaybd-go/overlaybd/codecs/all"
package all

import (
	// Register ZFile's LZ4 codec (algorithm 1).
	_ "github.com/overlaybd-go/overlaybd/codecs/lz4"
	// Register ZFile's zstd codec (algorithm 2).
	_ "github.com/overlaybd-go/overlaybd/codecs/zstd"
	// Register overlaybd's raw CRC32C.
	_ "github.com/overlaybd-go/overlaybd/codecs/crc32c"
)
