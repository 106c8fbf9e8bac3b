package enginetest

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"github.com/overlaybd-go/overlaybd/core"
	"golang.org/x/sys/unix"
)

const childEnv = "OVERLAYBD_ENGINETEST_CHILD"

// Child runs body in a child process: the test binary, re-executed with
// -test.run selecting the current test and with attr (namespaces, ...).
// In the parent it waits for the child and fails t unless the test passed
// there; in the child it runs body. Tests that use it must not run parallel
// subtests of their own before calling it.
func Child(t *testing.T, attr *syscall.SysProcAttr, body func(t *testing.T)) {
	t.Helper()
	if os.Getenv(childEnv) == t.Name() {
		body(t)
		return
	}
	var pattern []string
	for _, part := range strings.Split(t.Name(), "/") {
		pattern = append(pattern, "^"+regexp.QuoteMeta(part)+"$")
	}
	cmd := exec.Command(os.Args[0], "-test.run="+strings.Join(pattern, "/"), "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+t.Name())
	cmd.SysProcAttr = attr
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSPC) {
			t.Skipf("cannot start the child process here: %v", err)
		}
		t.Fatalf("start child: %v", err)
	}
	if err == nil && bytes.Contains(out, []byte("--- SKIP: "+t.Name())) {
		t.Skipf("skipped in the child process:\n%s", out)
	}
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatalf("child process failed (%v):\n%s", err, out)
	}
	t.Logf("child process passed:\n%s", out)
}

// logBuffer is a slog handler target that tests can read.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) lines(substr string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.b.String(), "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return out
}

// newLogger returns a logger that writes text lines to a buffer.
func newLogger() (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	return slog.New(slog.NewTextHandler(lb, nil)), lb
}

// roundTrip writes and reads back a few unaligned ranges of f.
func roundTrip(t *testing.T, f core.File) {
	t.Helper()
	p := []byte("the quick brown fox jumps over the lazy dog")
	for _, off := range []int64{0, 1, 4095, 10000} {
		if n, err := f.WriteAt(p, off); n != len(p) || err != nil {
			t.Fatalf("WriteAt(off %d) = %d, %v", off, n, err)
		}
		got := make([]byte, len(p))
		if n, err := f.ReadAt(got, off); n != len(p) || err != nil || !bytes.Equal(got, p) {
			t.Fatalf("ReadAt(off %d) = %d, %v, %q", off, n, err, got)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

// DirectFallback checks, on a filesystem that really refuses O_DIRECT
// (ramfs, mounted in a child process's private mount namespace), that
// opening a file with O_DIRECT gives a working buffered file, one log line
// saying so and a counted fallback. It skips where the child cannot get a
// mount namespace.
func DirectFallback(t *testing.T, newEngine func(t testing.TB, cfg core.EngineConfig) core.Engine) {
	attr := &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	if os.Geteuid() != 0 {
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
	}
	Child(t, attr, func(t *testing.T) {
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			t.Fatalf("make / private in the child's mount namespace: %v", err)
		}
		dir := t.TempDir()
		if err := unix.Mount("ramfs", dir, "ramfs", 0, "mode=0755"); err != nil {
			t.Skipf("cannot mount ramfs here: %v", err)
		}
		defer unix.Unmount(dir, unix.MNT_DETACH)
		path := filepath.Join(dir, "file")
		if _, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_DIRECT, 0o644); !errors.Is(err, unix.EINVAL) {
			t.Fatalf("ramfs: open O_DIRECT = %v, want EINVAL; the test needs a filesystem that refuses O_DIRECT", err)
		}
		log, lb := newLogger()
		eng := newEngine(t, core.EngineConfig{Logger: log})
		defer eng.Close()
		f, err := eng.Open(path, core.OpenOptions{Flag: os.O_RDWR | os.O_CREATE, Perm: 0o644, Direct: true})
		if err != nil {
			t.Fatalf("Open with Direct on ramfs: %v", err)
		}
		defer f.Close()
		if d, ok := f.(interface{ Direct() bool }); !ok || d.Direct() {
			t.Fatalf("file reports O_DIRECT on a filesystem that refuses it")
		}
		if got := eng.Stats().Fallbacks; got != 1 {
			t.Fatalf("Fallbacks = %d, want 1", got)
		}
		if lines := lb.lines("O_DIRECT refused"); len(lines) != 1 || !strings.Contains(lines[0], path) ||
			!strings.Contains(lines[0], "invalid argument") {
			t.Fatalf("want one log line naming the file and EINVAL, got %q", lines)
		} else {
			t.Logf("logged: %s", lines[0])
		}
		roundTrip(t, f)
		// O_EXCL: the refused open creates the file; the buffered retry
		// must not then fail with EEXIST.
		g, err := eng.Open(filepath.Join(dir, "excl"), core.OpenOptions{Flag: os.O_RDWR | os.O_CREATE | os.O_EXCL, Perm: 0o644, Direct: true})
		if err != nil {
			t.Fatalf("Open with O_EXCL and Direct on ramfs: %v", err)
		}
		defer g.Close()
		roundTrip(t, g)
		if _, err := eng.Open(filepath.Join(dir, "excl"), core.OpenOptions{Flag: os.O_RDWR | os.O_CREATE | os.O_EXCL, Perm: 0o644, Direct: true}); !errors.Is(err, os.ErrExist) {
			t.Fatalf("second Open with O_EXCL = %v, want EEXIST", err)
		}
	})
}

// DenySyscalls installs a seccomp filter on every thread of the process
// that makes each system call in deny fail with its errno. It cannot be
// undone: call it in a child process (see Child).
func DenySyscalls(deny map[uintptr]unix.Errno) error {
	var arch uint32
	switch runtime.GOARCH {
	case "amd64":
		arch = unix.AUDIT_ARCH_X86_64
	case "arm64":
		arch = unix.AUDIT_ARCH_AARCH64
	default:
		return fmt.Errorf("seccomp filter for %s: %w", runtime.GOARCH, core.ErrUnsupported)
	}
	const (
		ldAbs = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		ret   = unix.BPF_RET | unix.BPF_K
	)
	// struct seccomp_data: nr at 0, arch at 4.
	prog := []unix.SockFilter{
		{Code: ldAbs, K: 4},
		{Code: jeq, K: arch, Jt: 1},
		{Code: ret, K: unix.SECCOMP_RET_ALLOW},
		{Code: ldAbs, K: 0},
	}
	for nr, errno := range deny {
		prog = append(prog,
			unix.SockFilter{Code: jeq, K: uint32(nr), Jf: 1},
			unix.SockFilter{Code: ret, K: unix.SECCOMP_RET_ERRNO | uint32(errno)})
	}
	prog = append(prog, unix.SockFilter{Code: ret, K: unix.SECCOMP_RET_ALLOW})
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC,
		uintptr(unsafe.Pointer(&fprog))); errno != 0 {
		return fmt.Errorf("seccomp(SET_MODE_FILTER, TSYNC): %w", errno)
	}
	runtime.KeepAlive(prog)
	return nil
}

