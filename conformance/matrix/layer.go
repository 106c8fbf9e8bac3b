package matrix

import (
	"github.com/overlaybd-go/overlaybd/conformance"
	"github.com/overlaybd-go/overlaybd/core"
)

// layerWritable makes every freeze of a writable kind's top layer either a
// commit (into a new file) or a seal (in place), so that the cell's layer
// kind is the only kind of lower its scenario stacks.
type layerWritable struct {
	conformance.WritableKind
	seal bool
}

func (k layerWritable) Create(dir string, vsize int64) (conformance.Device, error) {
	d, err := k.WritableKind.Create(dir, vsize)
	if err != nil {
		return nil, err
	}
	return &layerDevice{Device: d, seal: k.seal}, nil
}

type layerDevice struct {
	conformance.Device
	seal bool
}

var (
	_ conformance.Committer = (*layerDevice)(nil)
	_ conformance.Sealer    = (*layerDevice)(nil)
	_ conformance.Flattener = (*layerDevice)(nil)
)

func (d *layerDevice) freeze() error {
	if d.seal {
		return d.Device.(conformance.Sealer).Seal()
	}
	return d.Device.(conformance.Committer).Commit()
}

// Commit and Seal both freeze the top layer the cell's way.
func (d *layerDevice) Commit() error { return d.freeze() }
func (d *layerDevice) Seal() error   { return d.freeze() }

func (d *layerDevice) Flatten(dir string) (core.File, error) {
	return d.Device.(conformance.Flattener).Flatten(dir)
}
