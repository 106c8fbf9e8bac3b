package lsmt_test

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/core/lsmt"
)

const crashVSize = 4 * mib

// crashOp is operation i of the crash workload with the given seed.
func crashOp(seed, i uint64) (discard bool, off int64, p []byte) {
	r := rand.New(rand.NewPCG(seed, i))
	off = r.Int64N(crashVSize/512) * 512
	n := min(int64(1+r.IntN(16))*512, crashVSize-off)
	if r.IntN(10) == 0 {
		return true, off, make([]byte, n)
	}
	p = make([]byte, n)
	for j := range p {
		p[j] = byte(r.Uint32())
	}
	return false, off, p
}

// TestCrashChild is the child process of TestCrash; it does nothing unless
// started by it.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("OVERLAYBD_CRASH_DIR")
	if dir == "" {
		t.Skip("only run as the child of TestCrash")
	}
	seed, _ := strconv.ParseUint(os.Getenv("OVERLAYBD_CRASH_SEED"), 10, 64)
	start, _ := strconv.ParseUint(os.Getenv("OVERLAYBD_CRASH_START"), 10, 64)
	sparse := os.Getenv("OVERLAYBD_CRASH_SPARSE") == "1"
	dp, ip := filepath.Join(dir, "data"), filepath.Join(dir, "index")
	var w *lsmt.Writable
	var err error
	if start == 0 {
		w, err = lsmt.Create(openFile(t, dp, os.O_RDWR|os.O_CREATE|os.O_EXCL), openFile(t, ip, os.O_RDWR|os.O_CREATE|os.O_EXCL),
			lsmt.CreateOptions{VirtualSize: crashVSize, Sparse: sparse})
		if err == nil {
			err = w.Sync()
		}
	} else {
		w, err = lsmt.OpenWritable(openFile(t, dp, os.O_RDWR), openFile(t, ip, os.O_RDWR))
	}
	if err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	for i := start; ; i++ {
		fmt.Printf("start %d\n", i)
		discard, off, p := crashOp(seed, i)
		if discard {
			err = w.Discard(off, int64(len(p)))
		} else {
			_, err = w.WriteAt(p, off)
		}
		if err != nil {
			fmt.Printf("error %v\n", err)
			os.Exit(1)
		}
		if i%8 == 7 {
			if err := w.Sync(); err != nil {
				fmt.Printf("error %v\n", err)
				os.Exit(1)
			}
			fmt.Printf("synced %d\n", i)
		}
	}
}

// TestCrash kills a child process that writes and syncs a writable layer
// with SIGKILL at random points, several times over the same layer: the
// layer always opens, every synced write reads back, and the next child
// continues on the crashed layer.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	for _, sparse := range []bool{false, true} {
		t.Run(fmt.Sprintf("sparse=%v", sparse), func(t *testing.T) {
			dir := t.TempDir()
			if sparse {
				fsBlock4K(t, dir)
			}
			seed := testSeed(t)
			r := rand.New(rand.NewPCG(seed, 99))
			model := make([]byte, crashVSize)
			next := uint64(0)
			for round := 0; round < 6; round++ {
				synced, started := runCrashChild(t, dir, seed, next, sparse, time.Duration(30+r.IntN(200))*time.Millisecond)
				// Ops up to synced are durable; ops in (synced, started]
				// may or may not have landed.
				ambiguous := make([]bool, crashVSize/512)
				for i := next; i <= synced && synced != ^uint64(0); i++ {
					discard, off, p := crashOp(seed, i)
					if discard {
						clear(model[off : off+int64(len(p))])
					} else {
						copy(model[off:], p)
					}
				}
				from := next
				if synced != ^uint64(0) {
					from = synced + 1
				}
				for i := from; i <= started && started != ^uint64(0); i++ {
					_, off, p := crashOp(seed, i)
					for s := off / 512; s < (off+int64(len(p)))/512; s++ {
						ambiguous[s] = true
					}
				}
				w, err := lsmt.OpenWritable(openFile(t, filepath.Join(dir, "data"), os.O_RDWR), openFile(t, filepath.Join(dir, "index"), os.O_RDWR))
				if err != nil {
					t.Fatalf("round %d: the crashed layer does not open: %v", round, err)
				}
				got := readAll(t, w)
				w.Close()
				for s := range ambiguous {
					b, e := s*512, s*512+512
					if ambiguous[s] {
						copy(model[b:e], got[b:e]) // either outcome is acceptable
						continue
					}
					if string(got[b:e]) != string(model[b:e]) {
						t.Fatalf("round %d (synced %d, started %d): sector %d does not hold what was synced", round, synced, started, s)
					}
				}
				if started != ^uint64(0) {
					next = started + 1
				}
				t.Logf("round %d: synced through op %d, killed after starting op %d", round, int64(synced), int64(started))
			}
		})
	}
}

// runCrashChild runs the child until it is killed after d and returns the
// last synced and the last started op (^0 for none).
func runCrashChild(t *testing.T, dir string, seed, start uint64, sparse bool, d time.Duration) (synced, started uint64) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	sp := "0"
	if sparse {
		sp = "1"
	}
	cmd.Env = append(os.Environ(), "OVERLAYBD_CRASH_DIR="+dir, fmt.Sprintf("OVERLAYBD_CRASH_SEED=%d", seed),
		fmt.Sprintf("OVERLAYBD_CRASH_START=%d", start), "OVERLAYBD_CRASH_SPARSE="+sp)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1<<16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// Wait for the child to be ready, then let it run for d.
	synced, started = ^uint64(0), ^uint64(0)
	handle := func(l string) {
		f := strings.Fields(l)
		if len(f) == 2 && f[0] == "error" || len(f) > 0 && f[0] == "error" {
			t.Fatalf("child: %s", l)
		}
		if len(f) != 2 {
			return
		}
		n, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return
		}
		switch f[0] {
		case "synced":
			synced = n
		case "start":
			started = n
		}
	}
	deadline := time.After(10 * time.Second)
wait:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("child exited before it was ready")
			}
			handle(l)
			if l == "ready" {
				break wait
			}
		case <-deadline:
			cmd.Process.Kill()
			t.Fatal("child not ready")
		}
	}
	time.Sleep(d)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for l := range lines {
		handle(l)
	}
	cmd.Wait()
	return synced, started
}
