package matrix

import (
	"fmt"

	"github.com/overlaybd-go/overlaybd/conformance"
	"github.com/overlaybd-go/overlaybd/core"
)

// CrashSimulator is implemented by IO engines that can simulate a power
// loss: during Crash, files that close lose what their last Sync did not
// make durable, and reopen (which closes and opens the device's files)
// then sees only durable content.
type CrashSimulator interface {
	Crash(reopen func() error) error
}

// layerWritable makes every freeze of a writable kind's top layer either a
// commit (into a new file) or a seal (in place), so that the cell's layer
// kind is the only kind of lower its scenario stacks. With an engine that
// simulates power loss, its devices are conformance.Crashers.
type layerWritable struct {
	conformance.WritableKind
	seal  bool
	wrap  func(core.File) core.File
	crash CrashSimulator
}

func (k layerWritable) Create(dir string, vsize int64) (conformance.Device, error) {
	d, err := k.WritableKind.Create(dir, vsize)
	if err != nil {
		return nil, err
	}
	return k.device(d), nil
}

// CreateOver implements conformance.BaseCreator when the wrapped kind does.
func (k layerWritable) CreateOver(dir string, m *conformance.Model) (conformance.Device, error) {
	bc, ok := k.WritableKind.(conformance.BaseCreator)
	if !ok {
		return nil, fmt.Errorf("%s: create over lowers: %w", k.Name(), core.ErrUnsupported)
	}
	d, err := bc.CreateOver(dir, m)
	if err != nil {
		return nil, err
	}
	return k.device(d), nil
}

func (k layerWritable) device(d conformance.Device) conformance.Device {
	ld := &layerDevice{Device: d, seal: k.seal, wrap: k.wrap}
	if k.crash != nil {
		return &crashDevice{ld, k.crash}
	}
	return ld
}

type layerDevice struct {
	conformance.Device
	seal bool
	wrap func(core.File) core.File
}

var (
	_ conformance.Committer = (*layerDevice)(nil)
	_ conformance.Sealer    = (*layerDevice)(nil)
	_ conformance.Flattener = (*layerDevice)(nil)
	_ conformance.Crasher   = (*crashDevice)(nil)
)

func (d *layerDevice) File() core.File {
	if d.wrap != nil {
		return d.wrap(d.Device.File())
	}
	return d.Device.File()
}

func (d *layerDevice) freeze() error {
	if d.seal {
		s, ok := d.Device.(conformance.Sealer)
		if !ok {
			return fmt.Errorf("seal: %w", core.ErrUnsupported)
		}
		return s.Seal()
	}
	c, ok := d.Device.(conformance.Committer)
	if !ok {
		return fmt.Errorf("commit: %w", core.ErrUnsupported)
	}
	return c.Commit()
}

// Commit and Seal both freeze the top layer the cell's way.
func (d *layerDevice) Commit() error { return d.freeze() }
func (d *layerDevice) Seal() error   { return d.freeze() }

func (d *layerDevice) Flatten(dir string) (core.File, error) {
	f, ok := d.Device.(conformance.Flattener)
	if !ok {
		return nil, fmt.Errorf("flatten: %w", core.ErrUnsupported)
	}
	return f.Flatten(dir)
}

// crashDevice simulates power losses through its engine.
type crashDevice struct {
	*layerDevice
	eng CrashSimulator
}

func (d *crashDevice) Crash() error { return d.eng.Crash(d.layerDevice.Reopen) }
