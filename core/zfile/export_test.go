package zfile

import "github.com/overlaybd-go/overlaybd/core"

// WithCodec makes Open decode with c instead of the registry's codec for
// the file's algorithm, so that tests can put a batching codec in front of
// an in-process one without touching core.Codecs.
func WithCodec(c core.Codec) ReaderOption { return func(cfg *readerConfig) { cfg.codec = c } }
