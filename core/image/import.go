package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"golang.org/x/sys/unix"
)

// ImportOptions tune ImportRaw.
type ImportOptions struct {
	// ZeroBlockSize is the granularity at which all-zero data is left out
	// of the layer (a multiple of 512; 0 means 4096). Smaller blocks find
	// more zeros but make a larger index.
	ZeroBlockSize int
	// VirtualSize is the virtual size of the layer (a multiple of 512, at
	// least the raw image's size); 0 means the raw image's size rounded
	// up to 512 bytes.
	VirtualSize int64
	// Commit holds the header values of the committed layer.
	Commit lsmt.CommitOptions
	// TempDir holds the temporary writable layer (default os.TempDir()).
	TempDir string
}

// ImportStats describe an import.
type ImportStats struct {
	// VirtualSize is the size of the layer's virtual disk.
	VirtualSize int64
	// DataBytes is the data stored; the rest of the disk are holes.
	DataBytes int64
}

// ImportRaw turns a raw disk image into a committed LSMT layer written to
// out: blocks of ZeroBlockSize that are all zeros (and holes of a sparse
// source file) become unmapped ranges, everything else is data. The layer
// is built as a temporary append-only writable layer and committed exactly
// as overlaybd-commit commits one.
func ImportRaw(ctx context.Context, src *os.File, out io.Writer, opts ImportOptions) (ImportStats, error) {
	var st ImportStats
	bs := opts.ZeroBlockSize
	if bs == 0 {
		bs = 4096
	}
	if bs < core.SectorSize || bs%core.SectorSize != 0 || bs > 4<<20 {
		return st, fmt.Errorf("import: zero block size %d is not a multiple of 512 up to 4 MiB", bs)
	}
	fi, err := src.Stat()
	if err != nil {
		return st, fmt.Errorf("import: %w", err)
	}
	size := fi.Size()
	if fi.Mode()&os.ModeDevice != 0 {
		if size, err = src.Seek(0, io.SeekEnd); err != nil {
			return st, fmt.Errorf("import: size of %s: %w", src.Name(), err)
		}
	}
	vsize := opts.VirtualSize
	if vsize == 0 {
		vsize = (size + core.SectorSize - 1) / core.SectorSize * core.SectorSize
	}
	if vsize%core.SectorSize != 0 || vsize < size {
		return st, fmt.Errorf("import: virtual size %d is not a multiple of 512 holding the %d-byte image", vsize, size)
	}
	st.VirtualSize = vsize

	tmpDir := opts.TempDir
	eng := psync.New(core.EngineConfig{})
	mk := func(pattern string) (core.File, error) {
		f, err := os.CreateTemp(tmpDir, pattern)
		if err != nil {
			return nil, fmt.Errorf("import: temporary layer: %w", err)
		}
		os.Remove(f.Name()) // anonymous: gone when closed
		return psync.NewFile(f, eng), nil
	}
	data, err := mk("overlaybd-import-data-*")
	if err != nil {
		return st, err
	}
	index, err := mk("overlaybd-import-index-*")
	if err != nil {
		data.Close()
		return st, err
	}
	w, err := lsmt.Create(data, index, lsmt.CreateOptions{VirtualSize: vsize, UUID: opts.Commit.UUID})
	if err != nil {
		data.Close()
		index.Close()
		return st, fmt.Errorf("import: %w", err)
	}
	defer w.Close()

	const chunk = 4 << 20
	buf := make([]byte, chunk)
	zero := make([]byte, bs)
	fd := int(src.Fd())
	for pos := int64(0); pos < size; {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		// Skip holes of sparse sources.
		if next, err := unix.Seek(fd, pos, unix.SEEK_DATA); err == nil {
			if next >= size {
				break
			}
			if a := next &^ (core.SectorSize - 1); a > pos {
				pos = a
			}
		} else if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		n := int(min(int64(chunk), size-pos))
		got, err := src.ReadAt(buf[:n], pos)
		if got < n {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return st, fmt.Errorf("import: read %s at %d: %w", src.Name(), pos, err)
		}
		// Pad the last partial sector with zeros.
		padded := (n + core.SectorSize - 1) / core.SectorSize * core.SectorSize
		clear(buf[n:padded])
		for i := 0; i < padded; {
			if j := min(i+bs, padded); isZero(buf[i:j], zero) {
				i = j
				continue
			}
			start := i
			for i < padded && !isZero(buf[i:min(i+bs, padded)], zero) {
				i = min(i+bs, padded)
			}
			if _, err := w.WriteAt(buf[start:i], pos+int64(start)); err != nil {
				return st, fmt.Errorf("import: write layer at %d: %w", pos+int64(start), err)
			}
			st.DataBytes += int64(i - start)
		}
		pos += int64(n)
	}
	if err := w.Commit(out, opts.Commit); err != nil {
		return st, fmt.Errorf("import: commit: %w", err)
	}
	return st, nil
}

func isZero(b, zero []byte) bool {
	for len(b) > 0 {
		k := min(len(b), len(zero))
		if !bytes.Equal(b[:k], zero[:k]) {
			return false
		}
		b = b[k:]
	}
	return true
}
