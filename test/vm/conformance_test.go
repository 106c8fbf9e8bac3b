//go:build vm

package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/conformance"
	"github.com/overlaybd-go/overlaybd/conformance/matrix"
)

// ConformanceEnv selects what runs instead of the sample: "full" runs the
// whole tcmu column of the matrix, a value starting with "--" runs the
// filter flags it holds (e.g. "--engine psync --upper none").
// ConformanceOpsEnv overrides the operations per cell.
const (
	ConformanceEnv    = "OVERLAYBD_VM_CONFORMANCE"
	ConformanceOpsEnv = "OVERLAYBD_VM_CONFORMANCE_OPS"
)

// tcmuSample are the filters of the sample runs (--frontend tcmu is added):
// together they hold every IO engine; the codec flavours none, lz4 and zstd
// in their Go, cgo and plugin builds; CRCs on and off (every
// codec filter but none selects both); both envelopes; every source and
// cache; both layer kinds; and every upper. Under TCG a writable cell takes
// about 15 s (every reopen, commit and seal detaches and attaches the
// disk), a read-only cell about 5 s and a plugin cell about 40 s (every
// block crosses to the plugin process): the sample stays near 3 minutes,
// and the lz4 plugin runs in the full column only.
var tcmuSample = []string{
	"--engine psync --codec none --envelope plain --cache local --layer committed --upper none",
	"--engine libaio --codec none --envelope tar --cache local --layer sealed --upper append-only",
	"--engine posixaio --codec none --envelope plain --cache remote-ocf --layer committed --upper sparse",
	"--engine io_uring --codec zstd-go --envelope tar --cache remote-download --layer sealed --upper append-only",
	"--engine psync --codec lz4-go,lz4-native,zstd-native --envelope plain --cache remote-file --layer committed --upper none",
	"--engine psync --codec lz4-plugin,zstd-plugin --envelope tar --cache local --layer sealed --upper none",
}

