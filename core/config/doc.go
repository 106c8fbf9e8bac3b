// Package config reads, checks and writes overlaybd's two JSON
// configurations: the global overlaybd.json ([Global]) and the per-device
// image configuration config.v1.json ([Image]), with upstream overlaybd's
// field names, defaults and legacy keys, plus the keys this project adds
// (marked "ours" in the field documentation and in docs/config.md).
//
// Loading is split in steps so that each binary does only what it needs:
//
//   - [LoadGlobal] / [ParseGlobal] parse the file: JSON syntax, the type of
//     every known field, the values tools need to touch local files
//     (ioEngine, codecPlugins). Every tool does this.
//   - [Global.Validate] checks the remaining values without touching the
//     system, in upstream's start-up order (cache type and parameters,
//     log, exporter, service API, ...).
//   - [Global.Prepare] performs upstream's start-up sequence, including the
//     checks that touch the system (log file, cache directory, CA bundle,
//     client certificate). Only the daemons run it.
//
// Upstream looks fields up lazily and has undefined behaviour on a value of
// the wrong type; this package rejects such a file with an error naming the
// file and the field. Unknown keys are ignored as upstream does; keys are
// case-sensitive; a JSON null counts as an absent field; duplicate keys are
// rejected (upstream silently uses the first one).
package config
