// Package codecs is the family of block codecs and checksums that ZFile uses.
//
// Each sub-package registers itself with core.Codecs or core.Checksums from
// its init function; binaries import codecs/all to get every one of them.
//
//   - lz4: raw LZ4 blocks (ZFile algorithm 1)
//   - zstd: one complete zstd frame per block (ZFile algorithm 2)
//   - crc32c: overlaybd's raw CRC32C
//
// Every codec has a pure Go flavour, registered by default, and a cgo
// flavour behind a build tag (cgo_codecs for liblz4/libzstd, isal for
// ISA-L's CRC32C) that takes over the same registry name. See docs/zfile.md
// for how a hardware codec plugs in.
package codecs
