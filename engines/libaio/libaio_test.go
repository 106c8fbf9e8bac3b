package libaio_test

import (
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/engines/enginetest"
	"github.com/overlaybd-go/overlaybd/engines/libaio"
)

func TestConformance(t *testing.T) {
	enginetest.Run(t, enginetest.Config{
		New: func(t testing.TB) core.Engine {
			e, err := libaio.New(core.EngineConfig{QueueDepth: 64})
			if err != nil {
				t.Fatalf("libaio.New: %v", err)
			}
			return e
		},
		MinDepth: 8,
	})
}
