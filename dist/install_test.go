package dist

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/overlaybd-go/overlaybd/core/config"
)

// TestDefaultConfig checks that the installed default configuration parses
// and validates, and asks for upstream's paths.
func TestDefaultConfig(t *testing.T) {
	g, err := config.LoadGlobal("overlaybd.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Validate(); err != nil {
		t.Fatal(err)
	}
	ls := g.EffectiveLog()
	if ls.Path != "/var/log/overlaybd.log" || ls.SizeMB != 10 || ls.RotateNum != 3 {
		t.Errorf("log settings %+v", ls)
	}
	if c := g.EffectiveCache(); c.Dir != "/opt/overlaybd/registry_cache" {
		t.Errorf("cache settings %+v", c)
	}
	if !g.EnableAudit || g.AuditPath != "/var/log/overlaybd-audit.log" {
		t.Errorf("audit %v %q", g.EnableAudit, g.AuditPath)
	}
	if g.ExporterConfig.Enable || g.ExporterConfig.Port != 9863 || g.ExporterConfig.URIPrefix != "/metrics" {
		t.Errorf("exporter %+v", g.ExporterConfig)
	}
}

// execStart returns the ExecStart command line of a unit file.
func execStart(t *testing.T, unit string) []string {
	t.Helper()
	f, err := os.Open(unit)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "ExecStart="); ok {
			return strings.Fields(v)
		}
	}
	t.Fatalf("%s has no ExecStart", unit)
	return nil
}

func exists(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Error(err)
		return
	}
	if st.Mode().Perm() != mode {
		t.Errorf("%s: mode %v, want %v", path, st.Mode().Perm(), mode)
	}
}

func gone(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("%s still there (%v)", path, err)
	}
}

func run(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command("sh", append([]string{"../scripts/install.sh"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("install.sh %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestInstallLayout builds the daemons, installs them into a temporary root
// with scripts/install.sh, checks the tree, the units' command lines and the
// configuration handling, and uninstalls.
func TestInstallLayout(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	bin := t.TempDir()
	for _, c := range []string{"overlaybd-nbd", "overlaybd-info"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(bin, c), "../cmd/"+c).CombinedOutput()
		if err != nil {
			t.Fatalf("go build %s: %v\n%s", c, err, out)
		}
	}
	root := t.TempDir()
	env := []string{"DESTDIR=" + root, "BINSRC=" + bin} // default PREFIX, UNITDIR, SYSCONFDIR
	run(t, env, "install")

	exists(t, filepath.Join(root, "opt/overlaybd/bin/overlaybd-nbd"), 0o755)
	exists(t, filepath.Join(root, "opt/overlaybd/bin/overlaybd-info"), 0o755)
	exists(t, filepath.Join(root, "etc/overlaybd/overlaybd.json"), 0o644)
	exists(t, filepath.Join(root, "etc/overlaybd/nbd"), 0o755)
	unit := filepath.Join(root, "lib/systemd/system/overlaybd-nbd@.service")
	exists(t, unit, 0o644)
	if _, err := os.Stat("systemd/overlaybd-tcmu.service"); err == nil {
		exists(t, filepath.Join(root, "lib/systemd/system/overlaybd-tcmu.service"), 0o644)
	}

	// The unit runs the installed binary with the installed configuration.
	args := execStart(t, unit)
	if args[0] != "/opt/overlaybd/bin/overlaybd-nbd" {
		t.Errorf("ExecStart runs %s", args[0])
	}
	cmdline := strings.Join(args, " ")
	if !strings.Contains(cmdline, "--service-config-path /etc/overlaybd/overlaybd.json") {
		t.Errorf("ExecStart does not name the installed config: %s", cmdline)
	}
	// The installed binary accepts the unit's flags (help lists them).
	help, _ := exec.Command(filepath.Join(root, args[0]), "--help").CombinedOutput()
	for _, a := range args[1:] {
		if strings.HasPrefix(a, "--") && !strings.Contains(string(help), a) {
			t.Errorf("installed overlaybd-nbd does not know %s:\n%s", a, help)
		}
	}
	// The installed configuration is the default one and loads.
	if _, err := config.LoadGlobal(filepath.Join(root, "etc/overlaybd/overlaybd.json")); err != nil {
		t.Error(err)
	}

	// A second install keeps an operator's configuration.
	conf := filepath.Join(root, "etc/overlaybd/overlaybd.json")
	if err := os.WriteFile(conf, []byte(`{"logPath":""}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out := run(t, env, "install")
	if b, _ := os.ReadFile(conf); string(b) != `{"logPath":""}` {
		t.Errorf("install overwrote the existing config: %q", b)
	}
	if !strings.Contains(out, "keeping existing") {
		t.Errorf("install did not say it kept the config: %q", out)
	}

	// Uninstall removes what it installed, keeps the modified config.
	run(t, env, "uninstall")
	gone(t, filepath.Join(root, "opt/overlaybd/bin/overlaybd-nbd"))
	gone(t, filepath.Join(root, "opt/overlaybd"))
	gone(t, unit)
	exists(t, conf, 0o644)
	os.Remove(conf)
	run(t, env, "install")
	run(t, env, "uninstall")
	gone(t, filepath.Join(root, "etc/overlaybd"))

	// Another PREFIX: binaries and the units' command lines follow it.
	root2 := t.TempDir()
	run(t, []string{"DESTDIR=" + root2, "BINSRC=" + bin, "PREFIX=/usr/local"}, "install")
	exists(t, filepath.Join(root2, "usr/local/bin/overlaybd-nbd"), 0o755)
	if a := execStart(t, filepath.Join(root2, "lib/systemd/system/overlaybd-nbd@.service")); a[0] != "/usr/local/bin/overlaybd-nbd" {
		t.Errorf("PREFIX not applied to the unit: %s", a[0])
	}

	// Nothing built: a clear error.
	cmd := exec.Command("sh", "../scripts/install.sh", "install")
	cmd.Env = append(os.Environ(), "DESTDIR="+t.TempDir(), "BINSRC="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "no overlaybd-* binaries") {
		t.Errorf("install without binaries: %v %s", err, out)
	}
}
