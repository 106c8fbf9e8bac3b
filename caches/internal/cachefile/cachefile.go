// Package cachefile opens the caches' own files (data, media, metadata)
// through an IO engine, so that their reads and writes are the engine's,
// and offers what the caches need beyond core.File, through the file's
// descriptor: truncation, hole punching, allocation, SEEK_HOLE/SEEK_DATA
// and the allocated size.
//
// Cache files are opened buffered (core.OpenOptions.Buffered), also under
// engines that use O_DIRECT by default: warm reads are small and of any
// alignment, and the download cache's file is shared with the background
// download's buffered writes; the page cache is what serves them.
package cachefile

import (
	"fmt"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/engines/psync"
)

// Engine returns e, or, when e is nil, a new psync engine that the caller
// owns (own is true: close it after the files it opened).
func Engine(e core.Engine, log *slog.Logger) (eng core.Engine, own bool) {
	if e != nil {
		return e, false
	}
	return psync.New(core.EngineConfig{Logger: log}), true
}

// descriptorFile is an engine file that exposes its descriptor and
// truncation, as the engines of this module do.
type descriptorFile interface {
	core.File
	Fd() uintptr
	Truncate(size int64) error
}

// File is a cache file opened through an engine. Its core.File methods are
// the engine's; the others work on the descriptor.
type File struct {
	core.File
	df   descriptorFile
	fd   int
	path string
}

// Open opens (creating it if needed) path for reading and writing through
// e. Engines whose files do not expose their descriptor are refused with
// core.ErrUnsupported.
func Open(e core.Engine, path string) (*File, error) {
	f, err := e.Open(path, core.OpenOptions{Flag: os.O_RDWR | os.O_CREATE, Perm: 0o644, Buffered: true})
	if err != nil {
		return nil, err
	}
	df, ok := f.(descriptorFile)
	if !ok {
		f.Close()
		return nil, fmt.Errorf("open %s: files of io engine %s have no descriptor: %w", path, e.Name(), core.ErrUnsupported)
	}
	return &File{File: f, df: df, fd: int(df.Fd()), path: path}, nil
}

// Path returns the path the file was opened with.
func (f *File) Path() string { return f.path }

// Fd returns the file's descriptor.
func (f *File) Fd() int { return f.fd }

// Truncate changes the file's size.
func (f *File) Truncate(size int64) error { return f.df.Truncate(size) }

// Reset makes the file one hole of size bytes (truncating it to 0 first
// drops every block).
func (f *File) Reset(size int64) error {
	if err := f.df.Truncate(0); err != nil {
		return err
	}
	return f.df.Truncate(size)
}

// Punch deallocates [off, off+length) without changing the size; the range
// reads as zeros afterwards.
func (f *File) Punch(off, length int64) error {
	if err := unix.Fallocate(f.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length); err != nil {
		return fmt.Errorf("punch %s [%d, +%d): %w", f.path, off, length, err)
	}
	return nil
}

// Allocate allocates [off, off+length) without changing the size.
func (f *File) Allocate(off, length int64) error {
	if err := unix.Fallocate(f.fd, unix.FALLOC_FL_KEEP_SIZE, off, length); err != nil {
		return fmt.Errorf("allocate %s [%d, +%d): %w", f.path, off, length, err)
	}
	return nil
}

// Stat returns the file's size and the bytes allocated to it.
func (f *File) Stat() (size, allocated int64, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return 0, 0, fmt.Errorf("stat %s: %w", f.path, err)
	}
	return st.Size, st.Blocks * 512, nil
}

// Statfs returns the statistics of the file's filesystem.
func (f *File) Statfs() (unix.Statfs_t, error) {
	var st unix.Statfs_t
	err := unix.Fstatfs(f.fd, &st)
	return st, err
}

// SeekHole returns the start of the first hole at or after off (the
// file's end counts as a hole).
func (f *File) SeekHole(off int64) (int64, error) { return unix.Seek(f.fd, off, unix.SEEK_HOLE) }

// SeekData returns the start of the first data at or after off; the error
// is unix.ENXIO when there is none.
func (f *File) SeekData(off int64) (int64, error) { return unix.Seek(f.fd, off, unix.SEEK_DATA) }
