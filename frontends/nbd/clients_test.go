package nbd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/core"
)

// Tests with third-party NBD clients (libnbd-bin, qemu-utils, fio, fuse3).

type nbdinfoJSON struct {
	Protocol   string `json:"protocol"`
	Structured bool   `json:"structured"`
	Exports    []struct {
		Name         string   `json:"export-name"`
		Description  string   `json:"description"`
		Contexts     []string `json:"contexts"`
		ReadOnly     bool     `json:"is_read_only"`
		CanFlush     bool     `json:"can_flush"`
		CanFUA       bool     `json:"can_fua"`
		CanMultiConn bool     `json:"can_multi_conn"`
		CanTrim      bool     `json:"can_trim"`
		CanZero      bool     `json:"can_zero"`
		CanCache     bool     `json:"can_cache"`
		Size         int64    `json:"export-size"`
	} `json:"exports"`
}

// parseMap parses `nbdinfo --map` output into extents.
func parseMap(tb testing.TB, out string) []core.Extent {
	tb.Helper()
	var exts []core.Extent
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		fs := strings.Fields(line)
		if len(fs) < 3 {
			tb.Fatalf("map line %q", line)
		}
		off, err1 := strconv.ParseInt(fs[0], 10, 64)
		l, err2 := strconv.ParseInt(fs[1], 10, 64)
		fl, err3 := strconv.ParseUint(fs[2], 10, 32)
		if err1 != nil || err2 != nil || err3 != nil {
			tb.Fatalf("map line %q", line)
		}
		exts = append(exts, core.Extent{Offset: off, Length: l, Flags: core.ExtentFlags(fl)})
	}
	return exts
}

// mergeExtents joins neighbours with equal flags.
func mergeExtents(in []core.Extent) []core.Extent {
	var out []core.Extent
	for _, e := range in {
		if k := len(out); k > 0 && out[k-1].Flags == e.Flags && out[k-1].Offset+out[k-1].Length == e.Offset {
			out[k-1].Length += e.Length
			continue
		}
		out = append(out, e)
	}
	return out
}

