// Package core is the vocabulary of the project: the small interfaces that
// every layer of the storage stack speaks (block files, IO engines, codecs,
// checksums, caches) and the registries through which implementations make
// themselves available by name and, where upstream overlaybd numbers them,
// by number.
//
// Everything composes as a chain of [File] values:
//
//	engine file → (cache) → zfile → LSMT layer → stack → frontend
//
// core imports none of the implementation packages. Implementations register
// themselves from their init functions, and binaries select them by importing
// the implementation packages (usually through the all package of each
// family, e.g. engines/all) and looking them up here.
package core
