package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func addFixtures(f *testing.F, dir string) {
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*.json"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no fixtures in testdata/%s: %v", dir, err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzParseGlobal: no input panics; what parses validates without panicking
// and survives a marshal/parse round trip unchanged.
func FuzzParseGlobal(f *testing.F) {
	addFixtures(f, "global")
	for _, s := range []string{`{"a":`, `{"logLevel":1e400}`, `{"ioEngine":"3"}`, `{"codecPlugins":[{"path":"x","algorithms":["lz4"],"args":[]}]}`,
		`{"registryTLS":{"insecureSkipVerify":["*.","[::1]:0",":80"]}}`, `{"serviceConfig":{"enable":true,"address":"[::1"}}`,
		"{\"logPath\":\"\xff\"}", `{"x":[[[[[[]]]]]]}`, `{"exporterConfig":{"enable":true,"address":"[]"}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := ParseGlobal(data, "fuzz.json")
		if err != nil {
			if g != nil {
				t.Fatal("non-nil config with an error")
			}
			return
		}
		_ = g.Validate()
		_ = g.EffectiveLog()
		_ = g.EffectiveCache()
		_, _ = g.ServiceConfig.ListenAddr()
		_ = g.RegistryTLS.SkipVerify("a.b:1")
		b, err := json.Marshal(g)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		g2, err := ParseGlobal(b, "fuzz.json")
		if err != nil {
			t.Fatalf("reparse of %s: %v", b, err)
		}
		if d := cmp.Diff(g, g2); d != "" {
			t.Fatalf("round trip:\n%s", d)
		}
	})
}

// FuzzParseImage: as FuzzParseGlobal, for config.v1.json.
func FuzzParseImage(f *testing.F) {
	addFixtures(f, "image")
	for _, s := range []string{`{"lowers":[{}]}`, `{"lowers":[{"size":0}],"upper":{"vsize":-9223372036854775808}}`,
		`{"download":null}`, `{"download":{}}`, `{"lowers":null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		img, err := ParseImage(data, "fuzz.json")
		if err != nil {
			return
		}
		_ = img.Validate()
		for _, l := range img.Lowers {
			_ = l.LocalCandidates()
		}
		b, err := json.Marshal(img)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		img2, err := ParseImage(b, "fuzz.json")
		if err != nil {
			t.Fatalf("reparse of %s: %v", b, err)
		}
		if d := cmp.Diff(img, img2); d != "" {
			t.Fatalf("round trip:\n%s", d)
		}
	})
}
