package nbdclient

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"github.com/overlaybd-go/overlaybd/frontends/nbd"
)

// serverHello is what a fixed-newstyle server sends first, followed by an
// NBD_REP_INFO (export, 1 MiB) and an NBD_REP_ACK to NBD_OPT_GO.
func serverHello() []byte {
	b := binary.BigEndian.AppendUint64(nil, magicNBD)
	b = binary.BigEndian.AppendUint64(b, magicOpt)
	b = binary.BigEndian.AppendUint16(b, flagFixed|flagNoZeroes)
	rep := func(typ uint32, data []byte) {
		b = binary.BigEndian.AppendUint64(b, magicOptReply)
		b = binary.BigEndian.AppendUint32(b, optGo)
		b = binary.BigEndian.AppendUint32(b, typ)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		b = append(b, data...)
	}
	info := binary.BigEndian.AppendUint16(nil, infoExport)
	info = binary.BigEndian.AppendUint64(info, 1<<20)
	info = binary.BigEndian.AppendUint16(info, 1)
	rep(repInfo, info)
	rep(repAck, nil)
	return b
}

// FuzzHandshake feeds arbitrary server bytes to the negotiation: it must
// fail cleanly or produce a client, never panic or hang.
func FuzzHandshake(f *testing.F) {
	f.Add(serverHello())
	f.Add(serverHello()[:18])
	f.Add([]byte("NBDMAGIC"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cli, srv := net.Pipe()
		go func() {
			io.Copy(io.Discard, srv)
		}()
		go func() {
			srv.Write(data)
			srv.Close()
		}()
		cli.SetDeadline(time.Now().Add(5 * time.Second))
		c, err := newClient(cli, "")
		if err == nil && c.Size() < 0 {
			t.Errorf("negative size %d", c.Size())
		}
		cli.Close()
	})
}

// The client reads, writes, trims, zeroes and flushes through frontends/nbd.
func TestAgainstServer(t *testing.T) {
	dir := t.TempDir()
	f, err := psync.New(core.EngineConfig{}).Open(filepath.Join(dir, "disk"), core.OpenOptions{Flag: 0o102, Perm: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.(interface{ Truncate(int64) error }).Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	srv, err := nbd.NewServer([]nbd.Export{{File: f}}, nbd.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	defer func() { srv.Close(); <-done }()
	c, err := Dial(context.Background(), "unix", sock, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Size() != 1<<20 {
		t.Fatalf("size %d", c.Size())
	}
	data := bytes.Repeat([]byte{0x5a}, 8192)
	if _, err := c.WriteAt(data, 4096); err != nil {
		t.Fatal(err)
	}
	// TRIM is advisory in NBD: the content of a trimmed range of a file
	// without core.Discarder is not checked.
	if err := c.Discard(12288, 4096); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteZeroes(8192+512, 512); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 8192)
	if _, err := c.ReadAt(got, 4096); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(data)
	clear(want[4096+512 : 4096+1024])
	if !bytes.Equal(got, want) {
		t.Errorf("read back differs: first bytes %x, at 4096+512: %x, at 4096+1024: %x", got[:4], got[4096+512:4096+516], got[4096+1024:4096+1028])
	}
	// Reads across the end return what exists and io.EOF.
	if n, err := c.ReadAt(make([]byte, 1024), 1<<20-512); n != 512 || err != io.EOF {
		t.Errorf("read across the end: %d, %v", n, err)
	}
	// Errors of the server are errors of the client.
	if _, err := c.WriteAt(data, 1<<20); !errors.Is(err, ErrNBD) {
		t.Errorf("write past the end: %v", err)
	}
}
