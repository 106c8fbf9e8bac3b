package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/internal/cli"
	"github.com/overlaybd-go/overlaybd/internal/clitest"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
)

func info(t *testing.T, path string) *Info {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run([]string{"--json", path}, &out, &errb); code != 0 {
		t.Fatalf("%s: exit %d: %s", path, code, errb.String())
	}
	var in Info
	dec := json.NewDecoder(&out)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		t.Fatal(err)
	}
	return &in
}

// The figures are those of testdata/vectors/DUMPS.txt.
func TestInfoVectors(t *testing.T) {
	in := info(t, testvectors.Path(t, "lsmt/rw-log.commit"))
	l := in.LSMT
	if in.Kind != "lsmt-committed" || in.Size != 822272 || l == nil || l.Trailer == nil ||
		l.Header.Flags != 7 || l.Trailer.Flags != 6 || l.Trailer.IndexOffset != 814080 || *l.IndexRecords != 256 ||
		l.Header.UUID != "AAAAAAAA-0000-4000-8000-000000000001" || l.Header.Tag != "overlaybd test vector: rw-log" ||
		l.Stats.Records != 13 || l.Stats.PaddingRecords != 243 || l.Header.VirtualSize != 64<<20 {
		t.Errorf("rw-log.commit: %+v %+v", in, l)
	}
	s := l.Stats
	if s.DataBytes+s.ZeroedBytes+uint64(*s.UnmappedBytes) != 64<<20 || s.DataRecords+s.ZeroedRecords != s.Records {
		t.Errorf("stats do not add up: %+v", s)
	}

	in = info(t, testvectors.Path(t, "lsmt/rw-log.index"))
	if in.Kind != "lsmt-writable-index" || *in.LSMT.IndexRecords != (4336-4096)/16 || in.LSMT.TornTailBytes != 0 || in.LSMT.Stats.UnmappedBytes != nil {
		t.Errorf("rw-log.index: %+v", in.LSMT)
	}
	in = info(t, testvectors.Path(t, "lsmt/rw-log.data"))
	if in.Kind != "lsmt-writable-data" || *in.LSMT.DataBytes != 992256-4096 || in.LSMT.Header.Flags != 3 {
		t.Errorf("rw-log.data: %+v", in.LSMT)
	}

	in = info(t, testvectors.Path(t, "stack/B.zstd-bs16.zcommit"))
	z := in.ZFile
	if in.Kind != "zfile" || z == nil || z.Algorithm != "zstd" || z.AlgorithmNumber != 2 || z.BlockSize != 16384 ||
		!z.HeaderOverwritten || !z.CRC || in.Inner == nil || in.Inner.Kind != "lsmt-committed" || in.Inner.Size != 278528 ||
		in.Inner.LSMT.Header.Tag != "layer B" {
		t.Errorf("B.zstd-bs16.zcommit: %+v, inner %+v", z, in.Inner)
	}

	in = info(t, testvectors.Path(t, "zfile/plain.lz4-bs4.zfile.tar"))
	if in.Kind != "tar" || in.Tar.Member != "overlaybd.commit" || in.Inner == nil || in.Inner.Kind != "zfile" ||
		in.Inner.ZFile.OriginalSize != 1847353 || in.Inner.Inner == nil || in.Inner.Inner.Kind != "raw" || in.Inner.Inner.Size != 1847353 {
		t.Errorf("plain.lz4-bs4.zfile.tar: %+v / %+v", in, in.Inner)
	}
	in = info(t, testvectors.Path(t, "apply/layer.tar"))
	if in.Kind != "raw" {
		t.Errorf("an OCI layer tar is %q, want raw", in.Kind)
	}
}

