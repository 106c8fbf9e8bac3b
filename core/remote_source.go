package core

// Invalidator is implemented by files and sources that keep copies of data
// (caches, read-ahead buffers). Invalidate says that the bytes read from
// [off, off+length) failed a check made above (e.g. a ZFile block CRC): the
// copies are dropped, so that the next read of the range fetches it from the
// origin again instead of serving the same bad bytes.
type Invalidator interface {
	Invalidate(off, length int64) error
}

// LayerDirSource is implemented by Sources that belong to an image layer
// with a local directory (config.v1.json lowers[].dir). The download cache
// keeps its per-layer file, ".download", in that directory.
type LayerDirSource interface {
	Source
	LayerDir() string
}
