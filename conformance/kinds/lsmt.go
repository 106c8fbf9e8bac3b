// Package kinds adapts this project's implementations to the conformance
// suite: each kind is one cell of the matrix.
package kinds

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/overlaybd-go/overlaybd/conformance"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/envelope"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
)

// LSMTWritable is the writable kind of LSMT layers: an append-only layer
// (data and index files) or a sparse one (data file in place, plus the
// discard log), with commits and seals stacking the frozen layers beneath a
// fresh writable one, as a container's snapshots do.
type LSMTWritable struct {
	// Sparse selects sparse writable layers.
	Sparse bool
	// Engine opens the layers' files (nil: psync).
	Engine core.Engine
	// Lowers, when set, builds the read-only layers the device starts
	// over (CreateOver): committed or sealed, compressed, tar-wrapped or
	// remote, as the Lowers say.
	Lowers Lowers
	// Envelope, when set, writes the layers the device freezes (commits
	// and seals) compressed and/or tar-wrapped, as overlaybd-commit -z
	// and -t do; they are opened through the envelope detection.
	Envelope *envelope.CreateOptions
}

var (
	_ conformance.WritableKind = LSMTWritable{}
	_ conformance.BaseCreator  = LSMTWritable{}
	_ conformance.Committer    = (*lsmtDevice)(nil)
	_ conformance.Sealer       = (*lsmtDevice)(nil)
	_ conformance.Flattener    = (*lsmtDevice)(nil)
)

// Name implements conformance.WritableKind.
func (k LSMTWritable) Name() string {
	name := "lsmt/append-only"
	if k.Sparse {
		name = "lsmt/sparse"
	}
	if k.Envelope != nil {
		if z := k.Envelope.ZFile; z != nil {
			name += "/zfile-" + z.Algorithm
		}
		if k.Envelope.Tar {
			name += "/tar"
		}
	}
	if k.Lowers != nil {
		name += "/over-lowers"
	}
	if k.Engine != nil && k.Engine.Name() != psync.Name {
		name += "/" + k.Engine.Name()
	}
	return name
}

// Alignment implements conformance.WritableKind: LSMT addresses 512-byte
// sectors.
func (k LSMTWritable) Alignment() int64 { return lsmt.SectorSize }

func (k LSMTWritable) engine() core.Engine {
	if k.Engine != nil {
		return k.Engine
	}
	return psync.New(core.EngineConfig{})
}

// Create implements conformance.WritableKind.
func (k LSMTWritable) Create(dir string, vsize int64) (conformance.Device, error) {
	d := &lsmtDevice{sparse: k.Sparse, engine: k.engine(), env: k.Envelope, dir: dir, vsize: vsize}
	if err := d.newUpper(); err != nil {
		return nil, err
	}
	if err := d.openStack(); err != nil {
		return nil, err
	}
	return d, nil
}

// CreateOver implements conformance.BaseCreator: the Lowers are built with
// m's content in dir/lowers and the writable layer starts over them.
func (k LSMTWritable) CreateOver(dir string, m *conformance.Model) (conformance.Device, error) {
	if k.Lowers == nil {
		return nil, fmt.Errorf("%s: no lowers to start over: %w", k.Name(), core.ErrUnsupported)
	}
	ldir := filepath.Join(dir, "lowers")
	if err := os.MkdirAll(ldir, 0o755); err != nil {
		return nil, err
	}
	base, err := k.Lowers.BuildLowers(ldir, m)
	if err != nil {
		return nil, fmt.Errorf("build lowers: %w", err)
	}
	d := &lsmtDevice{sparse: k.Sparse, engine: k.engine(), env: k.Envelope, dir: dir, vsize: m.Size(), base: base}
	if err := d.newUpper(); err != nil {
		base.Close()
		return nil, err
	}
	if err := d.openStack(); err != nil {
		base.Close()
		return nil, err
	}
	return d, nil
}

// lsmtDevice is a stack of frozen layers (files in dir) under a writable
// layer.
type lsmtDevice struct {
	sparse    bool
	engine    core.Engine
	env       *envelope.CreateOptions // frozen layers' envelope, or nil
	base      LowerSet                // layers beneath the frozen ones, or nil
	dir       string
	vsize     int64
	n         int
	lowers    []string
	data, idx string
	upperUUID lsmt.UUID
	upper     *lsmt.Writable // open, not yet stacked
	stack     *lsmt.Stack
}

func (d *lsmtDevice) open(path string, flag int) (core.File, error) {
	return d.engine.Open(path, core.OpenOptions{Flag: flag, Perm: 0o644})
}

// newUpper creates the files of a new writable layer, left open in d.upper.
func (d *lsmtDevice) newUpper() error {
	d.n++
	d.data = filepath.Join(d.dir, fmt.Sprintf("upper-%d.data", d.n))
	d.idx = filepath.Join(d.dir, fmt.Sprintf("upper-%d.index", d.n))
	data, err := d.open(d.data, os.O_RDWR|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return err
	}
	index, err := d.open(d.idx, os.O_RDWR|os.O_CREATE|os.O_EXCL)
	if err != nil {
		data.Close()
		return err
	}
	parent := d.upperUUID
	d.upperUUID = lsmt.NewUUID()
	w, err := lsmt.Create(data, index, lsmt.CreateOptions{VirtualSize: d.vsize, UUID: d.upperUUID, ParentUUID: parent, Sparse: d.sparse})
	if err != nil {
		data.Close()
		index.Close()
		return fmt.Errorf("create writable layer: %w", err)
	}
	d.upper = w
	return nil
}

