// Package conformance checks implementations of core.File against a
// reference model, the same way for every implementation.
//
// The model ([Model]) is a plain byte array of the virtual size: writes copy
// bytes into it, discards and write-zeroes zero a range. A scenario drives an
// implementation and the model with the same random operations (writes,
// discards, write-zeroes, reads that cross segment, layer and device
// boundaries, block-status queries, syncs, reopens, commits, seals,
// flattening, requests that must fail) and compares every read, and the whole
// device after every reopen and commit, with the model.
//
// Implementations take part through small factory interfaces:
// [WritableKind] makes devices that accept writes (a writable layer, possibly
// under a stack of committed layers), and with [BaseCreator] starts one over
// read-only lowers that hold a content; [ReadOnlyKind] turns a content into a
// read-only file (a committed layer, a ZFile, a tar envelope, ...). Package
// conformance/kinds holds the kinds of this project's implementations.
//
// Every run is reproducible from its seed. The seed is logged at the start of
// a run and named in every failure; set OVERLAYBD_CONFORMANCE_SEED to replay
// one. A failure ([Failure]) names the cell (the kind), the operation and its
// number, and the last operations before it.
package conformance
