package lsmt

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/overlaybd-go/overlaybd/core"
)

// Sizes and limits of the format (FORMAT-LSMT §9).
const (
	// SectorSize is the unit of every offset and length in an index record.
	SectorSize = core.SectorSize
	// HeaderSize is the size of the header and of the trailer slot.
	HeaderSize = 4096
	// HeaderStructSize is the size of the packed header structure; the
	// rest of the slot is zero.
	HeaderStructSize = 390
	// TagSize is the size of the user tag (commit message) field.
	TagSize = 256
	// RecordSize is the size of one index record.
	RecordSize = 16
	// InvalidOffset marks a padding record; it is also one past the
	// largest logical sector a record may address.
	InvalidOffset = 1<<50 - 1
	// MaxLength is the largest length of one record, in sectors.
	MaxLength = 16383
	// MaxMOffset is the largest moffset of a record, in sectors.
	MaxMOffset = 1<<55 - 1
	// MaxIOSize is the largest piece a write is split into (one record per
	// piece), as upstream's default MAX_IO_SIZE.
	MaxIOSize = 4 << 20
	// MaxROIndexSize is the largest record count of a read-only layer's
	// index (padding included).
	MaxROIndexSize = 1_000_000
	// MaxIndexSize is the largest record count of a writable index and of
	// a merged index.
	MaxIndexSize = 128_000_000
	// MaxStackLayers is the largest number of read-only layers in a stack.
	MaxStackLayers = 255

	dataStartSector = HeaderSize / SectorSize
	uuidTextSize    = 37
	versionV1       = 1
	subVersionV1    = 1
)

// Flags are the flag bits of a header or trailer (FORMAT-LSMT §2.1).
type Flags uint32

// The defined flag bits. Readers test only these; other bits are ignored.
const (
	// FlagHeader is set in a header and clear in a trailer.
	FlagHeader Flags = 1 << 0
	// FlagDataFile is set in data files and clear in index files.
	FlagDataFile Flags = 1 << 1
	// FlagSealed marks a read-only, complete layer.
	FlagSealed Flags = 1 << 2
	// FlagSparse marks a sparse writable layer.
	FlagSparse Flags = 1 << 4
)

var (
	magic0 = [8]byte{'L', 'S', 'M', 'T', 0, 1, 2, 0}
	magic1 = [16]byte{0x65, 0x7E, 0x63, 0xD2, 0x94, 0x44, 0x08, 0x4C, 0xA2, 0xD2, 0xC8, 0xEC, 0x4F, 0xCF, 0xAE, 0x8A}
)

// UUID is a layer identity. Its text form (what the header stores) is
// upper-case canonical; the zero value is the null UUID.
type UUID [16]byte

// ParseUUID parses the text form with upstream's rules: exactly 36
// characters, hex digits (either case) everywhere except positions 8, 13, 18
// and 23, which may hold '-' or a hex digit and are skipped.
func ParseUUID(s string) (UUID, error) {
	var u UUID
	if len(s) != 36 {
		return u, fmt.Errorf("uuid %q: want 36 characters, have %d", s, len(s))
	}
	var digits [32]byte
	n := 0
	for i := 0; i < 36; i++ {
		c := s[i]
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' && !isHex(c) {
				return u, fmt.Errorf("uuid %q: bad character %q at %d", s, c, i)
			}
			continue
		}
		if !isHex(c) {
			return u, fmt.Errorf("uuid %q: bad character %q at %d", s, c, i)
		}
		digits[n] = c
		n++
	}
	if _, err := hex.Decode(u[:], digits[:]); err != nil {
		return u, fmt.Errorf("uuid %q: %w", s, err)
	}
	return u, nil
}

// ValidUUID reports whether s is a UUID string upstream accepts.
func ValidUUID(s string) bool {
	_, err := ParseUUID(s)
	return err == nil
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// String returns the canonical upper-case text form.
func (u UUID) String() string {
	const digits = "0123456789ABCDEF"
	var b [36]byte
	j := 0
	for i, x := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b[j] = '-'
			j++
		}
		b[j], b[j+1] = digits[x>>4], digits[x&15]
		j += 2
	}
	return string(b[:])
}

// IsNull reports whether u is the null UUID.
func (u UUID) IsNull() bool { return u == UUID{} }

