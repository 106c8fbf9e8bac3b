package envelope

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/overlaybd-go/overlaybd/core/zfile"
)

// CreateOptions says how Create writes an output file.
type CreateOptions struct {
	// ZFile compresses the output as a ZFile with these options; nil
	// writes the bytes as they are.
	ZFile *zfile.Options
	// Tar wraps the output in overlaybd's tar envelope.
	Tar bool
	// Force removes an existing file first (upstream's -f); otherwise an
	// existing file is an error.
	Force bool
	// Perm is the permission of the new file (before umask); 0 means 0644.
	Perm os.FileMode
}

// Output is an output file being written by Create: Write the content,
// then Close. If Close (or any Write) fails, or Abort is called, the
// partial file is removed. It is not safe for concurrent use.
type Output struct {
	path   string
	f      *os.File
	tar    *TarWriter
	zw     *zfile.Writer
	dst    io.Writer // where Write goes
	failed error
	closed bool
}

// Create creates path exclusively (O_EXCL, like upstream's tools) and
// returns an Output that compresses and/or wraps what is written to it.
func Create(path string, opts CreateOptions) (*Output, error) {
	perm := opts.Perm
	if perm == 0 {
		perm = 0o644
	}
	if opts.Force {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("envelope: remove existing %s: %w", path, err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return nil, fmt.Errorf("envelope: create: %w", err)
	}
	o := &Output{path: path, f: f, dst: f}
	var wat io.WriterAt = f
	if opts.Tar {
		st, err := f.Stat()
		if err != nil {
			o.Abort()
			return nil, fmt.Errorf("envelope: stat %s: %w", path, err)
		}
		mode := uint32(st.Mode().Perm())
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			mode = sys.Mode
		} else {
			mode |= syscall.S_IFREG
		}
		o.tar, err = NewTarWriter(f, mode)
		if err != nil {
			o.Abort()
			return nil, err
		}
		o.dst, wat = o.tar, o.tar
	}
	if opts.ZFile != nil {
		zw, err := zfile.NewWriter(struct {
			io.Writer
			io.WriterAt
		}{o.dst, wat}, *opts.ZFile)
		if err != nil {
			o.Abort()
			return nil, err
		}
		o.zw, o.dst = zw, zw
	}
	return o, nil
}

// Name returns the path of the output.
func (o *Output) Name() string { return o.path }

// Write writes content. After an error the output is removed at Close.
func (o *Output) Write(p []byte) (int, error) {
	if o.failed != nil {
		return 0, o.failed
	}
	n, err := o.dst.Write(p)
	if err != nil {
		o.failed = err
	}
	return n, err
}

// ReadFrom copies r into the output until io.EOF.
func (o *Output) ReadFrom(r io.Reader) (int64, error) {
	if o.failed != nil {
		return 0, o.failed
	}
	var n int64
	var err error
	if o.zw != nil {
		n, err = o.zw.ReadFrom(r)
	} else {
		n, err = io.Copy(o.dst, r)
	}
	if err != nil {
		o.failed = err
	}
	return n, err
}

// Close finishes the ZFile and the envelope and closes the file. On any
// error the partial file is removed and the error returned.
func (o *Output) Close() error {
	if o.closed {
		return o.failed
	}
	if o.failed != nil {
		o.Abort()
		return o.failed
	}
	o.closed = true
	err := func() error {
		if o.zw != nil {
			if err := o.zw.Close(); err != nil {
				return err
			}
		}
		if o.tar != nil {
			if err := o.tar.Close(); err != nil {
				return err
			}
		}
		return o.f.Close()
	}()
	if err != nil {
		o.f.Close()
		os.Remove(o.path)
		o.failed = err
	}
	return err
}

// Abort stops writing, closes and removes the partial file.
func (o *Output) Abort() {
	if o.zw != nil {
		o.zw.Abort()
	}
	if !o.closed {
		o.closed = true
		o.f.Close()
		os.Remove(o.path)
	}
	if o.failed == nil {
		o.failed = fmt.Errorf("envelope: output %s aborted", o.path)
	}
}

// Stats returns the bytes written to the output so far and, for a ZFile,
// the compressed bytes emitted.
func (o *Output) Stats() (in, out int64) {
	if o.zw != nil {
		return o.zw.Stats()
	}
	if st, err := o.f.Stat(); err == nil {
		return st.Size(), st.Size()
	}
	return 0, 0
}
