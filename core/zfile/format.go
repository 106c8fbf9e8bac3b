// Package zfile reads and writes ZFile, overlaybd's seekable compressed
// container: a 512-byte header, independently compressed fixed-size blocks
// (each optionally followed by a raw CRC32C), a jump table of stored block
// lengths and a 512-byte trailer (FORMAT-ZFILE in the specification).
//
// [Open] turns a compressed core.File into a read-only core.File of the
// original bytes: random reads of any size and alignment decompress only the
// blocks they touch, verify per-block checksums, and keep recently decoded
// blocks in a bounded cache. [NewWriter] compresses a stream into a ZFile that
// upstream overlaybd reads, byte-identical to upstream's output when the
// codecs are built with the cgo_codecs tag.
//
// Codecs and checksums are looked up in core.Codecs (by ZFile algorithm
// number) and core.Checksums ("crc32c"), so binaries must import the codecs
// they need, normally through codecs/all; a codec served by a plugin works
// the same way once registered.
package zfile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/overlaybd-go/overlaybd/core"
)

// Layout constants of the format.
const (
	// HeaderSize is the size of the header and trailer slots.
	HeaderSize = 512
	// StructSize is the value of the size field (sizeof HeaderTrailer).
	StructSize = 96
	// DefaultBlockSize is upstream's default block size.
	DefaultBlockSize = 4096
	// MinBlockSize and MaxBlockSize bound the block sizes the tools and
	// the writer accept (powers of two in between).
	MinBlockSize = 4096
	MaxBlockSize = 65536
	// UpstreamMaxStored is the largest stored block (payload plus CRC) that
	// upstream's reader can read (its 64 KiB read window, MAX_READ_SIZE).
	UpstreamMaxStored = 65536
	// BlockCRCSeed seeds the per-block checksum (NOI_WELL_KNOWN_PRIME).
	BlockCRCSeed = 100007
	// MaxIndexSize is the largest jump table upstream accepts.
	MaxIndexSize = 1_000_000_000
	// maxReadBlockSize bounds the block size this reader accepts, to keep
	// a hostile header from making it allocate without limit.
	maxReadBlockSize = 16 << 20
)

// Flag bits of the flags field.
const (
	FlagHeader          uint64 = 1 << 0 // header slot (clear: trailer)
	FlagData            uint64 = 1 << 1 // data file
	FlagSealed          uint64 = 1 << 2 // complete
	FlagHeaderOverwrite uint64 = 1 << 3 // header rewritten with the final index fields
	FlagDigest          uint64 = 1 << 4 // digest and index_crc are valid
	FlagIndexCompressed uint64 = 1 << 5 // defined upstream, never written or read
)

// Algorithm numbers of the algo field.
const (
	AlgoMiniLZO = 0 // declared upstream, never supported
	AlgoLZ4     = 1
	AlgoZSTD    = 2
)

var (
	magic0 = [8]byte{'Z', 'F', 'i', 'l', 'e', 0, 1, 0}
	magic1 = [16]byte{'t', 'u', 'j', 'i', '.', 'y', 'y', 'f', '@', 'A', 'l', 'i', 'b', 'a', 'b', 'a'}
)

// Errors callers test for. Every error of this package that reports bad
// input also wraps core.ErrCorrupt; checksum failures also wrap
// core.ErrChecksum.
var (
	// ErrNotZFile reports a file without the ZFile header magic.
	ErrNotZFile = errors.New("not a zfile")
	// ErrBlockTooLarge reports a block whose stored size exceeds what
	// upstream overlaybd can read; see BlockTooLargeError.
	ErrBlockTooLarge = errors.New("compressed block too large for upstream overlaybd")
)

// Header is the decoded 96-byte HeaderTrailer structure, used for the
// header at offset 0 and the trailer in the last 512 bytes.
type Header struct {
	Size         uint32 // struct size, 96
	Digest       uint32 // raw CRC32C of the slot with this field zeroed
	Flags        uint64
	IndexOffset  uint64 // offset of the jump table
	IndexSize    uint64 // number of blocks
	OriginalSize uint64 // size of the uncompressed file
	IndexCRC     uint32 // raw CRC32C of the jump table
	BlockSize    uint32
	Algorithm    uint8
	Level        uint8
	UseDict      uint8
	DictSize     uint32
	Verify       bool // every block is followed by its CRC
}

// Has reports whether every bit of mask is set in h.Flags.
func (h *Header) Has(mask uint64) bool { return h.Flags&mask == mask }

// Marshal returns the 512-byte slot of h with zero padding. When h has
// FlagDigest the digest is computed and stored (and set in h).
func (h *Header) Marshal() []byte {
	b := make([]byte, HeaderSize)
	copy(b[0:8], magic0[:])
	copy(b[8:24], magic1[:])
	le := binary.LittleEndian
	size := h.Size
	if size == 0 {
		size = StructSize
	}
	le.PutUint32(b[24:], size)
	le.PutUint64(b[32:], h.Flags)
	le.PutUint64(b[40:], h.IndexOffset)
	le.PutUint64(b[48:], h.IndexSize)
	le.PutUint64(b[56:], h.OriginalSize)
	le.PutUint32(b[64:], h.IndexCRC)
	le.PutUint32(b[72:], h.BlockSize)
	b[76] = h.Algorithm
	b[77] = h.Level
	b[78] = h.UseDict
	le.PutUint32(b[84:], h.DictSize)
	if h.Verify {
		b[88] = 1
	}
	if h.Has(FlagDigest) {
		h.Digest = rawCRC(0, b)
		le.PutUint32(b[28:], h.Digest)
	} else {
		le.PutUint32(b[28:], h.Digest)
	}
	return b
}

