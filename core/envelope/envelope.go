// Package envelope recognises what a layer blob is by its content and
// unwraps it: overlaybd's one-member tar envelope (FORMAT-ZFILE Appendix B),
// a ZFile, and finally an LSMT layer or any other file. [Open] returns the
// innermost file (a plain LSMT layer, or raw bytes) and a Description of the
// wrappers, so that every place that accepts a layer accepts any of them.
//
// The write side is [NewTarWriter] for the tar envelope and [Create], which
// makes an output file compressed as a ZFile and/or wrapped in tar, and
// removes it when anything fails.
package envelope

import (
	"bytes"
	"fmt"
	"io"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/zfile"
)

// Kind names one layer of wrapping, or the innermost content.
type Kind string

// Kinds of content Open recognises.
const (
	KindTar   Kind = "tar"   // overlaybd's tar envelope
	KindZFile Kind = "zfile" // ZFile compression
	KindLSMT  Kind = "lsmt"  // an LSMT layer (header magic at offset 0)
	KindRaw   Kind = "raw"   // anything else
)

// lsmtMagic is magic0 and magic1 of an LSMT header (FORMAT-LSMT §2).
var lsmtMagic = []byte{
	'L', 'S', 'M', 'T', 0, 1, 2, 0,
	0x65, 0x7E, 0x63, 0xD2, 0x94, 0x44, 0x08, 0x4C, 0xA2, 0xD2, 0xC8, 0xEC, 0x4F, 0xCF, 0xAE, 0x8A,
}

// Description says how a blob was wrapped.
type Description struct {
	// Kinds lists the wrappers from the outside in, ending with the kind
	// of the innermost content: e.g. [tar zfile lsmt], [zfile raw], [lsmt].
	Kinds []Kind
	// Size is the size of the blob as given to Open.
	Size int64
	// Tar describes the tar envelope, if any.
	Tar *TarInfo
	// ZFile describes the ZFile, if any.
	ZFile *ZFileInfo
	// InnerSize is the size of the innermost content.
	InnerSize int64
}

// Inner returns the kind of the innermost content.
func (d *Description) Inner() Kind { return d.Kinds[len(d.Kinds)-1] }

// Has reports whether k is among the kinds.
func (d *Description) Has(k Kind) bool {
	for _, x := range d.Kinds {
		if x == k {
			return true
		}
	}
	return false
}

// String renders the kinds as "tar > zfile > lsmt".
func (d *Description) String() string {
	var b bytes.Buffer
	for i, k := range d.Kinds {
		if i > 0 {
			b.WriteString(" > ")
		}
		b.WriteString(string(k))
	}
	return b.String()
}

// TarInfo describes a tar envelope.
type TarInfo struct {
	Name          string // member name (overlaybd.commit)
	PAX           bool   // a PAX extended header preceded the member
	PayloadOffset int64  // offset of the payload in the blob
	PayloadSize   int64
}

// ZFileInfo describes a ZFile.
type ZFileInfo struct {
	Offset      int64        // offset of the ZFile in the blob
	Header      zfile.Header // the header or trailer whose fields are used
	FirstHeader zfile.Header // the header at offset 0 of the ZFile
	Algorithm   string
	Blocks      int64
	StoredSize  int64 // size of the ZFile
}

// Option configures Open.
type Option func(*config)

type config struct {
	zopts []zfile.ReaderOption
}

// WithZFileOptions passes options to the ZFile reader.
func WithZFileOptions(o ...zfile.ReaderOption) Option {
	return func(c *config) { c.zopts = append(c.zopts, o...) }
}

// Open recognises f by content (tar envelope, then ZFile, then LSMT) and
// returns the innermost file with a description. The returned file owns f:
// closing it closes f. On error f is left open. Bad wrappers give errors
// wrapping core.ErrCorrupt; a ZFile whose header digest fails is an error,
// as upstream's open fails.
func Open(f core.File, opts ...Option) (core.File, *Description, error) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	d := &Description{Size: f.Size()}
	cur := f
	var base int64
	ti, err := probeTar(f)
	if err != nil {
		return nil, nil, err
	}
	if ti != nil {
		d.Kinds = append(d.Kinds, KindTar)
		d.Tar = ti
		cur = &Section{f: f, off: ti.PayloadOffset, size: ti.PayloadSize}
		base = ti.PayloadOffset
	}
	isZ, err := zfile.IsZFile(cur)
	if err != nil && cur.Size() >= zfile.HeaderSize {
		return nil, nil, fmt.Errorf("envelope: %w", err)
	}
	if isZ {
		zr, err := zfile.Open(cur, cfg.zopts...)
		if err != nil {
			return nil, nil, fmt.Errorf("envelope: %w", err)
		}
		d.Kinds = append(d.Kinds, KindZFile)
		d.ZFile = &ZFileInfo{
			Offset: base, Header: zr.Header(), FirstHeader: zr.FirstHeader(), Algorithm: zr.Algorithm(),
			Blocks: zr.BlockCount(), StoredSize: cur.Size(),
		}
		cur = zr
	}
	kind, err := sniff(cur)
	if err != nil {
		return nil, nil, fmt.Errorf("envelope: %w", err)
	}
	d.Kinds = append(d.Kinds, kind)
	d.InnerSize = cur.Size()
	return cur, d, nil
}

// sniff tells an LSMT layer from other content.
func sniff(f io.ReaderAt) (Kind, error) {
	b := make([]byte, len(lsmtMagic))
	n, err := f.ReadAt(b, 0)
	if n < len(b) {
		if err != nil && err != io.EOF {
			return "", fmt.Errorf("read magic: %w", err)
		}
		return KindRaw, nil
	}
	if bytes.Equal(b, lsmtMagic) {
		return KindLSMT, nil
	}
	return KindRaw, nil
}

// Section is a read-only window [off, off+size) of a file: the payload of a
// tar envelope. Close closes the underlying file.
type Section struct {
	f    core.File
	off  int64
	size int64
}

// NewSection returns the window [off, off+size) of f.
func NewSection(f core.File, off, size int64) *Section { return &Section{f: f, off: off, size: size} }

// ReadAt implements io.ReaderAt within the window.
func (s *Section) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("envelope: read at %d: %w", off, core.ErrOutOfRange)
	}
	if off >= s.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > s.size-off {
		p = p[:s.size-off]
		eof = io.EOF
	}
	n, err := s.f.ReadAt(p, s.off+off)
	if err == io.EOF && n < len(p) {
		return n, fmt.Errorf("envelope: payload truncated at %d: %w", s.off+off+int64(n), core.ErrCorrupt)
	}
	if err != nil && err != io.EOF {
		return n, err
	}
	return n, eof
}

// WriteAt implements core.File; a section is read-only.
func (s *Section) WriteAt([]byte, int64) (int, error) {
	return 0, fmt.Errorf("envelope: %w", core.ErrReadOnly)
}

// Size implements core.File.
func (s *Section) Size() int64 { return s.size }

// Sync implements core.File.
func (s *Section) Sync() error { return nil }

// Close closes the underlying file.
func (s *Section) Close() error { return s.f.Close() }

// Invalidate passes core.Invalidator through to the underlying file, shifted
// to the window, so that a ZFile inside a tar envelope can have a bad block
// fetched again. Without an invalidator below it reports core.ErrUnsupported.
func (s *Section) Invalidate(off, length int64) error {
	if inv, ok := s.f.(core.Invalidator); ok {
		return inv.Invalidate(s.off+off, length)
	}
	return fmt.Errorf("envelope: invalidate: %w", core.ErrUnsupported)
}
