package matrix

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/conformance"
)

func testSeed(t *testing.T) int64 {
	t.Helper()
	s, err := conformance.Seed()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("seed %d (replay with %s=%d)", s, conformance.SeedEnv, s)
	return s
}

// buildPlugin builds a codec plugin example into a temporary folder.
func buildPlugin(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	out, err := exec.Command("go", "build", "-o", bin, "github.com/overlaybd-go/overlaybd/plugins/examples/"+name).CombinedOutput()
	if err != nil {
		t.Fatalf("go build %s: %v\n%s", name, err, out)
	}
	return bin
}

// quickSample is the quick matrix: every value of every dimension appears
// in at least one cell that runs.
var quickSample = []Filter{
	// Every engine under every layer kind and upper.
	{Codec: "none", Envelope: "plain", Cache: "local", Frontend: "inprocess"},
	// Every codec flavour, CRC on and off, both envelopes and layer kinds.
	{Engine: "psync", Cache: "local", Upper: "none", Frontend: "inprocess"},
	// Every cache, through NBD.
	{Engine: "psync", Codec: "lz4-go,zstd-plugin", Envelope: "tar", Layer: "sealed", Upper: "none", Frontend: "nbd"},
	// NBD over the asynchronous engines and writable uppers.
	{Engine: "io_uring,libaio", Codec: "none", Envelope: "plain", Cache: "local", Layer: "committed", Upper: "sparse,append-only", Frontend: "nbd"},
	{Engine: "posixaio", Codec: "zstd-go", Envelope: "tar", Cache: "local", Layer: "committed", Upper: "none", Frontend: "nbd"},
	// Writable uppers over compressed, tar-wrapped and remote lowers,
	// with the asynchronous engines serving the upper.
	{Engine: "libaio,posixaio", Codec: "zstd-go", Envelope: "tar", Cache: "remote-ocf,remote-download", Layer: "sealed", Upper: "sparse,append-only", Frontend: "inprocess"},
	{Engine: "io_uring", Codec: "lz4-go", Envelope: "plain", Cache: "local,remote-file", Layer: "committed", Upper: "append-only", Frontend: "nbd"},
	// TCMU cells run only as root with the kernel's target (the VM tier);
	// here they are listed in the log with what is missing.
	{Frontend: "tcmu", Engine: "psync", Codec: "none", Envelope: "plain", Cache: "local", Layer: "committed", Upper: "none"},
	// A remote read-only stack whose cache does its file IO through an
	// asynchronous engine.
	{Engine: "io_uring", Codec: "zstd-go", Envelope: "plain", Cache: "remote-file", Layer: "committed", Upper: "none", Frontend: "inprocess"},
}

// TestQuickMatrix runs a sample of every dimension of the matrix (the full
// matrix is `go run ./cmd/overlaybd-conformance`).
func TestQuickMatrix(t *testing.T) {
	seed := testSeed(t)
	opts := Options{Seed: seed, Quick: !conformance.Long(),
		PluginBins: map[string]string{"zstd": buildPlugin(t, "zstd-cgo")}}
	start := time.Now()
	var all []Result
	for _, f := range quickSample {
		rs, err := Run(f, opts)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, rs...)
	}
	var b strings.Builder
	if err := WriteTable(&b, all, false); err != nil {
		t.Fatal(err)
	}
	t.Logf("quick matrix, %v:\n%s", time.Since(start).Round(time.Millisecond), b.String())
	seen := map[string]bool{}
	for _, r := range all {
		switch r.Status {
		case Fail:
			t.Errorf("%s: %s", r.Name, r.Reason)
		case Pass:
			c := r.Cell
			for _, v := range []string{"engine=" + c.Engine, "codec=" + c.Codec, "envelope=" + c.Envelope, "cache=" + c.Cache,
				"layer=" + c.Layer, "upper=" + c.Upper, "frontend=" + c.Frontend} {
				seen[v] = true
			}
			if c.CRC {
				seen["crc=on"] = true
			} else {
				seen["crc=off"] = true
			}
			if c.Upper != "none" {
				seen["upper over codec="+c.Codec] = true
				seen["upper over envelope="+c.Envelope] = true
				seen["upper over cache="+c.Cache] = true
				if c.Cache != "local" {
					seen["remote lowers under engine="+c.Engine] = true
				}
			} else if c.Cache != "local" {
				seen["remote read-only under engine="+c.Engine] = true
			}
			if r.NBD != nil && r.NBD.BlockStatus > 0 {
				seen["nbd block status"] = true
			}
		}
	}
	want := []string{"crc=on", "crc=off"}
	for _, e := range Engines() {
		want = append(want, "engine="+e)
	}
	for _, c := range []string{"none", "lz4-go", "zstd-go", "zstd-plugin"} {
		want = append(want, "codec="+c)
	}
	for _, v := range []string{"envelope=plain", "envelope=tar", "cache=local", "cache=remote-file", "cache=remote-download",
		"cache=remote-ocf", "layer=committed", "layer=sealed", "upper=none", "upper=append-only", "upper=sparse",
		"frontend=inprocess", "frontend=nbd"} {
		want = append(want, v)
	}
	want = append(want, "upper over codec=zstd-go", "upper over codec=lz4-go", "upper over envelope=tar", "upper over cache=remote-ocf",
		"upper over cache=remote-download", "upper over cache=remote-file", "remote lowers under engine=libaio",
		"remote lowers under engine=posixaio", "remote lowers under engine=io_uring", "remote read-only under engine=io_uring",
		"nbd block status")
	for _, w := range want {
		if !seen[w] {
			t.Errorf("no passing cell with %s in the quick matrix", w)
		}
	}
}

// Every cell is either run or declared with a reason.
func TestEveryCellRunsOrIsDeclared(t *testing.T) {
	var o Options
	for _, c := range Cells() {
		if st, why := o.Declared(c); st != "" && why == "" {
			t.Errorf("%s is %s without a reason", c, st)
		}
	}
}
