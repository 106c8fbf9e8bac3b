package metrics

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/engines/psync"
)

// BenchmarkReadAt compares 4 KiB reads of a page-cached psync file with the
// same reads through WrapFile (per-device counters and histogram) and through
// WrapFile plus MeterFile (upstream's pread set as well).
func BenchmarkReadAt(b *testing.B) {
	eng := psync.New(core.EngineConfig{})
	defer eng.Close()
	raw, err := eng.Open(filepath.Join(b.TempDir(), "f"), core.OpenOptions{Flag: os.O_RDWR | os.O_CREATE, Perm: 0o644})
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.WriteAt(make([]byte, 1<<20), 0); err != nil {
		b.Fatal(err)
	}
	m := New()
	for _, c := range []struct {
		name string
		f    core.File
	}{
		{"raw", raw},
		{"device", m.WrapFile("vda", raw)},
		{"device+pread", MeterFile(m.WrapFile("vdb", raw), m.PreadMeter())},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(4096)
			b.RunParallel(func(pb *testing.PB) {
				p := make([]byte, 4096)
				var off int64
				for pb.Next() {
					if _, err := c.f.ReadAt(p, off); err != nil {
						b.Error(err)
						return
					}
					off = (off + 4096) % (1 << 20)
				}
			})
		})
	}
}
