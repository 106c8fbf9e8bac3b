//go:build tcmu_kernel

// Tests of the tcmu frontend against a real kernel's target_core_user and
// tcm_loop. They run as root inside the test VM (test/vm,
// TestConformanceTCMU), built with `go test -c -tags tcmu_kernel`.

package matrix

import (
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
)

// Through the SCSI disk, the tcmu cells catch a byte flipped by the engine,
// a discard acknowledged but not done, and a flush that overtakes the
// write before it (which the scenario's simulated power loss exposes: the
// client's Sync must reach the file as SYNCHRONIZE CACHE), while the
// control, a correct flush with the same power-loss simulation, passes.
func TestTCMUKernelBrokenCaught(t *testing.T) {
	if m := tcmuMissing(); m != "" {
		t.Fatalf("the kernel tier lacks %s", m)
	}
	seed := testSeed(t)
	base := Filter{Codec: "none", Envelope: "plain", Cache: "local", Frontend: "tcmu", Layer: "committed"}
	cases := []struct {
		name   string
		engine string
		upper  string
		wrap   func(core.File) core.File
		want   []string
	}{
		{name: "flip a byte", engine: flipByte, upper: "none",
			want: []string{"cell " + flipByte + "/none/crc/plain/local/committed/upper-none/tcmu", "differs"}},
		{name: "drop a discard", engine: "psync", upper: "append-only", wrap: func(f core.File) core.File { return dropDiscard{f} },
			want: []string{"cell psync/none/crc/plain/local/committed/upper-append-only/tcmu", "discard(off=", "after the discard"}},
		{name: "reorder a flush", engine: reorderFlush, upper: "append-only",
			want: []string{"cell " + reorderFlush + "/none/crc/plain/local/committed/upper-append-only/tcmu", "crash+reopen"}},
		{name: "control", engine: durable, upper: "append-only"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := base
			f.Engine, f.Upper = tc.engine, tc.upper
			var msgs []string
			for i := int64(0); i < 4 && len(msgs) == 0; i++ {
				rs, err := Run(f, Options{Seed: seed + i, Engines: []string{tc.engine}, WrapFile: tc.wrap, Ops: 300})
				if err != nil {
					t.Fatal(err)
				}
				ran := 0
				for _, r := range rs {
					switch r.Status {
					case Fail:
						msgs = append(msgs, r.Reason)
					case Pass:
						ran++
						if r.TCMU == nil || r.TCMU.Attaches == 0 {
							t.Errorf("%s passed without TCMU counters", r.Name)
						}
					case NotRun:
						t.Fatalf("%s was not run: %s", r.Name, r.Reason)
					}
				}
				if tc.want == nil {
					if len(msgs) > 0 {
						t.Fatalf("seed %d: the control failed:\n%s", seed+i, strings.Join(msgs, "\n"))
					}
					if ran == 0 {
						t.Fatal("no cell ran")
					}
					return
				}
			}
			if len(msgs) == 0 {
				t.Fatalf("the broken implementation passed every seed")
			}
			for _, w := range tc.want {
				if !strings.Contains(msgs[0], w) {
					t.Errorf("failure message lacks %q:\n%s", w, msgs[0])
				}
			}
			t.Logf("caught: %s", firstLine(msgs[0]))
		})
	}
}
