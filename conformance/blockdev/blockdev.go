// Package blockdev presents a kernel block device (/dev/sdX, /dev/loopN) as
// a core.File, core.Discarder and core.ZeroWriter, so that the conformance
// scenarios can drive a disk the way an application does: every read and
// write goes to the device with O_DIRECT (never the page cache), discards
// are BLKDISCARD, write-zeroes BLKZEROOUT and Sync is fsync followed, on
// SCSI disks, by SYNCHRONIZE CACHE.
//
// O_DIRECT wants buffers, offsets and lengths aligned to the logical block
// size. Reads of any alignment are served by reading the covering blocks
// into an aligned buffer and copying. Writes keep the device's contract:
// their offset and length must be whole blocks (the kernel refuses others
// with EINVAL, and so does the client). Buffers are always copied into
// aligned memory, so callers may pass any slice.
package blockdev

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/overlaybd-go/overlaybd/core"
)

// ErrUnaligned is returned for writes, discards and write-zeroes whose
// offset or length is not a whole number of logical blocks.
var ErrUnaligned = errors.New("blockdev: request not aligned to the logical block size")

// Stats are the requests a File sent to the kernel, by kind.
type Stats struct {
	Reads, Writes, Discards, Zeroes, Syncs uint64
	// SyncCache counts the SYNCHRONIZE CACHE commands sent with SG_IO.
	SyncCache uint64
	// ReadBytes and WriteBytes are the bytes read from and written to
	// the device (reads include the alignment padding).
	ReadBytes, WriteBytes uint64
}

// File is an open block device.
type File struct {
	f        *os.File
	path     string
	size     int64
	bsize    int64
	readOnly bool
	scsi     bool

	reads, writes, discards, zeroes, syncs, syncCache atomic.Uint64
	readBytes, writeBytes                             atomic.Uint64
}

var (
	_ core.File       = (*File)(nil)
	_ core.Discarder  = (*File)(nil)
	_ core.ZeroWriter = (*File)(nil)
)

// Open opens the block device at path with O_DIRECT, read-only or
// read-write. Writes to a device opened read-only fail with an error
// wrapping core.ErrReadOnly (the kernel's EBADF).
func Open(path string, readOnly bool) (*File, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("blockdev: open %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("blockdev: %s: %w", path, err)
	}
	if st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
		f.Close()
		return nil, fmt.Errorf("blockdev: %s is not a block device", path)
	}
	bf := &File{f: f, path: path, readOnly: readOnly}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	var size uint64
	var bsize int
	var ioctlErr error
	if err := rc.Control(func(fd uintptr) {
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size))); e != 0 {
			ioctlErr = fmt.Errorf("BLKGETSIZE64: %w", e)
			return
		}
		bsize, ioctlErr = unix.IoctlGetInt(int(fd), unix.BLKSSZGET)
		if ioctlErr != nil {
			ioctlErr = fmt.Errorf("BLKSSZGET: %w", ioctlErr)
		}
	}); err != nil {
		ioctlErr = err
	}
	if ioctlErr != nil {
		f.Close()
		return nil, fmt.Errorf("blockdev: %s: %w", path, ioctlErr)
	}
	if bsize <= 0 || bsize&(bsize-1) != 0 {
		f.Close()
		return nil, fmt.Errorf("blockdev: %s: bad logical block size %d", path, bsize)
	}
	bf.size, bf.bsize = int64(size), int64(bsize)
	bf.scsi = isSCSIDisk(st)
	return bf, nil
}

// isSCSIDisk reports whether the device node is an sd disk (major 8, 65-71,
// 128-135), which takes SYNCHRONIZE CACHE through SG_IO.
func isSCSIDisk(st os.FileInfo) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	m := unix.Major(sys.Rdev)
	return m == 8 || (m >= 65 && m <= 71) || (m >= 128 && m <= 135)
}

// Path is the device node.
func (b *File) Path() string { return b.path }

// BlockSize is the device's logical block size.
func (b *File) BlockSize() int64 { return b.bsize }

// Size is the device size in bytes.
func (b *File) Size() int64 { return b.size }

// Stats returns the counters.
func (b *File) Stats() Stats {
	return Stats{Reads: b.reads.Load(), Writes: b.writes.Load(), Discards: b.discards.Load(), Zeroes: b.zeroes.Load(),
		Syncs: b.syncs.Load(), SyncCache: b.syncCache.Load(), ReadBytes: b.readBytes.Load(), WriteBytes: b.writeBytes.Load()}
}

// alignedBuf returns n bytes aligned to the page size (enough for any
// logical block size and DMA alignment).
func alignedBuf(n int64) []byte {
	const page = 4096
	raw := make([]byte, n+page)
	off := (page - int(uintptr(unsafe.Pointer(unsafe.SliceData(raw)))%page)) % page
	return raw[off : off+int(n) : off+int(n)]
}

