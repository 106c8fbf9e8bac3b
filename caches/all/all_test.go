package all_test

import (
	"testing"

	_ "github.com/overlaybd-go/overlaybd/caches/all"
	"github.com/overlaybd-go/overlaybd/core"
)

func TestAllRegistered(t *testing.T) {
	for _, name := range []string{"file", "download", "ocf"} {
		f, err := core.Caches.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		c, err := f(core.CacheConfig{Dir: t.TempDir(), CapacityBytes: 8 << 20, RefillSize: 262144, BlockSize: 65536})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}