// TestConformanceTCMU runs the conformance matrix's tcmu column inside the
// VM: overlaybd-conformance (a static build with the cgo codecs, and the
// static codec plugins) serves every cell's device with frontends/tcmu
// through configfs, target_core_user and tcm_loop, and drives it through
// the /dev/sdX disk the kernel makes. Remote cells use the registry inside
// the conformance process. By default it runs a sample of every dimension
// (tcmuSample); with OVERLAYBD_VM_CONFORMANCE=full every tcmu cell (about
// 2,300 run in the static build: several hours under TCG).
func TestConformanceTCMU(t *testing.T) {
	sel := os.Getenv(ConformanceEnv)
	full := sel != ""
	ops := 100
	runs := tcmuSample
	timeout, mem := 480*time.Second, "1024"
	switch {
	case sel == "full":
		ops, runs, timeout, mem = 300, []string{""}, 48*time.Hour, "4096"
	case strings.HasPrefix(sel, "--"):
		ops, runs, timeout, mem = 300, []string{sel}, 48*time.Hour, "4096"
	case sel != "":
		t.Fatalf("%s=%q: want full or filter flags (--engine ...)", ConformanceEnv, sel)
	}
	if s := os.Getenv(ConformanceOpsEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("%s=%q: want a positive number", ConformanceOpsEnv, s)
		}
		ops = n
	}
	seed, err := conformance.Seed()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("seed %d (replay with %s=%d)", seed, conformance.SeedEnv, seed)

	dir := share(t)
	bin := filepath.Join(dir, "bin")
	root := repoRoot(t)
	// Static cgo builds: the conformance binary with the cgo codec
	// flavours (-tags cgo_codecs; ISA-L ships no static library, so the
	// CRC flavour is crc32c-go) and the codec plugin examples.
	static := []string{"CGO_ENABLED=1"}
	ld := "-extldflags=-static"
	run(t, root, static, "go", "build", "-tags", "cgo_codecs,netgo,osusergo", "-ldflags", ld, "-o", bin+"/", "./cmd/overlaybd-conformance")
	run(t, root, static, "go", "build", "-tags", "netgo,osusergo", "-ldflags", ld, "-o", bin+"/", "./plugins/examples/lz4-cgo", "./plugins/examples/zstd-cgo")
	// conformance/matrix's kernel tests (broken implementations caught
	// through the disk).
	run(t, root, []string{"CGO_ENABLED=0"}, "go", "test", "-c", "-tags", "tcmu_kernel", "-o", filepath.Join(bin, "matrix.test"), "./conformance/matrix")

	var lines strings.Builder
	for _, r := range runs {
		fmt.Fprintf(&lines, "%s --seed %d --ops %d\n", r, seed, ops)
	}
	if err := os.WriteFile(filepath.Join(dir, "conformance-runs.txt"), []byte(lines.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join(root, "test/vm/guest/conformance-tcmu.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "conformance-tcmu.sh"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "test/vm/run.sh"), "-s", dir, "-t", strconv.Itoa(int(timeout.Seconds())),
		"-m", mem, filepath.Join(dir, "conformance-tcmu.sh"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	vmErr := cmd.Run()
	t.Logf("guest ran in %v", time.Since(start).Round(time.Second))
	if testing.Verbose() || vmErr != nil {
		t.Log(out.String())
	}

	// Every run's report, whatever the guest's status: failures are
	// reported by cell.
	passed, seen := 0, map[string]bool{}
	var cellTime time.Duration
	for i := range runs {
		n := i + 1
		rcb, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("conformance-%d.rc", n)))
		if err != nil {
			t.Errorf("run %d (%s): no exit status: %v", n, runs[i], err)
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("conformance-%d.json", n)))
		if err != nil {
			t.Errorf("run %d (%s) exited with %s and wrote no report: %v", n, runs[i], strings.TrimSpace(string(rcb)), err)
			continue
		}
		var rep matrix.Report
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Errorf("run %d: report: %v", n, err)
			continue
		}
		if rep.Seed != seed {
			t.Errorf("run %d: report seed %d, want %d", n, rep.Seed, seed)
		}
		ran := 0
		for _, r := range rep.Results {
			if r.Cell.Frontend != "tcmu" {
				t.Errorf("run %d: cell %s is not a tcmu cell", n, r.Name)
			}
			switch r.Status {
			case matrix.Fail:
				t.Errorf("cell %s failed (seed %d): %s", r.Name, seed, r.Reason)
				ran++
			case matrix.Pass:
				ran++
				passed++
				cellTime += r.Duration
				if r.TCMU == nil || r.TCMU.Attaches == 0 || r.TCMU.Served.Reads == 0 {
					t.Errorf("cell %s passed without TCMU counters showing the disk served it: %+v", r.Name, r.TCMU)
				}
				c := r.Cell
				for _, v := range []string{"engine=" + c.Engine, "codec=" + c.Codec, "envelope=" + c.Envelope, "cache=" + c.Cache,
					"layer=" + c.Layer, "upper=" + c.Upper, "crc=" + strconv.FormatBool(c.CRC)} {
					seen[v] = true
				}
			case matrix.NotRun:
				if !full {
					// The sample holds only cells the guest can run: a
					// missing module or plugin is a failure here.
					t.Errorf("cell %s was not run: %s", r.Name, r.Reason)
				}
			}
		}
		if ran == 0 {
			t.Errorf("run %d (%s) ran no cell", n, runs[i])
		}
		if rc := strings.TrimSpace(string(rcb)); rc != "0" {
			t.Errorf("run %d (%s): overlaybd-conformance exited with %s", n, runs[i], rc)
		}
	}
	t.Logf("%d tcmu cells passed (%v in cells)", passed, cellTime.Round(time.Second))
	checkMatrixKernelTests(t, dir)
	if vmErr != nil {
		t.Fatalf("guest: %v", vmErr)
	}
	if !full {
		var want []string
		for _, e := range matrix.Engines() {
			want = append(want, "engine="+e)
		}
		for _, c := range matrix.Codecs() {
			want = append(want, "codec="+c)
		}
		want = append(want, "envelope=plain", "envelope=tar", "cache=local", "cache=remote-file", "cache=remote-download",
			"cache=remote-ocf", "layer=committed", "layer=sealed", "upper=none", "upper=append-only", "upper=sparse",
			"crc=true", "crc=false")
		for _, w := range want {
			if !seen[w] {
				t.Errorf("no passing tcmu cell with %s", w)
			}
		}
	}
}

// checkMatrixKernelTests checks the guest's run of conformance/matrix's
// kernel tests.
func checkMatrixKernelTests(t *testing.T, dir string) {
	t.Helper()
	logb, err := os.ReadFile(filepath.Join(dir, "matrix-test.log"))
	if err != nil {
		t.Errorf("conformance/matrix kernel tests did not run: %v", err)
		return
	}
	rc, _ := os.ReadFile(filepath.Join(dir, "matrix-test.rc"))
	log := string(logb)
	ok := strings.TrimSpace(string(rc)) == "0"
	for _, want := range []string{"--- PASS: TestTCMUKernelBrokenCaught", "--- PASS: TestTCMUDeclaredFollowsTheProbe"} {
		if !strings.Contains(log, want) {
			t.Errorf("conformance/matrix kernel tests: no %q", want)
			ok = false
		}
	}
	if !ok {
		t.Errorf("conformance/matrix kernel tests exited with %q:\n%s", strings.TrimSpace(string(rc)), log)
		return
	}
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "caught:") || strings.Contains(line, "--- PASS") {
			t.Log(strings.TrimSpace(line))
		}
	}
}
