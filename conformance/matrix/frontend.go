package matrix

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/overlaybd-go/overlaybd/conformance"
	"github.com/overlaybd-go/overlaybd/conformance/nbdclient"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/frontends/nbd"
)

var socketSeq atomic.Uint64

// nbdCounts adds up the client counters of a cell's NBD connections.
type nbdCounts struct {
	mu    sync.Mutex
	total nbdclient.Stats
}

func (n *nbdCounts) add(s nbdclient.Stats) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	t := &n.total
	t.Requests += s.Requests
	t.MaxInFlight = max(t.MaxInFlight, s.MaxInFlight)
	t.OutOfOrder += s.OutOfOrder
	t.Chunks += s.Chunks
	t.HoleChunks += s.HoleChunks
	t.BlockStatus += s.BlockStatus
}

func (n *nbdCounts) snapshot() nbdclient.Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.total
}

// nbdExport serves one file with frontends/nbd on a unix socket and holds
// a client connected to it.
type nbdExport struct {
	srv    *nbd.Server
	ln     net.Listener
	client *nbdclient.Client
	served chan error
	counts *nbdCounts
}

func exportNBD(f core.File, readOnly bool, dir string, counts *nbdCounts) (*nbdExport, error) {
	srv, err := nbd.NewServer([]nbd.Export{{File: f, ReadOnly: readOnly}},
		nbd.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, fmt.Errorf("nbd server: %w", err)
	}
	sock := filepath.Join(dir, fmt.Sprintf("nbd-%d.sock", socketSeq.Add(1)))
	ln, err := net.Listen("unix", sock)
	if err != nil {
		srv.Close()
		return nil, err
	}
	e := &nbdExport{srv: srv, ln: ln, served: make(chan error, 1), counts: counts}
	go func() { e.served <- srv.Serve(ln) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := nbdclient.Dial(ctx, "unix", sock, "")
	if err != nil {
		e.stop()
		return nil, err
	}
	e.client = c
	return e, nil
}

// stop disconnects the client, shuts the server down and waits for it.
func (e *nbdExport) stop() error {
	var err error
	if e.client != nil {
		err = e.client.Close()
		e.counts.add(e.client.Stats())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = errors.Join(err, e.srv.Shutdown(ctx))
	if serr := <-e.served; serr != nil && !errors.Is(serr, nbd.ErrServerClosed) && !errors.Is(serr, net.ErrClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// nbdReadOnly serves the files of a read-only kind through NBD.
type nbdReadOnly struct {
	conformance.ReadOnlyKind
	counts *nbdCounts
}

func (k nbdReadOnly) Build(dir string, m *conformance.Model) (core.File, error) {
	f, err := k.ReadOnlyKind.Build(dir, m)
	if err != nil {
		return nil, err
	}
	e, err := exportNBD(f, true, dir, k.counts)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &nbdFile{Client: e.client, export: e, inner: f}, nil
}

// nbdFile is the client side of an export whose Close also stops the
// server and closes the exported file.
type nbdFile struct {
	*nbdclient.Client
	export *nbdExport
	inner  core.File
}

func (f *nbdFile) Close() error { return errors.Join(f.export.stop(), f.inner.Close()) }

// nbdWritable serves the devices of a writable kind through NBD.
type nbdWritable struct {
	conformance.WritableKind
	counts *nbdCounts
}

func (k nbdWritable) Create(dir string, vsize int64) (conformance.Device, error) {
	d, err := k.WritableKind.Create(dir, vsize)
	if err != nil {
		return nil, err
	}
	return k.export(d, dir)
}

// CreateOver implements conformance.BaseCreator when the wrapped kind does.
func (k nbdWritable) CreateOver(dir string, m *conformance.Model) (conformance.Device, error) {
	bc, ok := k.WritableKind.(conformance.BaseCreator)
	if !ok {
		return nil, fmt.Errorf("%s: create over lowers: %w", k.Name(), core.ErrUnsupported)
	}
	d, err := bc.CreateOver(dir, m)
	if err != nil {
		return nil, err
	}
	return k.export(d, dir)
}

func (k nbdWritable) export(d conformance.Device, dir string) (conformance.Device, error) {
	nd := &nbdDevice{inner: d, dir: dir, counts: k.counts}
	if err := nd.export(); err != nil {
		d.Close()
		return nil, err
	}
	return nd, nil
}

// nbdDevice is a device whose view the scenario reaches through NBD; the
// device-wide operations stop the export, run on the device and export it
// again.
type nbdDevice struct {
	inner  conformance.Device
	dir    string
	e      *nbdExport
	counts *nbdCounts
}

var (
	_ conformance.Committer = (*nbdDevice)(nil)
	_ conformance.Sealer    = (*nbdDevice)(nil)
	_ conformance.Flattener = (*nbdDevice)(nil)
)

func (d *nbdDevice) export() error {
	e, err := exportNBD(d.inner.File(), false, d.dir, d.counts)
	if err != nil {
		return err
	}
	d.e = e
	return nil
}

func (d *nbdDevice) around(op func() error) error {
	if err := d.e.stop(); err != nil {
		return fmt.Errorf("stop nbd export: %w", err)
	}
	if err := op(); err != nil {
		return err
	}
	return d.export()
}

func (d *nbdDevice) File() core.File { return d.e.client }

func (d *nbdDevice) Reopen() error { return d.around(d.inner.Reopen) }

func (d *nbdDevice) Commit() error {
	c, ok := d.inner.(conformance.Committer)
	if !ok {
		return fmt.Errorf("commit: %w", core.ErrUnsupported)
	}
	return d.around(c.Commit)
}

func (d *nbdDevice) Seal() error {
	s, ok := d.inner.(conformance.Sealer)
	if !ok {
		return fmt.Errorf("seal: %w", core.ErrUnsupported)
	}
	return d.around(s.Seal)
}

func (d *nbdDevice) Flatten(dir string) (core.File, error) {
	f, ok := d.inner.(conformance.Flattener)
	if !ok {
		return nil, fmt.Errorf("flatten: %w", core.ErrUnsupported)
	}
	return f.Flatten(dir)
}

func (d *nbdDevice) Close() error { return errors.Join(d.e.stop(), d.inner.Close()) }
