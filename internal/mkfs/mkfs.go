// Package mkfs makes ext4 file systems on overlaybd block devices, as
// overlaybd-create --mkfs does upstream. The file system is laid out by
// Debian's mkfs.ext4 (e2fsprogs) in a sparse scratch file with upstream's
// parameters, and its written blocks are copied into the device: only
// non-zero 4 KiB blocks are written, so a new layer holds a few megabytes of
// metadata whatever its virtual size.
package mkfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// BlockSize is the file system's block size, upstream's.
const BlockSize = 4096

// MinSize is the smallest device mkfs accepts (mkfs.ext4's own lower bound
// for these parameters is a little under this).
const MinSize = 1 << 20

// Features are the ext4 features upstream's make_extfs sets. Upstream's
// file system has no journal.
var Features = []string{"^has_journal", "64bit", "sparse_super", "sparse_super2", "filetype",
	"resize_inode", "dir_index", "ext_attr", "dir_nlink", "large_file", "huge_file", "flex_bg",
	"extents", "extra_isize"}

// Options tune Ext4.
type Options struct {
	// TempDir holds the sparse scratch file (default os.TempDir()). Put it
	// on a file system that supports sparse files of the device's size.
	TempDir string
	// Tool is the mkfs.ext4 program (default: mkfs.ext4 from PATH, then
	// /sbin and /usr/sbin).
	Tool string
}

// Args returns the mkfs.ext4 arguments for a file system on path: upstream's
// parameters (4 KiB blocks, one inode per 16 KiB, 256-byte inodes, 5 %
// reserved, Features), root owned by 0:0, no discard and lazy inode table
// initialisation (the device reads zeros where nothing was written).
func Args(path string) []string {
	return []string{"-q", "-F", "-t", "ext4", "-b", "4096", "-i", "16384", "-I", "256", "-m", "5",
		"-O", strings.Join(Features, ","),
		"-E", "nodiscard,lazy_itable_init=1,root_owner=0:0",
		path}
}

// Ext4 makes an ext4 file system of size bytes on dst, which must read as
// zeros where nothing is written (a new layer or a new raw file).
func Ext4(ctx context.Context, dst io.WriterAt, size int64, opts Options) error {
	if size < MinSize {
		return fmt.Errorf("mkfs: device of %d bytes is too small for ext4 (at least %d)", size, MinSize)
	}
	if size%BlockSize != 0 {
		return fmt.Errorf("mkfs: device size %d is not a multiple of %d", size, BlockSize)
	}
	tool, err := findTool(opts.Tool)
	if err != nil {
		return err
	}
	scratch, err := os.CreateTemp(opts.TempDir, "overlaybd-mkfs-*.raw")
	if err != nil {
		return fmt.Errorf("mkfs: scratch file: %w", err)
	}
	defer os.Remove(scratch.Name())
	defer scratch.Close()
	if err := scratch.Truncate(size); err != nil {
		return fmt.Errorf("mkfs: scratch file of %d bytes in %s: %w", size, scratch.Name(), err)
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, tool, Args(scratch.Name())...)
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("mkfs: %s: %w: %s", tool, err, strings.TrimSpace(stderr.String()))
	}
	return copyData(ctx, dst, scratch, size)
}

// copyData copies the non-zero blocks of src's data extents into dst.
func copyData(ctx context.Context, dst io.WriterAt, src *os.File, size int64) error {
	buf := make([]byte, 1<<20)
	fd := int(src.Fd())
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // no data past off
		}
		if err != nil {
			return fmt.Errorf("mkfs: seek data at %d: %w", off, err)
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("mkfs: seek hole at %d: %w", start, err)
		}
		start -= start % BlockSize
		for pos := start; pos < end; {
			n := min(int64(len(buf)), end-pos)
			if _, err := src.ReadAt(buf[:n], pos); err != nil {
				return fmt.Errorf("mkfs: read scratch at %d: %w", pos, err)
			}
			if err := writeNonZero(dst, buf[:n], pos); err != nil {
				return err
			}
			pos += n
		}
		off = end
	}
	return nil
}

// writeNonZero writes the runs of non-zero blocks of b (at device offset
// off) to dst.
func writeNonZero(dst io.WriterAt, b []byte, off int64) error {
	run := -1
	flush := func(end int) error {
		if run < 0 {
			return nil
		}
		if _, err := dst.WriteAt(b[run:end], off+int64(run)); err != nil {
			return fmt.Errorf("mkfs: write %d bytes at %d: %w", end-run, off+int64(run), err)
		}
		run = -1
		return nil
	}
	for i := 0; i < len(b); i += BlockSize {
		j := min(i+BlockSize, len(b))
		if allZero(b[i:j]) {
			if err := flush(i); err != nil {
				return err
			}
			continue
		}
		if run < 0 {
			run = i
		}
	}
	return flush(len(b))
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func findTool(tool string) (string, error) {
	if tool != "" {
		return tool, nil
	}
	if p, err := exec.LookPath("mkfs.ext4"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/sbin/mkfs.ext4", "/usr/sbin/mkfs.ext4"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("mkfs: mkfs.ext4 not found (install e2fsprogs)")
}
