// Package testvectors locates the reference files made by the C++ overlaybd
// tools, which the tests of every package compare against. The files live in
// the repository's testdata/vectors folder; testdata/README.md names their
// origin and expected contents.
package testvectors

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// Dir returns the absolute path of the vectors folder.
func Dir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return filepath.Join("testdata", "vectors")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "vectors")
}

// Path returns the absolute path of the vector rel (e.g. "lsmt/rw-log.commit")
// and fails the test if it does not exist.
func Path(tb testing.TB, rel string) string {
	tb.Helper()
	p := filepath.Join(Dir(), filepath.FromSlash(rel))
	if _, err := os.Stat(p); err != nil {
		tb.Fatalf("test vector %s: %v", rel, err)
	}
	return p
}
