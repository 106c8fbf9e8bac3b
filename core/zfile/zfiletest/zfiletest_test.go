package zfiletest_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/zfile/zfiletest"
)

func TestPlain(t *testing.T) {
	p := zfiletest.Plain()
	s := sha256.Sum256(p)
	if len(p) != zfiletest.PlainSize || hex.EncodeToString(s[:]) != zfiletest.PlainSHA256 {
		t.Fatalf("%d bytes, sha256 %x; want %d, %s", len(p), s, zfiletest.PlainSize, zfiletest.PlainSHA256)
	}
}

func TestMemFile(t *testing.T) {
	src := []byte("overlaybd")
	m := zfiletest.NewMemFile(src)
	src[0] = 'X' // the file holds a copy
	if n, err := m.WriteAt([]byte("!!"), 12); n != 2 || err != nil {
		t.Fatalf("write past the end: %d, %v", n, err)
	}
	if got, want := m.Bytes(), []byte("overlaybd\x00\x00\x00!!"); !bytes.Equal(got, want) || m.Size() != 14 {
		t.Fatalf("content %q (size %d), want %q", got, m.Size(), want)
	}
	buf := make([]byte, 4)
	if n, err := m.ReadAt(buf, 12); n != 2 || err != io.EOF || string(buf[:n]) != "!!" {
		t.Fatalf("read across the end: %d, %v, %q", n, err, buf[:n])
	}
	if n, err := m.ReadAt(buf, 14); n != 0 || err != io.EOF {
		t.Fatalf("read at the end: %d, %v", n, err)
	}
	if n, err := m.ReadAt(buf, 0); n != 4 || err != nil || string(buf) != "over" {
		t.Fatalf("read: %d, %v, %q", n, err, buf)
	}
	if err := m.Truncate(4); err != nil || string(m.Bytes()) != "over" {
		t.Fatalf("shrink: %v, %q", err, m.Bytes())
	}
	if err := m.Truncate(6); err != nil || string(m.Bytes()) != "over\x00\x00" {
		t.Fatalf("grow: %v, %q", err, m.Bytes())
	}
	for name, err := range map[string]error{
		"negative truncate": m.Truncate(-1),
		"negative read":     second(m.ReadAt(buf, -1)),
		"negative write":    second(m.WriteAt(buf, -1)),
	} {
		if !errors.Is(err, core.ErrOutOfRange) {
			t.Errorf("%s: %v, want ErrOutOfRange", name, err)
		}
	}
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"truncate": m.Truncate(1),
		"read":     second(m.ReadAt(buf, 0)),
		"write":    second(m.WriteAt(buf, 0)),
	} {
		if !errors.Is(err, core.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

func second(_ int, err error) error { return err }
