package zfile_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/zfile"
)

// TestConcurrentReaders reads one Reader from many goroutines with a cache
// far smaller than the file, so that entries are evicted while others read,
// then closes it; once with the registry's codec and once through a
// batching codec.
func TestConcurrentReaders(t *testing.T) {
	for _, tc := range []struct {
		rel     string
		batched bool
	}{{"zfile/plain.zstd-bs8-hdroverwrite.zfile", false}, {"zfile/plain.lz4-bs32.zfile", false}, {"zfile/plain.lz4-bs4.zfile", true}, {"zfile/plain.zstd-bs8-hdroverwrite.zfile", true}} {
		rel := tc.rel
		opts := []zfile.ReaderOption{zfile.WithCacheBytes(128 << 10), zfile.WithWorkers(3)}
		if tc.batched {
			opts = append(opts, zfile.WithCodec(&batcher{Codec: fileCodec(t, readVector(t, rel))}))
		}
		r, err := zfile.Open(openVector(t, rel), opts...)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				t.Run("", func(t *testing.T) { checkRandomReads(t, r, plain[:], 150+g) })
			})
		}
		wg.Wait()
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := r.ReadAt(make([]byte, 10), 0); !errors.Is(err, core.ErrClosed) {
			t.Fatalf("read after close: %v", err)
		}
		if _, err := r.WriteAt(make([]byte, 10), 0); !errors.Is(err, core.ErrReadOnly) {
			t.Fatalf("write: %v", err)
		}
	}
}
