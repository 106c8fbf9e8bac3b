package iouring_test

import (
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/engines/enginetest"
	"github.com/overlaybd-go/overlaybd/engines/iouring"
	"golang.org/x/sys/unix"
)

func withOptions(o iouring.Options) func(t testing.TB, cfg core.EngineConfig) core.Engine {
	return func(t testing.TB, cfg core.EngineConfig) core.Engine {
		e, err := iouring.New(cfg, o)
		if iouring.Refused(err) {
			t.Skipf("io_uring is not available here (the fallback tests cover this): %v", err)
		}
		if err != nil {
			t.Fatalf("iouring.New: %v", err)
		}
		return e
	}
}

func TestConformance(t *testing.T) {
	enginetest.Run(t, enginetest.Config{New: withOptions(iouring.Options{Entries: 64, FixedFiles: 8}), MinDepth: 8})
}

func TestConformancePlainFiles(t *testing.T) {
	enginetest.Run(t, enginetest.Config{New: withOptions(iouring.Options{Entries: 16}), MinDepth: 8})
}

func TestConformanceFixedBuffers(t *testing.T) {
	enginetest.Run(t, enginetest.Config{
		New:      withOptions(iouring.Options{Entries: 32, FixedBuffers: 8, FixedBufferSize: 64 << 10}),
		MinDepth: 8,
	})
}

func TestFeatures(t *testing.T) {
	e, err := iouring.New(core.EngineConfig{}, iouring.Options{Entries: 8, FixedFiles: 4, FixedBuffers: 2})
	if iouring.Refused(err) {
		t.Skipf("io_uring is not available here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	f := e.Features()
	t.Logf("features %+v", f)
	if !f.FixedFiles || !f.FixedBuffers || f.Entries != 8 || f.Flags == 0 {
		t.Fatalf("features %+v", f)
	}
}

func TestDirectFallback(t *testing.T) {
	enginetest.DirectFallback(t, withOptions(iouring.Options{Entries: 8, FixedFiles: 4}))
}

func TestRefusedEPERM(t *testing.T) {
	enginetest.EngineRefused(t, iouring.Name, unix.SYS_IO_URING_SETUP, unix.EPERM)
}

func TestRefusedENOSYS(t *testing.T) {
	enginetest.EngineRefused(t, iouring.Name, unix.SYS_IO_URING_SETUP, unix.ENOSYS)
}

func TestRegistered(t *testing.T) {
	if e, err := iouring.New(core.EngineConfig{}, iouring.Options{Entries: 4}); iouring.Refused(err) {
		t.Skipf("io_uring is not available here: %v", err)
	} else if err == nil {
		e.Close()
	}
	for _, s := range []string{"3", "io_uring"} {
		name, f, err := core.Engines.Resolve(s)
		if err != nil || name != iouring.Name {
			t.Fatalf("ioEngine %s = %q, %v", s, name, err)
		}
		e, err := f(core.EngineConfig{})
		if err != nil || e.Name() != iouring.Name {
			t.Fatalf("factory: %v, %v", e, err)
		}
		e.Close()
	}
}

func TestRefusedENOMEM(t *testing.T) {
	enginetest.EngineRefused(t, iouring.Name, unix.SYS_IO_URING_SETUP, unix.ENOMEM)
}

func TestEntriesClamped(t *testing.T) {
	e, err := iouring.New(core.EngineConfig{}, iouring.Options{Entries: 1 << 20})
	if iouring.Refused(err) {
		t.Skipf("io_uring is not available here: %v", err)
	}
	if err != nil {
		t.Fatalf("New with 1<<20 entries: %v", err)
	}
	defer e.Close()
	if n := e.Features().Entries; n <= 0 || n > 1<<15 {
		t.Fatalf("entries = %d, want the kernel's maximum", n)
	}
	t.Logf("entries clamped to %d", e.Features().Entries)
}
