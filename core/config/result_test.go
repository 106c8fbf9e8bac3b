package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

type reasonErr struct{ reason string }

func (e reasonErr) Error() string        { return "open layer: " + e.reason + ": details" }
func (e reasonErr) ResultReason() string { return e.reason }

func TestWriteResult(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "init-debug.log")
	// A longer earlier content must be truncated away.
	if err := os.WriteFile(p, []byte("failed:a much longer earlier message\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		err  error
		want string
	}{
		{nil, "success"},
		{errors.New("failed to open local file /x"), "failed:failed to open local file /x"},
		{fmt.Errorf("layer 2: %w", reasonErr{"empty repoBlobUrl"}), "failed:empty repoBlobUrl"},
		{reasonErr{""}, "failed:"},
	}
	for _, c := range cases {
		if err := WriteResult(p, c.err); err != nil {
			t.Fatal(err)
		}
		if got := string(mustRead(t, p)); got != c.want {
			t.Errorf("WriteResult(%v) wrote %q, want %q", c.err, got, c.want)
		}
	}
	ok, reason, err := ReadResult(p)
	if ok || reason != "" || err != nil {
		t.Errorf("ReadResult = %v %q %v", ok, reason, err)
	}
	WriteResult(p, errors.New("x: y"))
	if ok, reason, err := ReadResult(p); ok || reason != "x: y" || err != nil {
		t.Errorf("ReadResult = %v %q %v", ok, reason, err)
	}

	// A new file gets mode 0644 (less the umask), as upstream's open(2).
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	q := filepath.Join(dir, "new.log")
	if err := WriteResult(q, nil); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(q); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	if ok, _, err := ReadResult(q); !ok || err != nil {
		t.Errorf("ReadResult(success) = %v, %v", ok, err)
	}
	if err := WriteResult("", errors.New("x")); err != nil {
		t.Errorf("empty path: %v", err)
	}
	if err := WriteResult(filepath.Join(dir, "no", "dir"), nil); err == nil {
		t.Error("WriteResult into a missing folder succeeded")
	}
	os.WriteFile(q, []byte("success\n"), 0o644)
	if _, _, err := ReadResult(q); err == nil {
		t.Error("ReadResult accepted a trailing newline")
	}
}
