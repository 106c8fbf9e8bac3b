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

// TestConformance runs the engine suite without its depth check: the pool's
// requests overlap in the kernel only when the Go scheduler runs two of its
// workers' system calls at once, which a loaded two-core machine may not do
// for a whole test (fast O_DIRECT reads finish before the runtime hands the
// blocked worker's processor to another). The kernel-queue engines (libaio,
// io_uring) keep the check.
func TestConformance(t *testing.T) {
	enginetest.Run(t, enginetest.Config{New: newEngine})
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
