package enginetest

import (
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
)

// asyncDepth is the depth the suite asks of engines that submit to the
// kernel asynchronously.
var asyncDepth = map[string]int{"libaio": 8, "io_uring": 8}

// Registered returns the suite's configuration for the engine registered
// in core.Engines under name (the caller imports the engine packages, e.g.
// engines/all). When the engine falls back to psync in this environment,
// the depth check is left out (and logged).
func Registered(name string) Config {
	return Config{
		New: func(t testing.TB, cfg core.EngineConfig) core.Engine {
			f, err := core.Engines.Lookup(name)
			if err != nil {
				t.Fatal(err)
			}
			e, err := f(cfg)
			if err != nil {
				t.Fatalf("engine %s: %v", name, err)
			}
			if e.Name() != name {
				t.Logf("engine %s fell back to %s here", name, e.Name())
			}
			return e
		},
		MinDepth: asyncDepth[name],
		Name:     name,
	}
}

// RunAll runs the suite on every engine registered in core.Engines, one
// subtest per name.
func RunAll(t *testing.T) {
	for _, name := range core.Engines.Names() {
		t.Run(name, func(t *testing.T) { Run(t, Registered(name)) })
	}
}
