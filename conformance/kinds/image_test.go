package kinds

import (
	"testing"

	"github.com/overlaybd-go/overlaybd/conformance"
	"github.com/overlaybd-go/overlaybd/core/config"
)

// Whole images opened from config.v1.json run the writable scenarios:
// core/image, the configuration and the result file together.
func TestImageConfigConformance(t *testing.T) {
	uring, err := config.ParseGlobal([]byte(`{"ioEngine":"io_uring"}`), "")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		kind conformance.WritableKind
		opts conformance.WritableOptions
	}{
		{ImageConfig{}, conformance.WritableOptions{}},
		{ImageConfig{Global: uring}, conformance.WritableOptions{}},
		{ImageConfig{Sparse: true}, conformance.WritableOptions{}},
	}
	for _, c := range cases {
		t.Run(c.kind.Name(), func(t *testing.T) {
			ops, _ := runs(t)
			o := c.opts
			o.Ops, o.Logf = ops/2, t.Logf
			seed, err := conformance.Seed()
			if err != nil {
				t.Fatal(err)
			}
			o.Seed = seed
			cnt, err := conformance.RunWritable(c.kind, t.TempDir(), o)
			if err != nil {
				t.Fatal(err)
			}
			if cnt.Reopens == 0 || cnt.Commits == 0 {
				t.Errorf("no reopen or commit: %+v", cnt)
			}
		})
	}
}
