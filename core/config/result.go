package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// Result file contents (upstream's ImageService::set_result_file).
const (
	// ResultSuccess is the whole content of the result file of a device
	// that opened.
	ResultSuccess = "success"
	// ResultFailedPrefix starts the content of the result file of a device
	// that failed to open; the reason follows it directly.
	ResultFailedPrefix = "failed:"
)

// ResultReasoner is implemented by errors that carry upstream's exact
// result-file reason (e.g. "failed to open local file /x"), which may be
// shorter than their Error text.
type ResultReasoner interface {
	ResultReason() string
}

// ResultReason returns the reason written for err: the ResultReason of the
// first error in its chain that has one, else err.Error().
func ResultReason(err error) string {
	var rr ResultReasoner
	if errors.As(err, &rr) {
		return rr.ResultReason()
	}
	return err.Error()
}

// WriteResult writes the outcome of opening a device to path exactly as
// upstream does: the file is opened O_RDWR|O_CREATE|O_TRUNC with mode 0644
// and receives "success" when openErr is nil, else "failed:" followed by
// ResultReason(openErr), in one write, with no trailing newline. An empty
// path writes nothing.
func WriteResult(path string, openErr error) error {
	if path == "" {
		return nil
	}
	content := ResultSuccess
	if openErr != nil {
		content = ResultFailedPrefix + ResultReason(openErr)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write result file: %w", err)
	}
	if _, err := f.Write([]byte(content)); err != nil {
		f.Close()
		return fmt.Errorf("write result file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write result file %s: %w", path, err)
	}
	return nil
}

// ReadResult reads a result file: ok is true for "success"; otherwise reason
// is the text after "failed:". Content that is neither is an error.
func ReadResult(path string) (ok bool, reason string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return false, "", fmt.Errorf("read result file: %w", err)
	}
	s := string(b)
	switch {
	case s == ResultSuccess:
		return true, "", nil
	case strings.HasPrefix(s, ResultFailedPrefix):
		return false, s[len(ResultFailedPrefix):], nil
	default:
		return false, "", fmt.Errorf("result file %s: unexpected content %q", path, s)
	}
}
