package posixaio_test

import (
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/engines/enginetest"
	"github.com/overlaybd-go/overlaybd/engines/posixaio"
)

func TestConformance(t *testing.T) {
	enginetest.Run(t, enginetest.Config{
		New:      func(testing.TB) core.Engine { return posixaio.New(core.EngineConfig{QueueDepth: 8}) },
		MinDepth: 2,
	})
}
