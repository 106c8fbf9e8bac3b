package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/envelope"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
)

// TestImportExt4 imports an ext4 image made by mkfs.ext4 -d, plain and as a
// tar-wrapped lz4 ZFile, and reads both back through core/lsmt.
func TestImportExt4(t *testing.T) {
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("mkfs.ext4 not installed (e2fsprogs)")
	}
	dir := t.TempDir()
	content := filepath.Join(dir, "content")
	os.MkdirAll(content, 0o755)
	os.WriteFile(filepath.Join(content, "hello.txt"), bytes.Repeat([]byte("overlaybd "), 1000), 0o644)
	img := filepath.Join(dir, "fs.img")
	if out, err := exec.Command(mkfs, "-q", "-F", "-d", content, img, "32M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v\n%s", err, out)
	}
	raw, _ := os.ReadFile(img)
	for _, args := range [][]string{
		{"-m", "base", "--uuid", "cccccccc-0000-4000-8000-000000000001"},
		{"-z", "-t", "--algorithm", "zstd", "--bs", "16"},
	} {
		out := filepath.Join(dir, "layer-"+strings.Join(args, ""))
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), append(args, img, out), &stdout, &stderr); code != exitOK {
			t.Fatalf("%q: exit %d\n%s", args, code, stderr.String())
		}
		f, err := psync.New(core.EngineConfig{}).Open(out, core.OpenOptions{Flag: os.O_RDONLY})
		if err != nil {
			t.Fatal(err)
		}
		inner, desc, err := envelope.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		ro, err := lsmt.OpenReadOnly(inner)
		if err != nil {
			t.Fatalf("%q (%s): %v", args, desc, err)
		}
		got := make([]byte, ro.Size())
		ro.ReadAt(got, 0)
		ro.Close()
		if !bytes.Equal(got, raw) {
			t.Fatalf("%q: imported layer differs from the ext4 image", args)
		}
		if st, _ := os.Stat(out); st.Size() >= int64(len(raw))/4 {
			t.Errorf("%q: layer of %d bytes for a %d-byte mostly empty image", args, st.Size(), len(raw))
		}
		// The output exists now: a second run without -f refuses.
		if code := run(context.Background(), append(args, img, out), &stdout, &stderr); code != exitFailure {
			t.Errorf("overwrite without -f: exit %d", code)
		}
	}
	var stderr bytes.Buffer
	for _, bad := range [][]string{{img}, {"--algorithm", "gzip", "-z", img, "x"}, {"--bs", "3", "-z", img, "x"}, {"--uuid", "nope", img, "x"}} {
		if code := run(context.Background(), bad, &stderr, &stderr); code != exitUsage {
			t.Errorf("%q: exit %d", bad, code)
		}
	}
}
