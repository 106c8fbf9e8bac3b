// Package lsmt implements overlaybd's LSMT layer format: the 4096-byte
// header/trailer, the 16-byte index records, read-only layers (committed and
// sealed), the two writable layer kinds (append-only data+index files and
// sparse data files), the merged view of a stack of layers, and the
// operations that turn writable layers into read-only ones (commit, seal,
// merge/flatten).
//
// Files written here are byte-identical to those of the C++ overlaybd for the
// same input (see testdata/vectors), and files written by the C++ tools open
// here. Where upstream is wrong this package is not: lookups are exact for
// any virtual size, sparse layers keep their discards across a reopen (in the
// index file upstream ignores for sparse layers), a torn tail of a writable
// index is dropped instead of making the layer unopenable, and every
// malformed input is an error wrapping core.ErrCorrupt, never a panic.
//
// Layers operate on core.File values; the package opens no files itself.
// Operations that need the file system (hole punching, SEEK_DATA/SEEK_HOLE,
// truncation) use the optional Fd and Truncate methods of the underlying
// file (engines/psync provides both).
package lsmt