// EngineRefused checks, in a child process whose seccomp filter makes the
// system call nr fail with errno, that the engine registered as name falls
// back to psync: the factory succeeds, the engine is psync, it logged one
// line naming the engine and the error, counted the fallback, and works.
func EngineRefused(t *testing.T, name string, nr uintptr, errno unix.Errno) {
	Child(t, nil, func(t *testing.T) {
		if err := DenySyscalls(map[uintptr]unix.Errno{nr: errno}); err != nil {
			if errors.Is(err, core.ErrUnsupported) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EPERM) ||
				errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EACCES) {
				t.Skipf("cannot install a seccomp filter here: %v", err)
			}
			t.Fatalf("install seccomp filter: %v", err)
		}
		if _, _, e := unix.Syscall(nr, 0, 0, 0); e != errno {
			t.Fatalf("system call %d returned %v under the filter, want %v", nr, e, errno)
		}
		factory, err := core.Engines.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		log, lb := newLogger()
		eng, err := factory(core.EngineConfig{Logger: log})
		if err != nil {
			t.Fatalf("factory of %s under seccomp: %v", name, err)
		}
		defer eng.Close()
		if eng.Name() != "psync" {
			t.Fatalf("engine is %q, want the psync fallback", eng.Name())
		}
		if got := eng.Stats().Fallbacks; got != 1 {
			t.Fatalf("Fallbacks = %d, want 1", got)
		}
		if lines := lb.lines("falling back to psync"); len(lines) != 1 || !strings.Contains(lines[0], name) ||
			!strings.Contains(lines[0], errno.Error()) {
			t.Fatalf("want one log line naming %s and %q, got %q", name, errno.Error(), lines)
		} else {
			t.Logf("logged: %s", lines[0])
		}
		f, err := eng.Open(filepath.Join(t.TempDir(), "file"), core.OpenOptions{Flag: os.O_RDWR | os.O_CREATE, Perm: 0o644})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		roundTrip(t, f)
	})
}
