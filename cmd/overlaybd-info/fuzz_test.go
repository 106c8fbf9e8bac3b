package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/overlaybd-go/overlaybd/internal/clitest"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

// FuzzDescribe: no file makes overlaybd-info panic.
func FuzzDescribe(f *testing.F) {
	for _, v := range []string{"lsmt/rw-log.index", "lsmt/tool-created-1g.data", "stack/C.commit", "stack/B.zstd-bs16.zcommit"} {
		b, err := os.ReadFile(testvectors.Path(f, v))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := clitest.WriteFile(t, filepath.Join(t.TempDir(), "f"), data)
		in, err := describe(p)
		if err == nil && in.Kind == "" {
			t.Fatal("no kind and no error")
		}
	})
}
