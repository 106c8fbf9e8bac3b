package iouring_test

import (
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/engines/enginetest"
	"github.com/overlaybd-go/overlaybd/engines/iouring"
)

func newEngine(t testing.TB, o iouring.Options) core.Engine {
	e, err := iouring.New(core.EngineConfig{}, o)
	if err != nil {
		t.Fatalf("iouring.New: %v", err)
	}
	return e
}

func TestConformance(t *testing.T) {
	enginetest.Run(t, enginetest.Config{
		New:      func(t testing.TB) core.Engine { return newEngine(t, iouring.Options{Entries: 64, FixedFiles: 8}) },
		MinDepth: 8,
	})
}

func TestConformanceFixedBuffers(t *testing.T) {
	enginetest.Run(t, enginetest.Config{
		New: func(t testing.TB) core.Engine {
			return newEngine(t, iouring.Options{Entries: 32, FixedBuffers: 8, FixedBufferSize: 64 << 10})
		},
		MinDepth: 8,
	})
}
