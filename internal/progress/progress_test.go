package progress

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/internal/progress/ptytest"
)

type sink struct{ bytes.Buffer }

func (s *sink) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }

// exercise pushes total bytes through every wrapper of b and returns them
// unchanged, so the wrappers are checked to pass data through.
func exercise(t *testing.T, b *Bar, total int) {
	t.Helper()
	data := bytes.Repeat([]byte("x"), total/4)
	var got bytes.Buffer
	if _, err := io.Copy(&got, b.Reader(bytes.NewReader(data))); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("reader: %v, %d bytes", err, got.Len())
	}
	var s sink
	if n, err := b.Writer(&s).Write(data); err != nil || n != len(data) || !bytes.Equal(s.Bytes(), data) {
		t.Fatalf("writer: %d, %v", n, err)
	}
	if n, err := b.WriterAt(&s).WriteAt(data, 7); err != nil || n != len(data) {
		t.Fatalf("writerAt: %d, %v", n, err)
	}
	b.Add(total - 3*len(data))
	b.Finish()
}

// TestTerminal: on a pseudo-terminal the bar is drawn, then cleared.
func TestTerminal(t *testing.T) {
	pts, drawn := ptytest.Capture(t)
	if !IsTerminal(pts) {
		t.Fatal("pts is not seen as a terminal")
	}
	b := New(pts, 4<<20, "copy")
	if b == nil {
		t.Fatal("no bar on a terminal")
	}
	exercise(t, b, 4<<20)
	// The bar is cleared on Finish, which then starts a fresh line.
	if out := drawn(); !strings.Contains(out, "copy") || !strings.Contains(out, "%") || !strings.HasSuffix(out, "\n") {
		t.Fatalf("terminal shows %q, want a bar then a fresh line", out)
	}
}

// TestUnknownTotal: with a negative total the bytes counted are shown.
func TestUnknownTotal(t *testing.T) {
	pts, drawn := ptytest.Capture(t)
	b := New(pts, -1, "merge")
	exercise(t, b, 3<<20)
	b.Finish()
	if out := drawn(); !strings.Contains(out, "merge") || !strings.Contains(out, "MB") || !strings.HasSuffix(out, "\n") {
		t.Fatalf("terminal shows %q, want the bytes counted", out)
	}
}

// TestNotTerminal: into a pipe, a buffer or a regular file nothing is
// written, and the nil bar's wrappers still pass data through.
func TestNotTerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f, err := os.Create(t.TempDir() + "/log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var buf bytes.Buffer
	for _, out := range []io.Writer{w, f, &buf} {
		if IsTerminal(out) {
			t.Fatalf("%T seen as a terminal", out)
		}
		b := New(out, 1<<20, "copy")
		if b != nil {
			t.Fatalf("bar made for %T", out)
		}
		exercise(t, b, 1<<20)
	}
	w.Close()
	if rest, _ := io.ReadAll(r); len(rest) != 0 || buf.Len() != 0 {
		t.Fatalf("wrote %q / %q when not a terminal", rest, buf.String())
	}
	if st, _ := f.Stat(); st.Size() != 0 {
		t.Fatalf("wrote %d bytes to a file", st.Size())
	}
}