// openUpper reopens the current writable layer from its files.
func (d *lsmtDevice) openUpper() (*lsmt.Writable, error) {
	data, err := d.open(d.data, os.O_RDWR)
	if err != nil {
		return nil, err
	}
	index, err := d.open(d.idx, os.O_RDWR)
	if err != nil {
		data.Close()
		return nil, err
	}
	w, err := lsmt.OpenWritable(data, index)
	if err != nil {
		data.Close()
		index.Close()
		return nil, fmt.Errorf("reopen writable layer: %w", err)
	}
	return w, nil
}

// openStack stacks the base layers and the frozen layers under d.upper.
func (d *lsmtDevice) openStack() error {
	var files []core.File
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	if d.base != nil {
		bf, err := d.base.Open()
		if err != nil {
			d.upper.Close()
			return fmt.Errorf("open lowers: %w", err)
		}
		files = bf
	}
	for i, p := range d.lowers {
		f, err := d.open(p, os.O_RDONLY)
		if err != nil {
			closeAll()
			d.upper.Close()
			return err
		}
		inner, _, err := envelope.Open(f)
		if err != nil {
			f.Close()
			closeAll()
			d.upper.Close()
			return fmt.Errorf("frozen layer %d (%s): %w", i, p, err)
		}
		files = append(files, inner)
	}
	s, err := lsmt.OpenStack(files, d.upper)
	if err != nil {
		closeAll()
		d.upper.Close()
		return fmt.Errorf("open stack of %d layers: %w", len(files), err)
	}
	d.stack, d.upper = s, nil
	return nil
}

func (d *lsmtDevice) closeStack() error {
	if d.stack == nil {
		return nil
	}
	err := d.stack.Close()
	d.stack = nil
	return err
}

// File implements conformance.Device.
func (d *lsmtDevice) File() core.File { return d.stack }

// Reopen implements conformance.Device.
func (d *lsmtDevice) Reopen() error {
	if err := d.closeStack(); err != nil {
		return err
	}
	w, err := d.openUpper()
	if err != nil {
		return err
	}
	d.upper = w
	return d.openStack()
}

// Commit implements conformance.Committer: the writable layer is committed
// into a new file that joins the lowers.
func (d *lsmtDevice) Commit() error {
	out := filepath.Join(d.dir, fmt.Sprintf("layer-%d.commit", len(d.lowers)+1))
	var opts envelope.CreateOptions
	if d.env != nil {
		opts = *d.env
	}
	o, err := envelope.Create(out, opts)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(o, 1<<20)
	err = d.stack.Upper().Commit(bw, lsmt.CommitOptions{UUID: d.upperUUID})
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		o.Abort()
		return fmt.Errorf("commit: %w", err)
	}
	if err := o.Close(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if err := d.closeStack(); err != nil {
		return err
	}
	d.lowers = append(d.lowers, out)
	if err := d.newUpper(); err != nil {
		return err
	}
	return d.openStack()
}

// Seal implements conformance.Sealer: the writable layer is reopened alone
// and sealed in place; its data file joins the lowers.
func (d *lsmtDevice) Seal() error {
	if err := d.closeStack(); err != nil {
		return err
	}
	w, err := d.openUpper()
	if err != nil {
		return err
	}
	ro, err := w.Seal()
	if err != nil {
		w.Close()
		return fmt.Errorf("seal: %w", err)
	}
	if err := ro.Close(); err != nil {
		return err
	}
	if err := os.Remove(d.idx); err != nil {
		return err
	}
	sealed := d.data
	if d.env != nil {
		// The sealed data file is the layer; it is then compressed or
		// wrapped as a whole, as overlaybd-zfile or tar would.
		if sealed, err = wrapFile(d.data, *d.env); err != nil {
			return fmt.Errorf("seal: %w", err)
		}
		if err := os.Remove(d.data); err != nil {
			return err
		}
	}
	d.lowers = append(d.lowers, sealed)
	if err := d.newUpper(); err != nil {
		return err
	}
	return d.openStack()
}

// Flatten implements conformance.Flattener (overlaybd-merge of the whole
// stack, writable layer included).
func (d *lsmtDevice) Flatten(dir string) (core.File, error) {
	out := filepath.Join(dir, "flat.commit")
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	err = d.stack.Flatten(bw, lsmt.CommitOptions{UUID: lsmt.NewUUID()})
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("flatten: %w", err)
	}
	rf, err := d.open(out, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	ro, err := lsmt.OpenReadOnly(rf)
	if err != nil {
		rf.Close()
		return nil, err
	}
	return ro, nil
}

// Close implements conformance.Device.
func (d *lsmtDevice) Close() error {
	err := d.closeStack()
	if d.upper != nil {
		err = errors.Join(err, d.upper.Close())
		d.upper = nil
	}
	if d.base != nil {
		err = errors.Join(err, d.base.Close())
		d.base = nil
	}
	return err
}

// wrapFile writes the content of path into path+".env" through an
// envelope and returns the new file's path.
func wrapFile(path string, opts envelope.CreateOptions) (string, error) {
	src, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer src.Close()
	out := path + ".env"
	o, err := envelope.Create(out, opts)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(o, src); err != nil {
		o.Abort()
		return "", err
	}
	return out, o.Close()
}

// AllocationGrain is the granularity at which the kind's devices in dir
// allocate, for conformance.WritableOptions.AllocationGrain: 512-byte
// sectors for append-only layers (every record is exact), the file
// system's block size for sparse ones (a partly discarded block stays
// allocated in the data file and reads as data after a reopen).
func (k LSMTWritable) AllocationGrain(dir string) (int64, error) {
	if !k.Sparse {
		return lsmt.SectorSize, nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return max(int64(st.Bsize), lsmt.SectorSize), nil
}
