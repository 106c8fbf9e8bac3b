package cli_test

import (
	"bufio"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/internal/cli"
	"github.com/overlaybd-go/overlaybd/internal/clitest"
)

// TestMain makes the test binary, when clitest.Command starts it, a server
// that reports on standard output each step of cli.Shutdown it reaches.
func TestMain(m *testing.M) {
	clitest.Main(m, func() int {
		s := cli.NotifyShutdown()
		defer s.Stop()
		fmt.Println("ready")
		<-s.Context().Done()
		fmt.Println("graceful")
		<-s.Quick()
		fmt.Println("quick")
		time.Sleep(time.Minute)
		fmt.Println("not stopped")
		return 0
	})
}

// TestShutdownSteps sends three signals to a real process: the first
// cancels the context, the second closes Quick, the third kills it by the
// signal's default action.
func TestShutdownSteps(t *testing.T) {
	for _, sigs := range [][3]syscall.Signal{
		{syscall.SIGTERM, syscall.SIGINT, syscall.SIGTERM},
		{syscall.SIGINT, syscall.SIGINT, syscall.SIGINT},
	} {
		cmd := clitest.Command(t.TempDir())
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(out)
		expect := func(want string) {
			t.Helper()
			if !lines.Scan() || lines.Text() != want {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("%v: got %q, want %q", sigs, lines.Text(), want)
			}
		}
		expect("ready")
		cmd.Process.Signal(sigs[0])
		expect("graceful")
		cmd.Process.Signal(sigs[1])
		expect("quick")
		cmd.Process.Signal(sigs[2])
		done := make(chan error, 1)
		go func() {
			for lines.Scan() {
			}
			done <- cmd.Wait()
		}()
		select {
		case err = <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("%v: the third signal did not end the process", sigs)
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("%v: %v", sigs, err)
		}
		if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != sigs[2] {
			t.Fatalf("%v: %v, want death by %v", sigs, err, sigs[2])
		}
	}
}

// TestShutdownStop: after Stop the context is cancelled and nothing is
// caught any more.
func TestShutdownStop(t *testing.T) {
	s := cli.NotifyShutdown()
	s.Stop()
	s.Stop()
	select {
	case <-s.Context().Done():
	default:
		t.Fatal("Stop left the context running")
	}
	select {
	case <-s.Quick():
		t.Fatal("Quick closed without a signal")
	default:
	}
}
