package core

import (
	"errors"
	"io"
)

// SectorSize is the unit of addressing of LSMT layers and of the block devices
// the frontends expose.
const SectorSize = 512

// File is a block file: fixed-size, random-access storage. Reads past Size
// return io.EOF after the bytes that exist, as io.ReaderAt requires. A File
// that cannot be written returns an error wrapping ErrReadOnly from WriteAt.
//
// Implementations are safe for concurrent use by multiple goroutines unless
// their documentation says otherwise.
type File interface {
	io.ReaderAt
	io.WriterAt
	// Size is the size of the file in bytes.
	Size() int64
	// Sync makes every completed write durable.
	Sync() error
	// Close releases the file. It waits for operations in flight.
	Close() error
}

// Discarder is implemented by files that can deallocate a range. A discarded
// range reads back as zeros.
type Discarder interface {
	Discard(off, length int64) error
}

// ZeroWriter is implemented by files that can write zeros to a range without
// being handed a buffer of zeros. The range reads back as zeros.
type ZeroWriter interface {
	WriteZeroes(off, length int64) error
}

// ExtentFlags describes the allocation of an Extent. The values are those of
// the NBD base:allocation meta context so that frontends can pass them on.
type ExtentFlags uint32

const (
	// ExtentHole marks a range that has no storage allocated to it.
	ExtentHole ExtentFlags = 1 << 0
	// ExtentZero marks a range that reads as zeros.
	ExtentZero ExtentFlags = 1 << 1
)

// Extent is a contiguous range of a file with uniform allocation.
type Extent struct {
	Offset int64
	Length int64
	Flags  ExtentFlags
}

// BlockStatuser is implemented by files that can tell which ranges hold data
// and which are holes or zeros. BlockStatus describes [off, off+length) with
// contiguous, ordered extents; it may describe less than asked (at least one
// extent) when the answer would be long.
type BlockStatuser interface {
	BlockStatus(off, length int64) ([]Extent, error)
}

// Sentinel errors shared by every implementation. Implementations wrap them
// with context; callers test with errors.Is.
var (
	// ErrReadOnly is returned by writes to a read-only file.
	ErrReadOnly = errors.New("read-only")
	// ErrCorrupt reports on-disk or on-wire data that fails validation
	// (bad magic, impossible index, truncated file). Frontends report it as
	// a medium error, never as data.
	ErrCorrupt = errors.New("corrupt data")
	// ErrChecksum reports data whose checksum does not match. It wraps
	// ErrCorrupt's meaning: such data is never returned to a reader.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrOutOfRange reports an access beyond the end of a file.
	ErrOutOfRange = errors.New("out of range")
	// ErrUnsupported reports an operation a file or an implementation does
	// not support.
	ErrUnsupported = errors.New("unsupported")
	// ErrClosed reports use of a closed file, engine or cache.
	ErrClosed = errors.New("closed")
)
