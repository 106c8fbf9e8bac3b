// Package progress draws a byte-count progress bar on standard error when,
// and only when, that stream is a terminal. Into a pipe or a file a Bar is
// a no-op, so a tool's output stays clean when redirected.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// IsTerminal reports whether w is an *os.File open on a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Bar counts bytes towards a known total. A nil *Bar is valid and does
// nothing, which is what New returns when w is not a terminal.
type Bar struct {
	w    io.Writer
	bar  *progressbar.ProgressBar
	once sync.Once
}

// New returns a bar drawn on w labelled what, or nil when w is not a
// terminal (see IsTerminal). A negative total means the total is not known:
// the bar then shows a spinner with the bytes counted and the rate.
func New(w io.Writer, total int64, what string) *Bar {
	if !IsTerminal(w) {
		return nil
	}
	return newBar(w, total, what)
}

func newBar(w io.Writer, total int64, what string) *Bar {
	return &Bar{w: w, bar: progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100_000_000),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)}
}

// Add counts n more bytes. It is safe for concurrent use.
func (b *Bar) Add(n int) {
	if b == nil || n <= 0 {
		return
	}
	b.bar.Add(n)
}

// Finish completes the bar and moves the terminal to a fresh line, so the
// messages that follow are not drawn over it. Later calls do nothing.
func (b *Bar) Finish() {
	if b == nil {
		return
	}
	b.once.Do(func() { b.bar.Finish() })
}

// Reader returns r counting the bytes read through it (r itself for a nil
// bar).
func (b *Bar) Reader(r io.Reader) io.Reader {
	if b == nil {
		return r
	}
	return &reader{r: r, b: b}
}

// Writer returns w counting the bytes written through it (w itself for a
// nil bar).
func (b *Bar) Writer(w io.Writer) io.Writer {
	if b == nil {
		return w
	}
	return &writer{w: w, b: b}
}

// WriterAt returns w counting the bytes written through it (w itself for a
// nil bar).
func (b *Bar) WriterAt(w io.WriterAt) io.WriterAt {
	if b == nil {
		return w
	}
	return &writerAt{w: w, b: b}
}

type reader struct {
	r io.Reader
	b *Bar
}

func (r *reader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.b.Add(n)
	return n, err
}

type writer struct {
	w io.Writer
	b *Bar
}

func (w *writer) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.b.Add(n)
	return n, err
}

type writerAt struct {
	w io.WriterAt
	b *Bar
}

func (w *writerAt) WriteAt(p []byte, off int64) (int, error) {
	n, err := w.w.WriteAt(p, off)
	w.b.Add(n)
	return n, err
}
