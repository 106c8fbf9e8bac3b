// Package prefetch records which parts of an image's layers a container
// reads at start-up and replays those reads later to warm the caches, in
// upstream overlaybd's trace file format (REMOTE.md §10).
//
// The trace path P decides the mode (DetectMode): P missing, nothing; P
// empty, record; P holding a binary trace, replay. Recording wraps each
// lower layer's unwrapped file (after tar and ZFile) with Recorder.Wrap and
// writes the trace when the device closes or when "<P>.lock" is removed.
// Replay reads the recorded ranges with prefetchConfig.concurrency workers
// through the same layer files, which fills the caches beneath them.
//
// A trace that is a list of file names (upstream's "dynamic prefetch") needs
// the image's filesystem metadata; it is reported as not supported yet.
package prefetch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
)

// Magic is the trace file's magic: the CRC-32 of "Container Image Trace
// Format".
const Magic = 0xC2EF1820

// HeaderSize and RecordSize are the sizes of the file header and of one
// record.
const (
	HeaderSize = 24
	RecordSize = 24
)

// Operations of a record.
const (
	OpRead  = 'R'
	OpWrite = 'W'
)

// ErrBadTrace reports a trace file that fails its checks (magic, size,
// checksum).
var ErrBadTrace = errors.New("bad trace file")

// ErrFileList reports a trace that is a list of files, which is not
// supported yet.
var ErrFileList = errors.New("file-list prefetch is not supported yet")

// Record is one read of a layer.
type Record struct {
	Op     byte
	Layer  uint32
	Count  uint64
	Offset int64
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum chains the raw CRC32C (no initial or final inversion) of b onto
// crc.
func Checksum(crc uint32, b []byte) uint32 {
	return ^crc32.Update(^crc, castagnoli, b)
}

// Encode returns the trace file for records.
func Encode(records []Record) []byte {
	out := make([]byte, HeaderSize+RecordSize*len(records))
	body := out[HeaderSize:]
	for i, r := range records {
		b := body[i*RecordSize:]
		b[0] = r.Op
		binary.LittleEndian.PutUint32(b[4:], r.Layer)
		binary.LittleEndian.PutUint64(b[8:], r.Count)
		binary.LittleEndian.PutUint64(b[16:], uint64(r.Offset))
	}
	binary.LittleEndian.PutUint32(out[0:], Magic)
	binary.LittleEndian.PutUint64(out[8:], uint64(len(body)))
	binary.LittleEndian.PutUint32(out[16:], Checksum(0, body))
	return out
}

// IsTrace reports whether b starts like a binary trace (upstream's test for
// replay versus file-list mode).
func IsTrace(b []byte) bool {
	return len(b) >= HeaderSize && binary.LittleEndian.Uint32(b) == Magic
}

// Decode parses and checks a trace file: magic, data size equal to the
// file's, checksum over the records as stored.
func Decode(b []byte) ([]Record, error) {
	if !IsTrace(b) {
		return nil, fmt.Errorf("%w: no trace magic", ErrBadTrace)
	}
	size := binary.LittleEndian.Uint64(b[8:])
	if size%RecordSize != 0 || size != uint64(len(b)-HeaderSize) {
		return nil, fmt.Errorf("%w: data size %d for a %d-byte file", ErrBadTrace, size, len(b))
	}
	body := b[HeaderSize:]
	if want, got := binary.LittleEndian.Uint32(b[16:]), Checksum(0, body); want != got {
		return nil, fmt.Errorf("%w: checksum %#08x, computed %#08x", ErrBadTrace, want, got)
	}
	recs := make([]Record, len(body)/RecordSize)
	for i := range recs {
		r := body[i*RecordSize:]
		recs[i] = Record{Op: r[0], Layer: binary.LittleEndian.Uint32(r[4:]),
			Count: binary.LittleEndian.Uint64(r[8:]), Offset: int64(binary.LittleEndian.Uint64(r[16:]))}
	}
	return recs, nil
}

// Mode is what a trace path asks for.
type Mode int

const (
	// Disabled: the path does not exist.
	Disabled Mode = iota
	// RecordMode: the file is empty.
	RecordMode
	// ReplayMode: the file holds a binary trace.
	ReplayMode
	// FileListMode: the file holds something else (a list of files).
	FileListMode
)

// DetectMode examines the trace path as upstream does.
func DetectMode(path string) (Mode, error) {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return Disabled, nil
	}
	if err != nil {
		return Disabled, fmt.Errorf("trace %s: %w", path, err)
	}
	if st.Size() == 0 {
		return RecordMode, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return Disabled, fmt.Errorf("trace %s: %w", path, err)
	}
	defer f.Close()
	hdr := make([]byte, HeaderSize)
	if n, _ := f.ReadAt(hdr, 0); n == HeaderSize && IsTrace(hdr) {
		return ReplayMode, nil
	}
	return FileListMode, nil
}
