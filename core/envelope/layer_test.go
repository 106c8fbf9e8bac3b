package envelope_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/envelope"
	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
)

// closeCounter records whether the file it wraps was closed.
type closeCounter struct {
	core.File
	closed int
}

func (c *closeCounter) Close() error {
	c.closed++
	return c.File.Close()
}

// TestOpenLayer opens the same committed layer plain, as a ZFile, in the
// tar envelope and both: each reads as the expected raw image, and closing
// the layer closes the file once.
func TestOpenLayer(t *testing.T) {
	for _, c := range []struct {
		name string
		blob []byte
	}{
		{"plain", vector(t, "lsmt/rw-log.commit")},
		{"zfile", vector(t, "lsmt/rw-log.lz4-bs4.zcommit")},
		{"tar", wrapTar(vector(t, "lsmt/rw-log.commit"))},
		{"tar > zfile", wrapTar(vector(t, "lsmt/rw-log.zstd-bs4.zcommit"))},
	} {
		f := &closeCounter{File: zfiletest.NewMemFile(c.blob)}
		l, err := envelope.OpenLayer(f)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := hashFile(t, l, l.Size()); got != rawMain {
			t.Errorf("%s: raw image sha256 %s, want %s", c.name, got, rawMain)
		}
		if err := l.Close(); err != nil || f.closed != 1 {
			t.Errorf("%s: close: %v, file closed %d times", c.name, err, f.closed)
		}
	}
}

// TestOpenLayerErrors: content that is not an LSMT layer, a damaged ZFile
// and a damaged LSMT layer are errors wrapping core.ErrCorrupt, and the file
// is closed each time.
func TestOpenLayerErrors(t *testing.T) {
	badZFile := vector(t, "lsmt/rw-log.lz4-bs4.zcommit")
	badZFile[10] ^= 0xff // the ZFile header's digest no longer matches
	badLSMT := vector(t, "lsmt/rw-log.commit")
	badLSMT = badLSMT[:len(badLSMT)-100] // the trailer is cut off
	for _, c := range []struct {
		name string
		blob []byte
		msg  string
	}{
		{"zfile of raw bytes", vector(t, "zfile/plain.lz4-bs4.zfile"), "zfile > raw, not an LSMT layer"},
		{"tar of raw bytes", vector(t, "zfile/plain.lz4-bs4.zfile.tar"), "tar > zfile > raw, not an LSMT layer"},
		{"damaged zfile", badZFile, ""},
		{"damaged layer", badLSMT, ""},
	} {
		f := &closeCounter{File: zfiletest.NewMemFile(c.blob)}
		l, err := envelope.OpenLayer(f)
		if err == nil {
			l.Close()
			t.Errorf("%s: opened", c.name)
			continue
		}
		if !errors.Is(err, core.ErrCorrupt) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v; want core.ErrCorrupt and %q", c.name, err, c.msg)
		}
		if f.closed != 1 {
			t.Errorf("%s: file closed %d times after the error", c.name, f.closed)
		}
	}
}
