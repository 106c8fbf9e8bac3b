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
	return reexport(d, "stop nbd export", func(f core.File) (view, error) {
		return exportNBD(f, false, dir, k.counts)
	}, false)
}

// File is the client side of the export.
func (e *nbdExport) File() core.File { return e.client }

// view is a frontend's export of a device's file: the client the scenario
// reaches the device through, and how to take the export down.
type view interface {
	File() core.File
	stop() error
}

// reexported is a device whose view the scenario reaches through a
// frontend; the device-wide operations take the view down, run on the
// device and export it again.
type reexported struct {
	inner   conformance.Device
	export  func(core.File) (view, error)
	stopMsg string // what a failed stop is reported as
	v       view
}

var (
	_ conformance.Committer = (*reexported)(nil)
	_ conformance.Sealer    = (*reexported)(nil)
	_ conformance.Flattener = (*reexported)(nil)
)

// reexport exports d's file; with crash, a device that simulates power
// losses keeps that ability through the view (stopped around the crash).
func reexport(d conformance.Device, stopMsg string, export func(core.File) (view, error), crash bool) (conformance.Device, error) {
	r := &reexported{inner: d, export: export, stopMsg: stopMsg}
	if err := r.attach(); err != nil {
		d.Close()
		return nil, err
	}
	if c, ok := d.(conformance.Crasher); ok && crash {
		return &reexportedCrasher{r, c}, nil
	}
	return r, nil
}

func (d *reexported) attach() error {
	v, err := d.export(d.inner.File())
	if err != nil {
		return err
	}
	d.v = v
	return nil
}

func (d *reexported) around(op func() error) error {
	err := d.v.stop()
	d.v = nil
	if err != nil {
		return fmt.Errorf("%s: %w", d.stopMsg, err)
	}
	if err := op(); err != nil {
		return err
	}
	return d.attach()
}

func (d *reexported) File() core.File { return d.v.File() }

func (d *reexported) Reopen() error { return d.around(d.inner.Reopen) }

func (d *reexported) Commit() error {
	c, ok := d.inner.(conformance.Committer)
	if !ok {
		return fmt.Errorf("commit: %w", core.ErrUnsupported)
	}
	return d.around(c.Commit)
}

func (d *reexported) Seal() error {
	s, ok := d.inner.(conformance.Sealer)
	if !ok {
		return fmt.Errorf("seal: %w", core.ErrUnsupported)
	}
	return d.around(s.Seal)
}

func (d *reexported) Flatten(dir string) (core.File, error) {
	f, ok := d.inner.(conformance.Flattener)
	if !ok {
		return nil, fmt.Errorf("flatten: %w", core.ErrUnsupported)
	}
	return f.Flatten(dir)
}

func (d *reexported) Close() error {
	var err error
	if d.v != nil {
		err = d.v.stop()
		d.v = nil
	}
	return errors.Join(err, d.inner.Close())
}

// reexportedCrasher is a view over a device that simulates power losses:
// the view is taken down, the device loses what its files did not make
// durable (what the client synced reached them) and the view comes back.
type reexportedCrasher struct {
	*reexported
	c conformance.Crasher
}

var _ conformance.Crasher = (*reexportedCrasher)(nil)

func (d *reexportedCrasher) Crash() error { return d.around(d.c.Crash) }
