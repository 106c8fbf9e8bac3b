package kinds

import (
	"testing"

	"github.com/overlaybd-go/overlaybd/conformance"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/zfile"

	_ "github.com/overlaybd-go/overlaybd/engines/all"
)

// Every registered IO engine serves the LSMT layers' files through the same
// scenarios, and its counters show that it did the IO.
func TestLSMTOverEveryEngine(t *testing.T) {
	ops := 2_000
	switch {
	case conformance.Long():
		ops = 20_000
	case testing.Short():
		ops = 500
	}
	for _, name := range core.Engines.Names() {
		t.Run(name, func(t *testing.T) {
			f, err := core.Engines.Lookup(name)
			if err != nil {
				t.Fatal(err)
			}
			eng, err := f(core.EngineConfig{})
			if err != nil {
				t.Fatalf("engine %s: %v", name, err)
			}
			defer eng.Close()
			seed, err := conformance.Seed()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := conformance.RunWritable(LSMTWritable{Engine: eng}, t.TempDir(),
				conformance.WritableOptions{Seed: seed, Ops: ops, Logf: t.Logf}); err != nil {
				t.Fatal(err)
			}
			if err := conformance.RunReadOnly(LSMTReadOnly{Layers: 2, Engine: eng, ZFile: &zfile.Options{}}, t.TempDir(),
				conformance.ReadOnlyOptions{Seed: seed, Reads: 500, Logf: t.Logf}); err != nil {
				t.Fatal(err)
			}
			st := eng.Stats()
			if st.Reads == 0 || st.Writes == 0 || st.Syncs == 0 {
				t.Errorf("engine %s did not serve the IO: %+v", name, st)
			}
			t.Logf("engine %s: %+v", name, st)
		})
	}
}