// Header is the decoded content of a header or trailer block.
type Header struct {
	// Flags holds the flag bits as stored (undefined bits included).
	Flags Flags
	// IndexOffset is the byte offset of the index (meaning per file kind).
	IndexOffset uint64
	// IndexSize is a record count (meaning per file kind).
	IndexSize uint64
	// VirtualSize is the size of the virtual block device in bytes.
	VirtualSize uint64
	// UUID and ParentUUID are the parsed UUID fields; a field whose text
	// does not parse reads as the null UUID, as upstream does.
	UUID, ParentUUID UUID
	// RawUUID and RawParentUUID are the stored texts (up to the NUL).
	RawUUID, RawParentUUID string
	// StructSize, Version and SubVersion are informational; readers never
	// check them.
	StructSize          uint32
	Version, SubVersion uint8
	// Tag is the user tag (commit message) up to its first NUL.
	Tag []byte
}

// IsHeader reports whether the header bit is set (clear in trailers).
func (h *Header) IsHeader() bool { return h.Flags&FlagHeader != 0 }

// IsDataFile reports whether the data-file bit is set.
func (h *Header) IsDataFile() bool { return h.Flags&FlagDataFile != 0 }

// IsSealed reports whether the sealed bit is set.
func (h *Header) IsSealed() bool { return h.Flags&FlagSealed != 0 }

// IsSparse reports whether the sparse bit is set.
func (h *Header) IsSparse() bool { return h.Flags&FlagSparse != 0 }

// MarshalBinary encodes h as a 4096-byte block exactly as upstream writes
// it: the packed structure, then zeros. A tag longer than TagSize is an
// error.
func (h *Header) MarshalBinary() ([]byte, error) {
	b := make([]byte, HeaderSize)
	if err := h.encode(b); err != nil {
		return nil, err
	}
	return b, nil
}

func (h *Header) encode(b []byte) error {
	if len(h.Tag) > TagSize {
		return fmt.Errorf("lsmt: user tag of %d bytes is longer than %d", len(h.Tag), TagSize)
	}
	clear(b[:HeaderSize])
	copy(b[0:8], magic0[:])
	copy(b[8:24], magic1[:])
	binary.LittleEndian.PutUint32(b[24:], HeaderStructSize)
	binary.LittleEndian.PutUint32(b[28:], uint32(h.Flags))
	binary.LittleEndian.PutUint64(b[32:], h.IndexOffset)
	binary.LittleEndian.PutUint64(b[40:], h.IndexSize)
	binary.LittleEndian.PutUint64(b[48:], h.VirtualSize)
	copy(b[56:92], h.UUID.String())
	copy(b[93:129], h.ParentUUID.String())
	b[132] = versionV1
	b[133] = subVersionV1
	copy(b[134:134+TagSize], h.Tag)
	return nil
}

