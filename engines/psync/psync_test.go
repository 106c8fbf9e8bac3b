package psync_test

import (
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/engines/enginetest"
	"github.com/overlaybd-go/overlaybd/engines/psync"
)

func TestConformance(t *testing.T) {
	enginetest.Run(t, enginetest.Config{New: func(testing.TB) core.Engine { return psync.New(core.EngineConfig{}) }})
}