func TestNbdinfo(t *testing.T) {
	nbdinfo := needTool(t, "nbdinfo")
	f, _ := newFile(t, 8<<20, true)
	ro, _ := newFile(t, 1<<20, false)
	_, sock := startServer(t, []Export{
		{Name: "disk", File: sparseFile{f}, Description: "test disk"},
		{Name: "ro", File: ro, ReadOnly: true},
		{Name: "other", File: ro},
	}, Options{})

	var info nbdinfoJSON
	if err := json.Unmarshal([]byte(run(t, time.Minute, nbdinfo, "--json", uri(sock, "disk"))), &info); err != nil {
		t.Fatal(err)
	}
	e := info.Exports[0]
	if info.Protocol != "newstyle-fixed" || !info.Structured || e.Size != 8<<20 || e.ReadOnly ||
		!e.CanFlush || !e.CanFUA || !e.CanMultiConn || !e.CanTrim || !e.CanZero || !e.CanCache ||
		e.Description != "test disk" || len(e.Contexts) != 1 || e.Contexts[0] != metaContextAllocation {
		t.Errorf("nbdinfo disk: %+v", info)
	}
	if got := strings.TrimSpace(run(t, time.Minute, nbdinfo, "--size", uri(sock, "ro"))); got != "1048576" {
		t.Errorf("size of ro: %q", got)
	}
	if err := json.Unmarshal([]byte(run(t, time.Minute, nbdinfo, "--json", uri(sock, "ro"))), &info); err != nil {
		t.Fatal(err)
	}
	if e := info.Exports[0]; !e.ReadOnly || e.CanTrim || e.CanZero || e.CanFUA {
		t.Errorf("nbdinfo ro: %+v", e)
	}

	if err := json.Unmarshal([]byte(run(t, time.Minute, nbdinfo, "--list", "--json", uri(sock, ""))), &info); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range info.Exports {
		names = append(names, e.Name)
	}
	if strings.Join(names, ",") != "disk,ro,other" {
		t.Errorf("--list: %q", names)
	}

	// --map against the kernel's allocation map of the backing file.
	got := parseMap(t, run(t, time.Minute, nbdinfo, "--map", uri(sock, "disk")))
	want, err := sparseFile{f}.BlockStatus(0, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	want = mergeExtents(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("--map:\n got %v\nwant %v", got, want)
	}
	if len(want) < 3 {
		t.Errorf("test file has too few extents (%d) to mean anything", len(want))
	}
}

func TestNbdcopy(t *testing.T) {
	nbdcopy := needTool(t, "nbdcopy")
	src, srcPath := newFile(t, 16<<20, true)
	dst, _ := newFile(t, 16<<20, false)
	_, sock := startServer(t, []Export{
		{Name: "src", File: src, ReadOnly: true, FastReads: true},
		{Name: "dst", File: sparseFile{dst}},
	}, Options{})
	out := filepath.Join(t.TempDir(), "out.raw")
	run(t, 2*time.Minute, nbdcopy, uri(sock, "src"), out)
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(srcPath)
	if !bytes.Equal(a, b) {
		t.Fatal("nbdcopy from the export differs from the file")
	}
	// Into a writable export over several connections.
	run(t, 2*time.Minute, nbdcopy, "--connections=4", "--requests=16", srcPath, uri(sock, "dst"))
	if !bytes.Equal(fileBytes(t, dst), b) {
		t.Fatal("nbdcopy into the export differs from the source")
	}
	// qemu-img compare sees the same.
	if qemuImg, err := exec.LookPath("qemu-img"); err == nil {
		run(t, time.Minute, qemuImg, "compare", "-f", "raw", "-F", "raw", srcPath, uri(sock, "dst"))
	}
}

func TestQemuIO(t *testing.T) {
	qemuIO := needTool(t, "qemu-io")
	f, _ := newFile(t, 8<<20, true)
	_, sock := startServer(t, []Export{{File: sparseFile{f}}}, Options{})
	u := uri(sock, "")
	run(t, time.Minute, qemuIO, "-f", "raw", "-c", "write -P 0xab 4096 65536", "-c", "write -f -P 0xcd 1048576 8192",
		"-c", "discard 2097152 65536", "-c", "write -z 3145728 131072", "-c", "flush", u)
	out := run(t, time.Minute, qemuIO, "-r", "-f", "raw", "-c", "read -P 0xab 4096 65536", "-c", "read -P 0xcd 1048576 8192",
		"-c", "read -P 0 3145728 131072", "-c", "read -P 0 2097152 65536", u)
	if strings.Contains(out, "Pattern verification failed") || strings.Contains(out, "failed") {
		t.Fatalf("qemu-io read: %s", out)
	}
	// A wrong pattern is reported, so the check above can fail.
	if _, err := runErr(time.Minute, qemuIO, "-r", "-f", "raw", "-c", "read -P 0x11 4096 512", u); err == nil {
		t.Fatal("qemu-io accepted a wrong pattern")
	}
	got := fileBytes(t, f)
	if !bytes.Equal(got[4096:4096+65536], bytes.Repeat([]byte{0xab}, 65536)) ||
		!bytes.Equal(got[3145728:3145728+131072], make([]byte, 131072)) {
		t.Fatal("file content differs from qemu-io's writes")
	}
}

func TestFioVerify(t *testing.T) {
	fio := needTool(t, "fio")
	f, _ := newFile(t, 32<<20, false)
	_, sock := startServer(t, []Export{{File: f, FastReads: true}}, Options{})
	out := run(t, 5*time.Minute, fio, "--name=nbdverify", "--ioengine=nbd", "--uri="+uri(sock, ""),
		"--rw=randwrite", "--bs=4k", "--iodepth=16", "--numjobs=4", "--size=4m", "--offset_increment=8m",
		"--verify=crc32c", "--verify_fatal=1", "--verify_state_save=0", "--group_reporting", "--output-format=terse")
	if strings.Contains(out, "verify:") || strings.Contains(out, "bad magic") {
		t.Fatalf("fio verify: %s", out)
	}
}

func TestNbdfuseExt4(t *testing.T) {
	nbdfuse := needTool(t, "nbdfuse")
	mkfs := needTool(t, "mkfs.ext4")
	if os.Getuid() != 0 {
		t.Skip("mounting needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	dir := t.TempDir()
	content := filepath.Join(dir, "content")
	os.MkdirAll(content, 0o755)
	os.WriteFile(filepath.Join(content, "hello.txt"), []byte("hello from nbd\n"), 0o644)
	f, img := newFile(t, 64<<20, false)
	run(t, time.Minute, mkfs, "-q", "-F", "-d", content, img)
	_, sock := startServer(t, []Export{{File: f}}, Options{})

	mnt := filepath.Join(dir, "fuse")
	os.MkdirAll(mnt, 0o755)
	fuse := exec.Command(nbdfuse, mnt, uri(sock, ""))
	if err := fuse.Start(); err != nil {
		t.Fatal(err)
	}
	fuseDone := make(chan error, 1)
	go func() { fuseDone <- fuse.Wait() }()
	defer func() {
		runErr(time.Minute, "fusermount3", "-u", mnt)
		select {
		case <-fuseDone:
		case <-time.After(10 * time.Second):
			fuse.Process.Kill()
			<-fuseDone
		}
	}()
	dev := filepath.Join(mnt, "nbd")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if st, err := os.Stat(dev); err == nil && st.Size() == 64<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("nbdfuse did not expose the device")
		}
		time.Sleep(50 * time.Millisecond)
	}
	fsdir := filepath.Join(dir, "fs")
	os.MkdirAll(fsdir, 0o755)
	loop := strings.TrimSpace(run(t, time.Minute, "losetup", "-f", "--show", dev))
	defer runErr(time.Minute, "losetup", "-d", loop)
	run(t, time.Minute, "mount", "-t", "ext4", loop, fsdir)
	mounted := true
	defer func() {
		if mounted {
			runErr(time.Minute, "umount", fsdir)
		}
	}()
	if b, err := os.ReadFile(filepath.Join(fsdir, "hello.txt")); err != nil || string(b) != "hello from nbd\n" {
		t.Fatalf("read through ext4: %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(fsdir, "new.txt"), bytes.Repeat([]byte("x"), 300000), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, time.Minute, "umount", fsdir)
	mounted = false
	run(t, time.Minute, "losetup", "-d", loop)
	if out, err := runErr(time.Minute, "e2fsck", "-fn", img); err != nil {
		t.Fatalf("e2fsck: %v\n%s", err, out)
	}
	out := run(t, time.Minute, "debugfs", "-R", "cat /new.txt", img)
	if !strings.Contains(out, strings.Repeat("x", 1000)) {
		t.Fatal("written file not in the image")
	}
}