// ParseHeader decodes a 512-byte slot. It checks the magic only; the other
// checks depend on whether the slot is used as header or trailer.
func ParseHeader(b []byte) (*Header, error) {
	if len(b) < HeaderSize {
		return nil, fmt.Errorf("zfile: header: %d of %d bytes: %w", len(b), HeaderSize, core.ErrCorrupt)
	}
	if !bytes.Equal(b[0:8], magic0[:]) || !bytes.Equal(b[8:24], magic1[:]) {
		return nil, fmt.Errorf("zfile: bad magic: %w (%w)", ErrNotZFile, core.ErrCorrupt)
	}
	le := binary.LittleEndian
	return &Header{
		Size:         le.Uint32(b[24:]),
		Digest:       le.Uint32(b[28:]),
		Flags:        le.Uint64(b[32:]),
		IndexOffset:  le.Uint64(b[40:]),
		IndexSize:    le.Uint64(b[48:]),
		OriginalSize: le.Uint64(b[56:]),
		IndexCRC:     le.Uint32(b[64:]),
		BlockSize:    le.Uint32(b[72:]),
		Algorithm:    b[76],
		Level:        b[77],
		UseDict:      b[78],
		DictSize:     le.Uint32(b[84:]),
		Verify:       b[88] != 0,
	}, nil
}

// slotDigest is the raw CRC32C of a 512-byte slot with the digest zeroed.
func slotDigest(b []byte) uint32 {
	var zero [4]byte
	c := rawCRC(0, b[:28])
	c = rawCRC(c, zero[:])
	return rawCRC(c, b[32:HeaderSize])
}

// checkDigest verifies the digest of slot b when its header has FlagDigest.
func checkDigest(h *Header, b []byte, what string) error {
	if !h.Has(FlagDigest) {
		return nil
	}
	if got := slotDigest(b); got != h.Digest {
		return fmt.Errorf("zfile: %s digest %#08x, computed %#08x: %w (%w)", what, h.Digest, got, core.ErrChecksum, core.ErrCorrupt)
	}
	return nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// rawCRC is overlaybd's raw CRC32C, used where no registered checksum is
// needed (512-byte slots).
func rawCRC(seed uint32, p []byte) uint32 { return ^crc32.Update(^seed, castagnoli, p) }

type stdChecksum struct{}

func (stdChecksum) Name() string                       { return "crc32c-stdlib" }
func (stdChecksum) Update(crc uint32, p []byte) uint32 { return rawCRC(crc, p) }

// checksum returns the registered "crc32c" implementation, or the standard
// library's when none is registered.
func checksum() core.Checksum {
	if f, err := core.Checksums.Lookup("crc32c"); err == nil {
		return f()
	}
	return stdChecksum{}
}

// codecFor returns the registered codec of a ZFile algorithm number.
func codecFor(algo uint8) (string, core.Codec, error) {
	name, f, err := core.Codecs.LookupNumber(int(algo))
	if err != nil {
		return "", nil, fmt.Errorf("zfile: algorithm %d: %w (%w)", algo, err, core.ErrUnsupported)
	}
	c, err := f()
	if err != nil {
		return "", nil, fmt.Errorf("zfile: codec %s: %w", name, err)
	}
	return name, c, nil
}

// ParseJumpTable decodes a jump table of n entries and checks upstream's
// validity rule: every entry is larger than 4 when blocks carry a CRC and
// larger than 0 otherwise.
func ParseJumpTable(b []byte, n uint64, verify bool) ([]uint32, error) {
	if uint64(len(b)) != 4*n {
		return nil, fmt.Errorf("zfile: jump table of %d entries needs %d bytes, got %d: %w", n, 4*n, len(b), core.ErrCorrupt)
	}
	min := uint32(1)
	if verify {
		min = 5
	}
	out := make([]uint32, n)
	for i := range out {
		v := binary.LittleEndian.Uint32(b[4*i:])
		if v < min {
			return nil, fmt.Errorf("zfile: jump table entry %d: stored block length %d: %w", i, v, core.ErrCorrupt)
		}
		out[i] = v
	}
	return out, nil
}

// BlockTooLargeError reports a block that compresses to more than upstream
// overlaybd's reader accepts (a 64 KiB block of incompressible data). It
// wraps ErrBlockTooLarge.
type BlockTooLargeError struct {
	Block      int64 // block index
	Offset     int64 // offset of the block in the uncompressed input
	Stored     int   // stored size (payload plus CRC)
	BlockSize  int
	Algorithm  string
	UpstreamAt int // the limit, UpstreamMaxStored
}

// Error names the block, its input offset, the size and the limit.
func (e *BlockTooLargeError) Error() string {
	return fmt.Sprintf("zfile: block %d (input offset %d) compresses with %s to %d stored bytes, more than the %d that overlaybd can read; use a smaller block size than %d",
		e.Block, e.Offset, e.Algorithm, e.Stored, e.UpstreamAt, e.BlockSize)
}

// Unwrap returns ErrBlockTooLarge.
func (e *BlockTooLargeError) Unwrap() error { return ErrBlockTooLarge }
