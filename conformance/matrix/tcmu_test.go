package matrix

import (
	"os"
	"strings"
	"testing"
)

// The tcmu cells run exactly when the probe finds root, the target core in
// configfs and both modules; otherwise they are not run and the reason
// names what is missing.
func TestTCMUDeclaredFollowsTheProbe(t *testing.T) {
	c := Cell{Engine: "psync", Codec: "none", CRC: true, Envelope: "plain", Cache: "local", Layer: "committed", Upper: "none", Frontend: "tcmu"}
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if st, err := os.Stat(tcmuCore); err != nil || !st.IsDir() {
		missing = append(missing, tcmuCore)
	}
	for _, m := range []string{"target_core_user", "tcm_loop"} {
		if _, err := os.Stat("/sys/module/" + m); err != nil {
			missing = append(missing, m)
		}
	}
	st, why := tcmuDeclared(c)
	if len(missing) == 0 {
		if st != "" {
			t.Fatalf("every TCMU prerequisite is present, yet the cell is %s: %s", st, why)
		}
		return
	}
	if st != NotRun {
		t.Fatalf("status %q, want %q (missing %v)", st, NotRun, missing)
	}
	for _, m := range missing {
		if !strings.Contains(why, m) {
			t.Errorf("reason %q does not name the missing %s", why, m)
		}
	}
	c.Frontend = "nbd"
	if st, why := tcmuDeclared(c); st != "" {
		t.Errorf("an nbd cell is %s: %s", st, why)
	}
}