// ParseHeader decodes a header or trailer block (at least HeaderStructSize
// bytes). Only the magic is validated; a bad magic is an error wrapping
// core.ErrCorrupt.
func ParseHeader(b []byte) (*Header, error) {
	if len(b) < HeaderStructSize {
		return nil, fmt.Errorf("lsmt: header of %d bytes, want %d: %w", len(b), HeaderStructSize, core.ErrCorrupt)
	}
	if !bytes.Equal(b[0:8], magic0[:]) || !bytes.Equal(b[8:24], magic1[:]) {
		return nil, fmt.Errorf("lsmt: bad magic % x: %w", b[0:8], core.ErrCorrupt)
	}
	h := &Header{
		StructSize:    binary.LittleEndian.Uint32(b[24:]),
		Flags:         Flags(binary.LittleEndian.Uint32(b[28:])),
		IndexOffset:   binary.LittleEndian.Uint64(b[32:]),
		IndexSize:     binary.LittleEndian.Uint64(b[40:]),
		VirtualSize:   binary.LittleEndian.Uint64(b[48:]),
		RawUUID:       cString(b[56 : 56+uuidTextSize]),
		RawParentUUID: cString(b[93 : 93+uuidTextSize]),
		Version:       b[132],
		SubVersion:    b[133],
		Tag:           []byte(cString(b[134 : 134+TagSize])),
	}
	h.UUID, _ = ParseUUID(h.RawUUID)
	h.ParentUUID, _ = ParseUUID(h.RawParentUUID)
	return h, nil
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// Mapping is one index record: logical sectors [Offset, Offset+Length) are
// stored at sector MOffset of the file selected by Tag, or read as zeros
// when Zeroed is set.
type Mapping struct {
	// Offset is the first logical sector covered.
	Offset uint64
	// MOffset is the sector of the backing file where the data starts.
	MOffset uint64
	// Length is the number of sectors (at most MaxLength on disk).
	Length uint32
	// Zeroed marks a range that reads as zeros and stores no data.
	Zeroed bool
	// Tag selects the backing file of a stack (0 = topmost).
	Tag uint8
}

// End returns the logical sector after the mapping.
func (m Mapping) End() uint64 { return m.Offset + uint64(m.Length) }

// MEnd returns the backing-file sector after the mapping's data (MOffset for
// zeroed mappings).
func (m Mapping) MEnd() uint64 {
	if m.Zeroed {
		return m.MOffset
	}
	return m.MOffset + uint64(m.Length)
}

// IsInvalid reports whether m is a padding record.
func (m Mapping) IsInvalid() bool { return m.Offset == InvalidOffset }

// String formats m as {offset,length,moffset[,Z][,tag]}.
func (m Mapping) String() string {
	z := ""
	if m.Zeroed {
		z = ",Z"
	}
	return fmt.Sprintf("{%d,%d,%d%s,t%d}", m.Offset, m.Length, m.MOffset, z, m.Tag)
}

// invalidMapping is upstream's padding record.
var invalidMapping = Mapping{Offset: InvalidOffset}

// PutMapping encodes m into b[:16].
func PutMapping(b []byte, m Mapping) {
	w0 := m.Offset&(1<<50-1) | uint64(m.Length&MaxLength)<<50
	w1 := m.MOffset & MaxMOffset
	if m.Zeroed {
		w1 |= 1 << 55
	}
	w1 |= uint64(m.Tag) << 56
	binary.LittleEndian.PutUint64(b[0:], w0)
	binary.LittleEndian.PutUint64(b[8:], w1)
}

// DecodeMapping decodes the record in b[:16].
func DecodeMapping(b []byte) Mapping {
	w0 := binary.LittleEndian.Uint64(b[0:])
	w1 := binary.LittleEndian.Uint64(b[8:])
	return Mapping{
		Offset:  w0 & (1<<50 - 1),
		Length:  uint32(w0 >> 50),
		MOffset: w1 & MaxMOffset,
		Zeroed:  w1>>55&1 != 0,
		Tag:     uint8(w1 >> 56),
	}
}

// DecodeIndex decodes raw records, drops padding (offset == InvalidOffset)
// and, when resetTag is set, clears every tag as upstream's loaders do.
func DecodeIndex(raw []byte, resetTag bool) []Mapping {
	n := len(raw) / RecordSize
	out := make([]Mapping, 0, n)
	for i := 0; i < n; i++ {
		m := DecodeMapping(raw[i*RecordSize:])
		if m.IsInvalid() {
			continue
		}
		if resetTag {
			m.Tag = 0
		}
		out = append(out, m)
	}
	return out
}

// checkOrder verifies that records are sorted and non-overlapping
// (FORMAT-LSMT §6.2 step 7).
func checkOrder(ms []Mapping) error {
	for i := 1; i < len(ms); i++ {
		if ms[i-1].End() > ms[i].Offset {
			return fmt.Errorf("lsmt: index records %d %v and %d %v overlap or are unsorted: %w", i-1, ms[i-1], i, ms[i], core.ErrCorrupt)
		}
	}
	return nil
}

// checkRange verifies the moffset of every record against the data region
// [begin, end) in sectors (FORMAT-LSMT §6.2 step 8).
func checkRange(ms []Mapping, begin, end uint64) error {
	for i, m := range ms {
		if err := checkOneRange(m, begin, end); err != nil {
			return fmt.Errorf("lsmt: index record %d %v: %w", i, m, err)
		}
	}
	return nil
}

func checkOneRange(m Mapping, begin, end uint64) error {
	if m.Zeroed {
		if m.MOffset < begin || m.MOffset > end {
			return fmt.Errorf("zeroed record outside the data region [%d, %d]: %w", begin, end, core.ErrCorrupt)
		}
		return nil
	}
	if m.MOffset < begin || m.MOffset >= end || m.MEnd() <= begin || m.MEnd() > end {
		return fmt.Errorf("data outside the data region [%d, %d): %w", begin, end, core.ErrCorrupt)
	}
	return nil
}
