// Command overlaybd-info describes an overlaybd file: what it is (an LSMT
// writable data or index file, a committed or sealed layer, a ZFile, a
// tar-wrapped layer, or anything else), its header and trailer fields, its
// index record count and extent statistics; wrappers nest the description
// of what they wrap. As text, or as JSON with --json:
//
//	overlaybd-info [--json] [--service_config_path F] FILE
//
// --service_config_path reads overlaybd.json for its codecPlugins, which then
// decode ZFile blocks here as in the daemons.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	_ "github.com/overlaybd-go/overlaybd/codecs/all"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/core/envelope"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/internal/cli"
	"github.com/overlaybd-go/overlaybd/plugins"
)

const usage = `Usage: overlaybd-info [--json] [--service_config_path F] FILE

Describe an overlaybd file: an LSMT writable data or index file, a committed
or sealed layer, a ZFile, overlaybd's tar envelope, or anything else (raw).
Wrappers (tar, ZFile) nest the description of their content. The file is
opened read-only.

JSON keys (--json):
  path          the FILE argument (top level only)
  size          size in bytes of this level (the file, a tar payload, the
                content of a ZFile)
  kind          "tar", "zfile", "lsmt-committed", "lsmt-sealed",
                "lsmt-writable-data", "lsmt-writable-sparse-data",
                "lsmt-writable-index" or "raw"
  tar           tar envelope: member, pax (bool), payloadOffset, payloadSize
  zfile         ZFile: algorithm, algorithmNumber, blockSize, blocks,
                originalSize, storedSize, crc (per-block CRC32C present),
                flags, flagNames, headerOverwritten, indexOffset, indexCRC,
                digest
  lsmt          LSMT layer:
    header, trailer   flags, flagNames ("header", "data", "sealed",
                      "sparse"), indexOffset, indexSize, virtualSize, uuid,
                      parentUUID (as stored), version, subVersion, tag
                      (the commit message); trailer only for committed and
                      sealed layers
    indexRecords      records stored in the index (committed: padding
                      included; writable index: records in the log)
    stats             over the layer's index (a writable index: over its log,
                      where later records may overlap earlier ones):
                      records, dataRecords, zeroedRecords, paddingRecords,
                      dataBytes, zeroedBytes, unmappedBytes (of the virtual
                      size, not for a writable index), largestRecordBytes,
                      dataExtents (runs of adjacent data records)
    dataBytes         bytes after the header of an append-only data file
                      (its records are in the index file)
    tornTailBytes     bytes of a partial record at the end of a writable index
  inner         the description of what a tar envelope or ZFile holds

Exit status: 0 success, 105 invalid option, 106 no FILE, 109 extra
arguments, 255 the file cannot be read or is corrupt, or the service
configuration cannot be loaded or its codec plugins cannot start.

Options:
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("overlaybd-info", stderr, usage)
	asJSON := fs.Bool("json", false, "print JSON (keys above) instead of text")
	svc := fs.String("service_config_path", "", "service configuration, for its codecPlugins (default "+config.DefaultGlobalPath+", built-in defaults when it does not exist; an explicit path must exist)")
	if err := cli.Parse(fs, args); err != nil {
		return cli.PrefixedParseError(stderr, "overlaybd-info", err, cli.ExitValidation)
	}
	switch fs.NArg() {
	case 0:
		fs.Usage()
		fmt.Fprintln(stderr, "overlaybd-info: FILE is required")
		return cli.ExitRequired
	case 1:
	default:
		fmt.Fprintf(stderr, "overlaybd-info: one FILE expected, got %d arguments\n", fs.NArg())
		return cli.ExitExtras
	}
	_, host, err := plugins.LoadForTool(context.Background(), *svc)
	if err != nil {
		fmt.Fprintf(stderr, "overlaybd-info: %v\n", err)
		return cli.ExitFailure
	}
	defer host.CloseLogging(nil)
	info, err := describe(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "overlaybd-info: %v\n", err)
		return cli.ExitFailure
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(info); err != nil {
			fmt.Fprintf(stderr, "overlaybd-info: %v\n", err)
			return cli.ExitFailure
		}
		return cli.ExitOK
	}
	printText(stdout, info, "")
	return cli.ExitOK
}

// Info describes one level of a file. The JSON keys are documented in the
// usage text.
type Info struct {
	Path  string     `json:"path,omitempty"`  // the FILE argument (top level only)
	Size  int64      `json:"size"`            // bytes of this level
	Kind  string     `json:"kind"`            // what this level is
	Tar   *TarInfo   `json:"tar,omitempty"`   // the tar envelope
	ZFile *ZFileInfo `json:"zfile,omitempty"` // the ZFile
	LSMT  *LSMTInfo  `json:"lsmt,omitempty"`  // the LSMT file
	Inner *Info      `json:"inner,omitempty"` // what a wrapper holds
}

// TarInfo describes a tar envelope.
type TarInfo struct {
	Member        string `json:"member"`        // member name
	PAX           bool   `json:"pax"`           // a PAX header precedes it
	PayloadOffset int64  `json:"payloadOffset"` // offset of the payload
	PayloadSize   int64  `json:"payloadSize"`   // size of the payload
}

// ZFileInfo describes a ZFile.
type ZFileInfo struct {
	Algorithm         string   `json:"algorithm"`         // codec name
	AlgorithmNumber   uint8    `json:"algorithmNumber"`   // ZFile algorithm number
	BlockSize         uint32   `json:"blockSize"`         // uncompressed block size
	Blocks            int64    `json:"blocks"`            // number of blocks
	OriginalSize      uint64   `json:"originalSize"`      // size of the content
	StoredSize        int64    `json:"storedSize"`        // size of the ZFile
	CRC               bool     `json:"crc"`               // blocks carry a CRC32C
	Flags             uint64   `json:"flags"`             // flags of the header at offset 0
	FlagNames         []string `json:"flagNames"`         // their names
	HeaderOverwritten bool     `json:"headerOverwritten"` // the header holds the index fields
	IndexOffset       uint64   `json:"indexOffset"`       // offset of the jump table
	IndexCRC          uint32   `json:"indexCRC"`          // CRC of the jump table
	Digest            uint32   `json:"digest"`            // digest of the header or trailer used
}

// LSMTInfo describes an LSMT file.
type LSMTInfo struct {
	Header        HeaderInfo  `json:"header"`                  // the header at offset 0
	Trailer       *HeaderInfo `json:"trailer,omitempty"`       // the trailer of a read-only layer
	IndexRecords  *uint64     `json:"indexRecords,omitempty"`  // records stored in the index
	Stats         *Stats      `json:"stats,omitempty"`         // extent statistics
	DataBytes     *int64      `json:"dataBytes,omitempty"`     // data of an append-only data file
	TornTailBytes int64       `json:"tornTailBytes,omitempty"` // partial record at the end of an index
}

// HeaderInfo is an LSMT header or trailer.
type HeaderInfo struct {
	Flags       uint32   `json:"flags"`       // flag bits as stored
	FlagNames   []string `json:"flagNames"`   // names of the defined bits set
	IndexOffset uint64   `json:"indexOffset"` // index_offset field
	IndexSize   uint64   `json:"indexSize"`   // index_size field
	VirtualSize uint64   `json:"virtualSize"` // virtual_size field
	UUID        string   `json:"uuid"`        // uuid as stored
	ParentUUID  string   `json:"parentUUID"`  // parent_uuid as stored
	Version     uint8    `json:"version"`     // version field
	SubVersion  uint8    `json:"subVersion"`  // sub_version field
	Tag         string   `json:"tag"`         // user tag (commit message)
}

// Stats are extent statistics over index records.
type Stats struct {
	Records            int    `json:"records"`                 // valid records
	DataRecords        int    `json:"dataRecords"`             // records of data
	ZeroedRecords      int    `json:"zeroedRecords"`           // records of zeroed ranges
	PaddingRecords     uint64 `json:"paddingRecords"`          // padding records in the index
	DataBytes          uint64 `json:"dataBytes"`               // bytes of data records
	ZeroedBytes        uint64 `json:"zeroedBytes"`             // bytes of zeroed records
	UnmappedBytes      *int64 `json:"unmappedBytes,omitempty"` // virtual bytes no record covers
	LargestRecordBytes uint64 `json:"largestRecordBytes"`      // the largest record
	DataExtents        int    `json:"dataExtents"`             // runs of adjacent data records
}

func describe(path string) (*Info, error) {
	osf, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	f := psync.NewFile(osf, nil)
	inner, desc, err := envelope.Open(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	defer inner.Close()
	top := &Info{Path: path, Size: desc.Size}
	cur := top
	for i, k := range desc.Kinds {
		if i > 0 {
			next := &Info{}
			cur.Inner, cur = next, next
		}
		switch k {
		case envelope.KindTar:
			t := desc.Tar
			cur.Kind = "tar"
			cur.Tar = &TarInfo{Member: t.Name, PAX: t.PAX, PayloadOffset: t.PayloadOffset, PayloadSize: t.PayloadSize}
			if i == 0 {
				break
			}
			cur.Size = t.PayloadSize
		case envelope.KindZFile:
			z := desc.ZFile
			h := z.Header
			cur.Kind = "zfile"
			cur.Size = z.StoredSize
			cur.ZFile = &ZFileInfo{Algorithm: z.Algorithm, AlgorithmNumber: h.Algorithm, BlockSize: h.BlockSize, Blocks: z.Blocks,
				OriginalSize: h.OriginalSize, StoredSize: z.StoredSize, CRC: h.Verify, Flags: z.FirstHeader.Flags,
				FlagNames: zfileFlagNames(z.FirstHeader.Flags), HeaderOverwritten: z.FirstHeader.Flags&(1<<3) != 0,
				IndexOffset: h.IndexOffset, IndexCRC: h.IndexCRC, Digest: h.Digest}
		case envelope.KindLSMT:
			cur.Size = inner.Size()
			if err := describeLSMT(cur, inner); err != nil {
				return nil, err
			}
		default:
			cur.Kind = "raw"
			cur.Size = inner.Size()
		}
	}
	return top, nil
}

func zfileFlagNames(f uint64) []string {
	names := []string{"header", "data", "sealed", "header-overwrite", "digest", "index-compressed"}
	var out []string
	for i, n := range names {
		if f&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}

func headerInfo(h *lsmt.Header) HeaderInfo {
	var names []string
	for _, fl := range []struct {
		bit  lsmt.Flags
		name string
	}{{lsmt.FlagHeader, "header"}, {lsmt.FlagDataFile, "data"}, {lsmt.FlagSealed, "sealed"}, {lsmt.FlagSparse, "sparse"}} {
		if h.Flags&fl.bit != 0 {
			names = append(names, fl.name)
		}
	}
	return HeaderInfo{Flags: uint32(h.Flags), FlagNames: names, IndexOffset: h.IndexOffset, IndexSize: h.IndexSize,
		VirtualSize: h.VirtualSize, UUID: h.RawUUID, ParentUUID: h.RawParentUUID, Version: h.Version,
		SubVersion: h.SubVersion, Tag: string(h.Tag)}
}

// readHeader reads and parses the LSMT header or trailer block at off.
func readHeader(f core.File, off int64) (*lsmt.Header, error) {
	b := make([]byte, lsmt.HeaderSize)
	if _, err := f.ReadAt(b, off); err != nil && err != io.EOF {
		return nil, err
	}
	return lsmt.ParseHeader(b)
}

// noClose keeps the layer functions from closing the file described; it
// keeps the descriptor visible (SEEK_DATA/SEEK_HOLE of sparse layers).
type noClose struct{ core.File }

// Close does nothing: the caller closes the file.
func (noClose) Close() error { return nil }

// Fd returns the descriptor of the underlying file, or ^uintptr(0) when it
// has none (the layer functions then get an error rather than a wrong
// answer).
func (n noClose) Fd() uintptr {
	if f, ok := n.File.(interface{ Fd() uintptr }); ok {
		return f.Fd()
	}
	return ^uintptr(0)
}

func describeLSMT(info *Info, f core.File) error {
	size := f.Size()
	if size < lsmt.HeaderSize {
		return fmt.Errorf("LSMT file of %d bytes, shorter than its header: %w", size, core.ErrCorrupt)
	}
	h, err := readHeader(f, 0)
	if err != nil {
		return err
	}
	li := &LSMTInfo{Header: headerInfo(h)}
	info.LSMT = li
	sealedTrailer := false
	if h.IsDataFile() && size >= 2*lsmt.HeaderSize {
		if t, err := readHeader(f, size-lsmt.HeaderSize); err == nil && !t.IsHeader() && t.IsSealed() {
			sealedTrailer = true
		}
	}
	switch {
	case h.IsDataFile() && (h.IsSealed() || sealedTrailer):
		ro, err := lsmt.OpenReadOnly(noClose{f})
		if err != nil {
			return err
		}
		defer ro.Close()
		info.Kind = "lsmt-sealed"
		if h.IsSealed() {
			info.Kind = "lsmt-committed"
		}
		t := headerInfo(ro.Trailer())
		li.Trailer = &t
		n := ro.Trailer().IndexSize
		li.IndexRecords = &n
		st := stats(ro.Mappings(), int64(ro.Trailer().VirtualSize))
		st.PaddingRecords = n - uint64(len(ro.Mappings()))
		li.Stats = st
	case h.IsDataFile() && h.IsSparse():
		info.Kind = "lsmt-writable-sparse-data"
		w, err := lsmt.OpenWritable(noClose{f}, nil)
		if err != nil {
			return err
		}
		defer w.Close()
		li.Stats = stats(w.Mappings(), w.Size())
	case h.IsDataFile():
		info.Kind = "lsmt-writable-data"
		n := size - lsmt.HeaderSize
		li.DataBytes = &n
	default:
		info.Kind = "lsmt-writable-index"
		if h.IndexOffset < lsmt.HeaderSize || h.IndexOffset > uint64(size) {
			return fmt.Errorf("writable index: index offset %d outside the file of %d bytes: %w", h.IndexOffset, size, core.ErrCorrupt)
		}
		body := size - int64(h.IndexOffset)
		li.TornTailBytes = body % lsmt.RecordSize
		raw := make([]byte, body-li.TornTailBytes)
		if _, err := f.ReadAt(raw, int64(h.IndexOffset)); err != nil && err != io.EOF {
			return err
		}
		n := uint64(len(raw) / lsmt.RecordSize)
		li.IndexRecords = &n
		recs := lsmt.DecodeIndex(raw, true)
		st := stats(recs, -1)
		st.PaddingRecords = n - uint64(len(recs))
		li.Stats = st
	}
	return nil
}

// stats computes extent statistics of records; vsize < 0 leaves out the
// unmapped bytes (records that may overlap).
func stats(recs []lsmt.Mapping, vsize int64) *Stats {
	s := &Stats{Records: len(recs)}
	var prevEnd uint64
	prevData := false
	for _, m := range recs {
		b := uint64(m.Length) * lsmt.SectorSize
		s.LargestRecordBytes = max(s.LargestRecordBytes, b)
		if m.Zeroed {
			s.ZeroedRecords++
			s.ZeroedBytes += b
			prevData = false
			continue
		}
		s.DataRecords++
		s.DataBytes += b
		if !prevData || m.Offset != prevEnd {
			s.DataExtents++
		}
		prevData, prevEnd = true, m.End()
	}
	if vsize >= 0 {
		u := vsize - int64(s.DataBytes+s.ZeroedBytes)
		s.UnmappedBytes = &u
	}
	return s
}

func printText(w io.Writer, in *Info, indent string) {
	p := func(format string, a ...any) { fmt.Fprintf(w, indent+format+"\n", a...) }
	if in.Path != "" {
		p("file: %s", in.Path)
	}
	p("kind: %s", in.Kind)
	p("size: %d", in.Size)
	if t := in.Tar; t != nil {
		p("tar: member %s, payload at %d, %d bytes, pax %v", t.Member, t.PayloadOffset, t.PayloadSize, t.PAX)
	}
	if z := in.ZFile; z != nil {
		p("zfile: %s (%d), block size %d, %d blocks, crc %v", z.Algorithm, z.AlgorithmNumber, z.BlockSize, z.Blocks, z.CRC)
		p("  original size %d, stored size %d, index at %d (crc %#08x), digest %#08x", z.OriginalSize, z.StoredSize, z.IndexOffset, z.IndexCRC, z.Digest)
		p("  flags %#x (%s)", z.Flags, strings.Join(z.FlagNames, ","))
	}
	if l := in.LSMT; l != nil {
		ph := func(name string, h *HeaderInfo) {
			p("%s: flags %#x (%s), virtual size %d, index offset %d, index size %d", name, h.Flags, strings.Join(h.FlagNames, ","), h.VirtualSize, h.IndexOffset, h.IndexSize)
			p("  uuid %q, parent %q, version %d.%d, tag %q", h.UUID, h.ParentUUID, h.Version, h.SubVersion, h.Tag)
		}
		ph("header", &l.Header)
		if l.Trailer != nil {
			ph("trailer", l.Trailer)
		}
		if l.IndexRecords != nil {
			p("index records: %d", *l.IndexRecords)
		}
		if l.DataBytes != nil {
			p("data bytes: %d (records are in the index file)", *l.DataBytes)
		}
		if l.TornTailBytes != 0 {
			p("torn tail: %d bytes of a partial record", l.TornTailBytes)
		}
		if s := l.Stats; s != nil {
			p("records: %d (%d data, %d zeroed, %d padding), %d data extents", s.Records, s.DataRecords, s.ZeroedRecords, s.PaddingRecords, s.DataExtents)
			p("bytes: %d data, %d zeroed, largest record %d", s.DataBytes, s.ZeroedBytes, s.LargestRecordBytes)
			if s.UnmappedBytes != nil {
				p("unmapped: %d", *s.UnmappedBytes)
			}
		}
	}
	if in.Inner != nil {
		p("contains:")
		printText(w, in.Inner, indent+"  ")
	}
}
