package dist

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/internal/logtest"
	"github.com/overlaybd-go/overlaybd/internal/testvectors"
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

	// A Debian package of the same tree, the configuration a conffile.
	if _, err := exec.LookPath("dpkg-deb"); err == nil {
		out := strings.TrimSpace(run(t, []string{"BINSRC=" + bin, "VERSION=1.2.3"}, "deb", t.TempDir()))
		deb := out[strings.LastIndex(out, "\n")+1:]
		if !strings.HasSuffix(deb, ".deb") {
			t.Fatalf("deb output %q", out)
		}
		list, err := exec.Command("dpkg-deb", "-c", deb).Output()
		if err != nil {
			t.Fatal(err)
		}
		perms := map[string]string{} // path -> "mode owner"
		for _, line := range strings.Split(string(list), "\n") {
			if f := strings.Fields(line); len(f) == 6 {
				perms[f[5]] = f[0] + " " + f[1]
			}
		}
		for path, want := range map[string]string{
			"./":                                "drwxr-xr-x root/root",
			"./opt/overlaybd/bin/overlaybd-nbd": "-rwxr-xr-x root/root",
			"./etc/overlaybd/overlaybd.json":    "-rw-r--r-- root/root",
			"./lib/systemd/system/overlaybd-nbd@.service": "-rw-r--r-- root/root",
		} {
			if perms[path] != want {
				t.Errorf("package: %s is %q, want %q:\n%s", path, perms[path], want, list)
			}
		}
		conff, err := exec.Command("dpkg-deb", "-I", deb, "conffiles").Output()
		if err != nil || strings.TrimSpace(string(conff)) != "/etc/overlaybd/overlaybd.json" {
			t.Errorf("conffiles %q %v", conff, err)
		}
		if v, _ := exec.Command("dpkg-deb", "-f", deb, "Version").Output(); strings.TrimSpace(string(v)) != "1.2.3" {
			t.Errorf("version %q", v)
		}
	}

	// Nothing built: a clear error.
	cmd := exec.Command("sh", "../scripts/install.sh", "install")
	cmd.Env = append(os.Environ(), "DESTDIR="+t.TempDir(), "BINSRC="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "no overlaybd-* binaries") {
		t.Errorf("install without binaries: %v %s", err, out)
	}
}

// TestInstalledNbdUnitServes installs into a temporary root, runs the
// installed overlaybd-nbd with the command line of the installed
// overlaybd-nbd@.service (paths moved under the root, %i expanded) and the
// installed overlaybd.json (its log, audit and cache paths moved under the
// root), and reads the export with nbdinfo and nbdcopy; the data must equal
// what the installed overlaybd-cat reads from the same image. SIGTERM (what
// systemd sends) must stop it with status 0.
func TestInstalledNbdUnitServes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	for _, tool := range []string{"nbdinfo", "nbdcopy"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (libnbd-bin)", tool)
		}
	}
	bin := t.TempDir()
	for _, c := range []string{"overlaybd-nbd", "overlaybd-cat"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(bin, c), "../cmd/"+c).CombinedOutput()
		if err != nil {
			t.Fatalf("go build %s: %v\n%s", c, err, out)
		}
	}
	root := t.TempDir()
	run(t, []string{"DESTDIR=" + root, "BINSRC=" + bin}, "install")

	// The installed configuration, with its system paths moved under root.
	conf := filepath.Join(root, "etc/overlaybd/overlaybd.json")
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.NewReplacer(`"/var/log/`, `"`+root+`/var/log/`, `"/opt/overlaybd/`, `"`+root+`/opt/overlaybd/`).Replace(string(b))
	os.MkdirAll(filepath.Join(root, "var/log"), 0o755)
	if err := os.WriteFile(conf, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	layer := testvectors.Path(t, "stack/A.commit")
	img := filepath.Join(root, "etc/overlaybd/nbd/vec.json")
	if err := os.WriteFile(img, []byte(`{"lowers":[{"file":"`+layer+`"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}

	runDir := filepath.Join(root, "run/overlaybd-nbd/vec")
	os.MkdirAll(runDir, 0o750) // RuntimeDirectory=
	var args []string
	for _, a := range execStart(t, filepath.Join(root, "lib/systemd/system/overlaybd-nbd@.service")) {
		a = strings.ReplaceAll(a, "/run/overlaybd-nbd/%i", runDir)
		a = strings.ReplaceAll(a, "%i", "vec")
		a = strings.ReplaceAll(a, "/etc/overlaybd/", root+"/etc/overlaybd/")
		a = strings.ReplaceAll(a, "/opt/overlaybd/", root+"/opt/overlaybd/")
		args = append(args, a)
	}
	log := &logtest.Buffer{}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("overlaybd-nbd after SIGTERM: %v\n%s", err, log.String())
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Error("overlaybd-nbd ignored SIGTERM")
		}
	}()
	sock := filepath.Join(runDir, "nbd.sock")
	uri := "nbd+unix:///vec?socket=" + sock
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("overlaybd-nbd exited: %v\n%s", err, log.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket after 30 s:\n%s", log.String())
		}
	}
	served, err := exec.Command("nbdcopy", uri, "-").Output()
	if err != nil {
		t.Fatalf("nbdcopy: %v", err)
	}
	want, err := exec.Command(filepath.Join(root, "opt/overlaybd/bin/overlaybd-cat"), layer).Output()
	if err != nil {
		t.Fatalf("overlaybd-cat: %v", err)
	}
	if len(served) == 0 || !bytes.Equal(served, want) {
		t.Errorf("served %d bytes, overlaybd-cat %d; equal %v", len(served), len(want), bytes.Equal(served, want))
	}
}
