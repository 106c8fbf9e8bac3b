package core

// Codec compresses and decompresses single blocks. A Codec is safe for
// concurrent use.
type Codec interface {
	// Name is the registry name of the codec's algorithm (e.g. "lz4").
	Name() string
	// CompressBound is the largest compressed size of n input bytes.
	CompressBound(n int) int
	// Compress compresses src into dst, which has at least
	// CompressBound(len(src)) bytes, and returns the compressed length.
	Compress(dst, src []byte) (int, error)
	// Decompress decompresses src into dst and returns the decompressed
	// length. A src that does not decode, or that decodes to more than
	// len(dst) bytes, is an error wrapping ErrCorrupt.
	Decompress(dst, src []byte) (int, error)
}

// CodecFactory creates a codec. Flavour-specific settings (a plugin's binary,
// a library's level) are bound when the factory is registered.
type CodecFactory func() (Codec, error)

// Codecs is the registry of block codecs. The numbers are the ZFile algorithm
// identifiers: 1 lz4, 2 zstd.
var Codecs = NewRegistry[CodecFactory]("codec")

// Checksum computes overlaybd's checksum: CRC32C in raw form (no initial or
// final inversion), extended from a seed. A Checksum is safe for concurrent
// use.
type Checksum interface {
	// Name is the registry name of the implementation (e.g. "crc32c").
	Name() string
	// Update extends crc with p and returns the new value.
	Update(crc uint32, p []byte) uint32
}

// Checksums is the registry of checksum implementations of overlaybd's raw
// CRC32C. They all compute the same value; they differ in speed.
var Checksums = NewRegistry[func() Checksum]("checksum")
