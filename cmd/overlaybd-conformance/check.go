package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/config"

	_ "github.com/overlaybd-go/overlaybd/caches/all"  // the cache types
	_ "github.com/overlaybd-go/overlaybd/codecs/all"  // the codecs
	_ "github.com/overlaybd-go/overlaybd/engines/all" // the IO engines
)

// installBinDir is where the packages install the binaries.
const installBinDir = "/opt/overlaybd/bin"

// requiredBinaries are the binaries of a deployment; optionalBinaries are
// reported when missing but do not fail the check.
var (
	requiredBinaries = []string{"overlaybd-tcmu", "overlaybd-create", "overlaybd-commit", "overlaybd-zfile"}
	optionalBinaries = []string{"overlaybd-nbd", "overlaybd-merge", "overlaybd-info", "overlaybd-cat", "overlaybd-import"}
)

// check is one line of the health check.
type check struct {
	name string
	err  error
	note string
}

// findBinary looks for name in installBinDir, then on PATH.
func findBinary(name string) (string, error) {
	p := filepath.Join(installBinDir, name)
	if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
		return p, nil
	}
	return exec.LookPath(name)
}

// checkDeployment checks an installed deployment without changing it: the
// binaries exist and are executable, the service configuration parses and
// validates, and its IO engine, cache type and codec plugins resolve. It
// prints one line per check to stdout and returns the exit status (0 all
// passed, 1 a check failed).
func checkDeployment(cfgPath string, log *slog.Logger) int {
	var checks []check
	add := func(name string, err error, note string) { checks = append(checks, check{name, err, note}) }

	for _, b := range requiredBinaries {
		p, err := findBinary(b)
		add("binary "+b, err, p)
	}
	for _, b := range optionalBinaries {
		if p, err := findBinary(b); err == nil {
			add("binary "+b, nil, p)
		} else {
			add("binary "+b, nil, "not installed (optional)")
		}
	}

	g, err := config.LoadGlobal(cfgPath)
	add("config "+cfgPath+" parses", err, "")
	if err == nil {
		add("config validates", g.Validate(), "")

		name, factory, err := g.IOEngine.Factory()
		if err == nil {
			var eng core.Engine
			if eng, err = factory(core.EngineConfig{}); err == nil {
				err = eng.Close()
			}
		}
		add("ioEngine "+string(g.IOEngine)+" resolves", err, name)

		ct := g.EffectiveCache().Type
		_, err = core.Caches.Lookup(ct)
		add("cache type "+ct+" is registered", err, "")

		for _, p := range g.CodecPlugins {
			add("codec plugin "+p.Path, checkPlugin(p), fmt.Sprint(p.Algorithms))
		}
	}

	failed := 0
	for _, c := range checks {
		status := "ok  "
		if c.err != nil {
			status = "FAIL"
			failed++
		}
		line := status + " " + c.name
		if c.note != "" {
			line += " (" + c.note + ")"
		}
		if c.err != nil {
			line += ": " + c.err.Error()
		}
		fmt.Println(line)
	}
	if failed > 0 {
		log.Error("installation check failed", "failed", failed, "checks", len(checks))
		return 1
	}
	log.Info("installation check passed", "checks", len(checks))
	return 0
}

// checkPlugin checks a codec plugin entry read-only: the binary is an
// executable file, its sha256 matches a pinned one, and every algorithm is
// a known codec.
func checkPlugin(p config.CodecPlugin) error {
	st, err := os.Stat(p.Path)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p.Path)
	}
	for _, a := range p.Algorithms {
		if _, ok := core.Codecs.NumberOf(a); !ok {
			return fmt.Errorf("algorithm %q is not a ZFile codec", a)
		}
	}
	if p.SHA256 != "" {
		f, err := os.Open(p.Path)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != p.SHA256 {
			return fmt.Errorf("sha256 %s, the configuration pins %s", got, p.SHA256)
		}
	}
	return nil
}
