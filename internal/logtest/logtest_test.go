package logtest_test

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/overlaybd-go/overlaybd/internal/logtest"
)

func TestBuffer(t *testing.T) {
	log, lb := logtest.New(slog.LevelDebug)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 50 {
				log.Debug("step", "goroutine", g, "i", i)
				_ = lb.String()
			}
		})
	}
	wg.Wait()
	if n := strings.Count(lb.String(), "\n"); n != 200 {
		t.Fatalf("%d lines, want 200", n)
	}
	if got := lb.Lines("goroutine=2 i=49"); len(got) != 1 || !strings.Contains(got[0], "level=DEBUG") || strings.HasSuffix(got[0], "\n") {
		t.Fatalf("Lines = %q", got)
	}
	if got := lb.Lines("no such text"); got != nil {
		t.Fatalf("Lines = %q", got)
	}
}

func TestNewLevel(t *testing.T) {
	log, lb := logtest.New(nil)
	log.Debug("hidden")
	log.Info("shown")
	if s := lb.String(); strings.Contains(s, "hidden") || !strings.Contains(s, "msg=shown") {
		t.Fatalf("log %q", s)
	}
	fmt.Fprint(lb, "raw\n")
	if got := lb.Lines("raw"); len(got) != 1 || got[0] != "raw" {
		t.Fatalf("Lines = %q", got)
	}
}
