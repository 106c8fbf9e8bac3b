package libaio_test

import (
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/engines/enginetest"
	"github.com/overlaybd-go/overlaybd/engines/libaio"
	"golang.org/x/sys/unix"
)

func newEngine(t testing.TB, cfg core.EngineConfig) core.Engine {
	cfg.QueueDepth = 64
	e, err := libaio.New(cfg)
	if libaio.Refused(err) {
		t.Skipf("native AIO is not available here (the fallback tests cover this): %v", err)
	}
	if err != nil {
		t.Fatalf("libaio.New: %v", err)
	}
	return e
}

func TestConformance(t *testing.T) {
	enginetest.Run(t, enginetest.Config{New: newEngine, MinDepth: 8})
}

func TestDirectFallback(t *testing.T) { enginetest.DirectFallback(t, newEngine) }

func TestRefusedEPERM(t *testing.T) {
	enginetest.EngineRefused(t, libaio.Name, unix.SYS_IO_SETUP, unix.EPERM)
}

func TestRefusedENOSYS(t *testing.T) {
	enginetest.EngineRefused(t, libaio.Name, unix.SYS_IO_SETUP, unix.ENOSYS)
}

func TestRegistered(t *testing.T) {
	if e, err := libaio.New(core.EngineConfig{QueueDepth: 4}); libaio.Refused(err) {
		t.Skipf("native AIO is not available here: %v", err)
	} else if err == nil {
		e.Close()
	}
	for _, s := range []string{"1", "libaio"} {
		name, f, err := core.Engines.Resolve(s)
		if err != nil || name != libaio.Name {
			t.Fatalf("ioEngine %s = %q, %v", s, name, err)
		}
		e, err := f(core.EngineConfig{})
		if err != nil || e.Name() != libaio.Name {
			t.Fatalf("factory: %v, %v", e, err)
		}
		e.Close()
	}
}

func TestRefusedEAGAIN(t *testing.T) {
	enginetest.EngineRefused(t, libaio.Name, unix.SYS_IO_SETUP, unix.EAGAIN)
}
