package conformance

import "github.com/overlaybd-go/overlaybd/core"

// WritableKind makes writable devices of one implementation (one cell of
// the matrix).
type WritableKind interface {
	// Name names the cell in logs and failures, e.g. "lsmt/append-only".
	Name() string
	// Alignment is the granularity offsets and lengths of writes,
	// discards and write-zeroes must have (1 for none). Requests that are
	// not aligned must fail and change nothing.
	Alignment() int64
	// Create makes a new device of vsize bytes that reads as zeros, with
	// its files in dir (an empty folder the scenario owns).
	Create(dir string, vsize int64) (Device, error)
}

// BaseCreator is implemented by writable kinds whose devices can start over
// read-only lower layers: CreateOver makes a device whose writable top sits
// on lowers holding m's content (the upstream shape of a container's
// writable layer over an image's committed layers). The device must not
// keep m: the scenario changes it as the device changes.
type BaseCreator interface {
	CreateOver(dir string, m *Model) (Device, error)
}

// Device is one writable device under test. Its content must survive every
// operation: the scenario compares it with the model after each.
type Device interface {
	// File is the device's current view: a core.File, optionally a
	// core.Discarder, core.ZeroWriter and core.BlockStatuser. It stays
	// valid until the next Reopen, Commit, Seal or Close.
	File() core.File
	// Reopen closes every file of the device and opens the device again
	// from its files, as after a restart (the scenario syncs first).
	Reopen() error
	// Close closes the device.
	Close() error
}

// Committer is implemented by devices that can freeze their writable top
// into a read-only layer: the layer joins the read-only stack beneath, a new
// empty writable top is created, and the view's content is unchanged.
type Committer interface {
	Commit() error
}

// Sealer is implemented by devices that can seal their writable top in place
// into a read-only layer with the same effect as Commit.
type Sealer interface {
	Seal() error
}

// Crasher is implemented by devices that can simulate a power loss: drop
// what was not made durable by Sync, then open the device again from its
// files. Devices without it are reopened without a Sync instead.
type Crasher interface {
	Crash() error
}

// Flattener is implemented by devices that can write their whole view as
// one read-only file.
type Flattener interface {
	// Flatten returns a read-only file with the device's content; the
	// caller closes it.
	Flatten(dir string) (core.File, error)
}

// ReadOnlyKind turns a content into a read-only file of one implementation.
type ReadOnlyKind interface {
	// Name names the cell in logs and failures, e.g. "lsmt/committed".
	Name() string
	// Build makes a read-only file with the model's content, its files in
	// dir. The model also says which ranges are zero, so an implementation
	// may store them as holes.
	Build(dir string, m *Model) (core.File, error)
}
