package posixaio_test

import (
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/engines/enginetest"
	"github.com/overlaybd-go/overlaybd/engines/posixaio"
)

func newEngine(_ testing.TB, cfg core.EngineConfig) core.Engine {
	cfg.QueueDepth = 8
	return posixaio.New(cfg)
}

func TestConformance(t *testing.T) {
	enginetest.Run(t, enginetest.Config{New: newEngine, MinDepth: 2})
}

func TestDirectFallback(t *testing.T) { enginetest.DirectFallback(t, newEngine) }

func TestRegistered(t *testing.T) {
	for _, s := range []string{"2", "posixaio"} {
		name, _, err := core.Engines.Resolve(s)
		if err != nil || name != posixaio.Name {
			t.Fatalf("ioEngine %s = %q, %v", s, name, err)
		}
	}
}
