package config

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const aciRoot = "/var/lib/containerd/io.containerd.snapshotter.v1.overlaybd"

// The fixtures aci-*.json are what the snapshotter writes: json.Marshal of
// its pkg/types structs, compact, with its omitempty keys. They parse, and
// marshalling what was parsed gives the same bytes back.
func TestImageSnapshotterFixtures(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "image", "aci-*.json"))
	if len(files) < 5 {
		t.Fatalf("found %d fixtures", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			img, err := ParseImage(raw, f)
			if err != nil {
				t.Fatal(err)
			}
			if err := img.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			out, err := json.Marshal(img)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != string(raw) {
				t.Errorf("marshal differs from what the snapshotter wrote:\n got %s\nwant %s", out, raw)
			}
		})
	}

	img, err := LoadImage(filepath.Join("testdata", "image", "aci-turbooci.json"), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := &Image{
		File:        filepath.Join("testdata", "image", "aci-turbooci.json"),
		RepoBlobURL: "http://registry.local:5000/v2/ns/app/blobs",
		Lowers: []Layer{
			{GzipIndex: aciRoot + "/snapshots/21/fs/gzip.meta", File: aciRoot + "/snapshots/21/fs/ext4.fs.meta",
				TargetDigest: "sha256:aa00000000000000000000000000000000000000000000000000000000000000", Dir: aciRoot + "/snapshots/21/fs"},
			{File: aciRoot + "/snapshots/22/fs/overlaybd.commit", TargetFile: aciRoot + "/snapshots/22/layer.tar"},
			{Dir: aciRoot + "/snapshots/23/fs"},
		},
		Upper:           Upper{Index: aciRoot + "/snapshots/24/block/writable_index", Data: aciRoot + "/snapshots/24/block/writable_data"},
		ResultFile:      aciRoot + "/snapshots/24/block/init-debug.log",
		Download:        &DownloadConfig{Delay: 300, DelayExtra: 30, MaxMBps: 100, TryCnt: 5, BlockSize: 262144},
		RecordTracePath: "/tmp/trace",
	}
	if d := cmp.Diff(want, img); d != "" {
		t.Errorf("aci-turbooci.json (-want +got):\n%s", d)
	}
	if !img.Writable() {
		t.Error("Writable() = false")
	}
	if c := img.Lowers[2].LocalCandidates(); len(c) != 3 || c[0] != aciRoot+"/snapshots/23/fs/overlaybd.commit" ||
		c[1] != aciRoot+"/snapshots/23/fs/.commit" || c[2] != aciRoot+"/snapshots/23/fs/overlaybd.sealed" {
		t.Errorf("LocalCandidates = %q", c)
	}
	if c := img.Lowers[1].LocalCandidates(); len(c) != 1 {
		t.Errorf("LocalCandidates of a file-only layer = %q", c)
	}

	img, _ = ParseImage(mustRead(t, "testdata/image/aci-remote.json"), "r.json")
	if img.Writable() || len(img.Lowers) != 2 || img.Lowers[0].Size != 43446424 || img.Download != nil {
		t.Errorf("aci-remote.json = %+v", img)
	}
	img, _ = ParseImage(mustRead(t, "testdata/image/aci-upper-only.json"), "u.json")
	if !img.Writable() || img.Upper.VSize != 256 || img.Lowers == nil || len(img.Lowers) != 0 {
		t.Errorf("aci-upper-only.json = %+v", img)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A device config without "download" gets the global object as a whole; one
// with its own object keeps it, its missing fields taking the defaults (no
// field-wise merge with the global one).
func TestImageDownloadInheritance(t *testing.T) {
	g, err := ParseGlobal([]byte(`{"download":{"enable":true,"delay":7,"maxMBps":1}}`), "g.json")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	without := filepath.Join(dir, "a.json")
	with := filepath.Join(dir, "b.json")
	os.WriteFile(without, []byte(`{"lowers":[{"file":"/l"}]}`), 0o600)
	os.WriteFile(with, []byte(`{"lowers":[{"file":"/l"}],"download":{"delayExtra":3}}`), 0o600)

	img, err := LoadImage(without, g)
	if err != nil {
		t.Fatal(err)
	}
	if *img.Download != g.Download {
		t.Errorf("inherited download = %+v, want %+v", *img.Download, g.Download)
	}
	img, err = LoadImage(with, g)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultDownload()
	want.DelayExtra = 3
	if *img.Download != want {
		t.Errorf("own download = %+v, want %+v", *img.Download, want)
	}
	img, _ = LoadImage(without, nil)
	if *img.Download != DefaultDownload() {
		t.Errorf("download without a global config = %+v", *img.Download)
	}
	img, _ = ParseImage([]byte(`{"lowers":[{"file":"/l"}]}`), "x")
	if img.EffectiveDownload(g) != g.Download || img.EffectiveDownload(nil) != DefaultDownload() {
		t.Error("EffectiveDownload")
	}
	if _, err := LoadImage(filepath.Join(dir, "missing.json"), g); err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Errorf("LoadImage of a missing file: %v", err)
	}
}

func TestImageBadInput(t *testing.T) {
	cases := []struct {
		json, field string
		kind        error
	}{
		{`{"lowers":{}}`, "lowers", ErrType},
		{`{"lowers":[null]}`, "lowers[0]", ErrType},
		{`{"lowers":[{"file":"/a"},"b"]}`, "lowers[1]", ErrType},
		{`{"lowers":[{"file":"/a"},{"size":"10"}]}`, "lowers[1].size", ErrType},
		{`{"lowers":[{"size":-1}]}`, "lowers[0].size", ErrType},
		{`{"lowers":[{"size":1.0}]}`, "lowers[0].size", ErrType},
		{`{"lowers":[{"size":18446744073709551616}]}`, "lowers[0].size", ErrType},
		{`{"upper":[]}`, "upper", ErrType},
		{`{"upper":{"index":1}}`, "upper.index", ErrType},
		{`{"upper":{"vsize":"64"}}`, "upper.vsize", ErrType},
		{`{"download":{"enable":"yes"}}`, "download.enable", ErrType},
		{`{"download":{"tryCnt":2147483648}}`, "download.tryCnt", ErrType},
		{`{"accelerationLayer":1}`, "accelerationLayer", ErrType},
		{`{"resultFile":null,"resultFile":"x"}`, "resultFile", ErrSyntax},
		{`{"repoBlobUrl":"x"`, "", ErrSyntax},
		{`"x"`, "", ErrSyntax},
	}
	for _, c := range cases {
		_, err := ParseImage([]byte(c.json), "/snap/config.v1.json")
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field || !errors.Is(err, c.kind) || !strings.HasPrefix(err.Error(), "/snap/config.v1.json") {
			t.Errorf("%s: %v; want %v on %q", c.json, err, c.kind, c.field)
		}
	}
}

func TestImageValidate(t *testing.T) {
	many := `{"lowers":[` + strings.Repeat(`{"file":"/l"},`, MaxLowers) + `{"file":"/l"}]}`
	cases := []struct{ json, field string }{
		{`{}`, "lowers"},
		{`{"lowers":[],"upper":{}}`, "lowers"},
		{`{"lowers":null,"upper":{"target":"/t"}}`, "lowers"},
		{`{"upper":{"index":"/i"}}`, "upper.data"},
		{`{"lowers":[{"file":"/l"}],"upper":{"data":"/d"}}`, "upper.index"},
		{many, "lowers"},
		{`{"lowers":[{"dir":"/d"}],"accelerationLayer":true,"recordTracePath":"/t"}`, "recordTracePath"},
		{`{"lowers":[{"file":"/l"},{"size":5,"targetFile":"/t"}]}`, "lowers[1]"},
	}
	for _, c := range cases {
		img, err := ParseImage([]byte(c.json), "v.json")
		if err != nil {
			t.Fatalf("%.60s: %v", c.json, err)
		}
		err = img.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field || !errors.Is(err, ErrInvalid) {
			t.Errorf("%.60s: Validate = %v, want an error about %s", c.json, err, c.field)
		}
	}
	for _, ok := range []string{
		`{"upper":{"index":"/i","data":"/d"}}`,
		`{"lowers":[{"dir":"/d"}]}`,
		`{"lowers":[{"digest":"sha256:00"}],"accelerationLayer":true}`,
		`{"lowers":[` + strings.Repeat(`{"file":"/l"},`, MaxLowers-1) + `{"file":"/l"}]}`,
	} {
		img, err := ParseImage([]byte(ok), "v.json")
		if err != nil {
			t.Fatal(err)
		}
		if err := img.Validate(); err != nil {
			t.Errorf("%.60s: %v", ok, err)
		}
	}
}
