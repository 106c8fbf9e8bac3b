package psync_test

import (
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/engines/enginetest"
	"github.com/overlaybd-go/overlaybd/engines/psync"
)

func newEngine(_ testing.TB, cfg core.EngineConfig) core.Engine { return psync.New(cfg) }

func TestConformance(t *testing.T) {
	enginetest.Run(t, enginetest.Config{New: newEngine})
}

func TestDirectFallback(t *testing.T) { enginetest.DirectFallback(t, newEngine) }

func TestRegistered(t *testing.T) {
	name, _, err := core.Engines.Resolve("0")
	if err != nil || name != psync.Name {
		t.Fatalf("ioEngine 0 = %q, %v", name, err)
	}
}