// ReadAt reads len(p) bytes at off; a read reaching past the end returns
// the bytes before it and io.EOF.
func (b *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("blockdev: read at %d: %w", off, core.ErrOutOfRange)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= b.size {
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), b.size)
	start := off / b.bsize * b.bsize
	aend := (end + b.bsize - 1) / b.bsize * b.bsize
	buf := alignedBuf(aend - start)
	got := 0
	for got < len(buf) {
		n, err := b.f.ReadAt(buf[got:], start+int64(got))
		got += n
		if err != nil {
			if err == io.EOF {
				break
			}
			return 0, fmt.Errorf("blockdev: read %s at %d (%d bytes): %w", b.path, start, len(buf), err)
		}
	}
	b.reads.Add(1)
	b.readBytes.Add(uint64(got))
	want := int(end - start)
	if got < want {
		return max(0, got-int(off-start)), fmt.Errorf("blockdev: short read of %s at %d: %d of %d bytes", b.path, start, got, want)
	}
	n := copy(p, buf[off-start:want])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// check validates a write, discard or write-zeroes of n bytes at off: it
// must be whole blocks inside the device. The kernel would refuse the
// unaligned ones too, but it truncates a write that crosses the end of the
// device to the part before it (and a discard past the end is EINVAL):
// core.File wants such a write refused whole.
func (b *File) check(op string, off, n int64) error {
	if b.readOnly {
		return fmt.Errorf("blockdev: %s on %s, opened read-only: %w", op, b.path, core.ErrReadOnly)
	}
	if off < 0 || n < 0 || off+n > b.size {
		return fmt.Errorf("blockdev: %s [%d, %d) on %s of %d bytes: %w", op, off, off+n, b.path, b.size, core.ErrOutOfRange)
	}
	if off%b.bsize != 0 || n%b.bsize != 0 {
		return fmt.Errorf("blockdev: %s [%d, %d) on %s: %w (%d)", op, off, off+n, b.path, ErrUnaligned, b.bsize)
	}
	return nil
}

// WriteAt writes p at off: whole blocks inside the device.
func (b *File) WriteAt(p []byte, off int64) (int, error) {
	if b.readOnly {
		// Let the kernel refuse it: the descriptor is read-only.
		if _, err := b.f.WriteAt(alignedBuf(b.bsize), 0); err != nil {
			return 0, fmt.Errorf("blockdev: write %s at %d: %w (%w)", b.path, off, core.ErrReadOnly, err)
		}
		return 0, fmt.Errorf("blockdev: %s is opened read-only but the kernel took a write: %w", b.path, core.ErrReadOnly)
	}
	if err := b.check("write", off, int64(len(p))); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	buf := alignedBuf(int64(len(p)))
	copy(buf, p)
	n, err := b.f.WriteAt(buf, off)
	b.writes.Add(1)
	b.writeBytes.Add(uint64(n))
	if err != nil {
		return n, fmt.Errorf("blockdev: write %s at %d (%d bytes): %w", b.path, off, len(p), err)
	}
	return n, nil
}

// blockRange issues BLKDISCARD or BLKZEROOUT over [off, off+n).
func (b *File) blockRange(req uint, op string, off, n int64) error {
	if b.readOnly {
		// The kernel refuses both ioctls on a read-only descriptor.
		if err := b.ioctlRange(req, off, n); err != nil {
			return fmt.Errorf("blockdev: %s on %s: %w (%w)", op, b.path, core.ErrReadOnly, err)
		}
		return fmt.Errorf("blockdev: %s on %s opened read-only was taken by the kernel: %w", op, b.path, core.ErrReadOnly)
	}
	if err := b.check(op, off, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	if err := b.ioctlRange(req, off, n); err != nil {
		return fmt.Errorf("blockdev: %s [%d, %d) on %s: %w", op, off, off+n, b.path, err)
	}
	return nil
}

func (b *File) ioctlRange(req uint, off, n int64) error {
	rc, err := b.f.SyscallConn()
	if err != nil {
		return err
	}
	r := [2]uint64{uint64(off), uint64(n)}
	var errno unix.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), uintptr(unsafe.Pointer(&r[0])))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// Discard deallocates [off, off+n) with BLKDISCARD.
func (b *File) Discard(off, n int64) error {
	err := b.blockRange(unix.BLKDISCARD, "discard", off, n)
	if err == nil {
		b.discards.Add(1)
	}
	return err
}

// WriteZeroes zeroes [off, off+n) with BLKZEROOUT.
func (b *File) WriteZeroes(off, n int64) error {
	err := b.blockRange(unix.BLKZEROOUT, "write-zeroes", off, n)
	if err == nil {
		b.zeroes.Add(1)
	}
	return err
}

// Sync makes the writes durable: fsync, and on SCSI disks a SYNCHRONIZE
// CACHE(10) through SG_IO, which reaches the target even when the disk
// reports its write cache off (then the kernel's flush stops at the block
// layer).
func (b *File) Sync() error {
	if err := b.f.Sync(); err != nil {
		return fmt.Errorf("blockdev: fsync %s: %w", b.path, err)
	}
	b.syncs.Add(1)
	if !b.scsi || b.readOnly {
		return nil
	}
	if err := b.sendSyncCache(); err != nil {
		return fmt.Errorf("blockdev: %s: %w", b.path, err)
	}
	b.syncCache.Add(1)
	return nil
}

// Close closes the device.
func (b *File) Close() error {
	if err := b.f.Close(); err != nil {
		return fmt.Errorf("blockdev: close %s: %w", b.path, err)
	}
	return nil
}