func newLayer(t *testing.T, dir string, sparse bool) *lsmt.Writable {
	open := func(p string) core.File {
		f, err := os.OpenFile(filepath.Join(dir, p), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		return psync.NewFile(f, nil)
	}
	w, err := lsmt.Create(open("data"), open("index"), lsmt.CreateOptions{VirtualSize: 8 << 20, Sparse: sparse})
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 4096, 1 << 20} {
		if _, err := w.WriteAt(bytes.Repeat([]byte{1}, 4096), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Discard(2<<20, 64<<10); err != nil {
		t.Fatal(err)
	}
	return w
}

func TestInfoSealedAndSparse(t *testing.T) {
	dir := t.TempDir()
	w := newLayer(t, dir, false)
	ro, err := w.Seal()
	if err != nil {
		t.Fatal(err)
	}
	ro.Close()
	in := info(t, filepath.Join(dir, "data"))
	s := in.LSMT.Stats
	if in.Kind != "lsmt-sealed" || in.LSMT.Trailer == nil || s.DataRecords != 3 || s.DataExtents != 2 || s.DataBytes != 8192+4096 ||
		s.ZeroedBytes != 64<<10 || *s.UnmappedBytes != 8<<20-8192-4096-64<<10 || s.PaddingRecords != 0 {
		t.Errorf("sealed: %+v %+v", in.LSMT, s)
	}

	dir = t.TempDir()
	w = newLayer(t, dir, true)
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	in = info(t, filepath.Join(dir, "data"))
	if in.Kind != "lsmt-writable-sparse-data" || in.LSMT.Stats == nil || in.LSMT.Stats.DataBytes < 8192+4096 {
		t.Errorf("sparse data: %+v %+v", in.LSMT, in.LSMT.Stats)
	}
	var out bytes.Buffer
	if code := run([]string{filepath.Join(dir, "data")}, &out, &out); code != 0 || !strings.Contains(out.String(), "kind: lsmt-writable-sparse-data") {
		t.Errorf("text output: %d %s", code, out.String())
	}
}

func TestInfoText(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{testvectors.Path(t, "lsmt/rw-log.lz4-bs4.zcommit")}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"kind: zfile", "zfile: lz4 (1), block size 4096", "contains:", "  kind: lsmt-committed",
		`tag "overlaybd test vector: rw-log"`, "index records: 256", "records: 13 (", "unmapped: "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("text output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestInfoErrors(t *testing.T) {
	dir := t.TempDir()
	b, err := os.ReadFile(testvectors.Path(t, "lsmt/rw-log.commit"))
	if err != nil {
		t.Fatal(err)
	}
	trunc := clitest.WriteFile(t, filepath.Join(dir, "trunc.commit"), b[:len(b)-100])
	idx, _ := os.ReadFile(testvectors.Path(t, "lsmt/rw-log.index"))
	badIndex := clitest.WriteFile(t, filepath.Join(dir, "bad.index"), append(idx[:len(idx):len(idx)], 1, 2, 3))
	short := clitest.WriteFile(t, filepath.Join(dir, "short"), b[:1000])
	badPlugin := clitest.PluginConfig(t, dir, "no-such-plugin", "lz4")
	vector := testvectors.Path(t, "lsmt/rw-log.lz4-bs4.zcommit")

	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{nil, cli.ExitRequired, "FILE is required"},
		{[]string{"a", "b"}, cli.ExitExtras, "one FILE expected"},
		{[]string{"--bogus", "a"}, cli.ExitValidation, "unknown flag"},
		{[]string{filepath.Join(dir, "missing")}, cli.ExitFailure, "missing"},
		{[]string{trunc}, cli.ExitFailure, "corrupt"},
		{[]string{short}, cli.ExitFailure, "shorter than its header"},
		{[]string{"--service_config_path", badPlugin, vector}, cli.ExitFailure, filepath.Join(dir, "no-such-plugin")},
		{[]string{"--service-config-path", filepath.Join(dir, "absent.json"), vector}, cli.ExitFailure, "absent.json"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := run(c.args, &out, &errb)
		if code != c.code || !strings.Contains(errb.String(), c.msg) {
			t.Errorf("%q: exit %d, stderr %q; want %d with %q", c.args, code, errb.String(), c.code, c.msg)
		}
	}
	// A torn tail of a writable index is reported, not an error.
	if in := info(t, badIndex); in.LSMT.TornTailBytes != 3 {
		t.Errorf("torn tail: %+v", in.LSMT)
	}
}
