package nbd

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// FuzzOptionParsers feeds arbitrary option data to the INFO/GO and
// META_CONTEXT parsers: they must not panic, and what they accept must
// re-encode to the same bytes.
func FuzzOptionParsers(f *testing.F) {
	f.Add(infoData("", infoBlockSize))
	f.Add(infoData("disk", infoName, infoDescription, infoBlockSize))
	f.Add(metaData("", metaContextAllocation))
	f.Add(metaData("x", "base:", "qemu:dirty-bitmap:a"))
	f.Add([]byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		if r, err := parseInfoRequest(data); err == nil {
			if !bytes.Equal(infoData(r.name, r.infos...), data) {
				t.Fatalf("info request %x re-encodes differently", data)
			}
		}
		if r, err := parseMetaRequest(data); err == nil {
			if !bytes.Equal(metaData(r.name, r.queries...), data) {
				t.Fatalf("meta request %x re-encodes differently", data)
			}
		}
	})
}

// FuzzRequest checks the request parser and validator: any header parses
// or is refused, and a validated request lies inside the export.
func FuzzRequest(f *testing.F) {
	hdr := func(flags, typ uint16, off uint64, length uint32) []byte {
		b := binary.BigEndian.AppendUint32(nil, magicRequest)
		b = binary.BigEndian.AppendUint16(b, flags)
		b = binary.BigEndian.AppendUint16(b, typ)
		b = binary.BigEndian.AppendUint64(b, 1)
		b = binary.BigEndian.AppendUint64(b, off)
		return binary.BigEndian.AppendUint32(b, length)
	}
	f.Add(hdr(0, cmdRead, 0, 512), true, false)
	f.Add(hdr(cmdFlagFUA, cmdWrite, 1<<20-512, 512), false, true)
	f.Add(hdr(0, cmdBlockStatus, ^uint64(0), 1), true, false)
	f.Add(hdr(cmdFlagNoHole|cmdFlagFUA, cmdWriteZeroes, 0, 1<<20), false, false)
	f.Fuzz(func(t *testing.T, b []byte, structured, readOnly bool) {
		r, err := parseRequest(b)
		if err != nil {
			return
		}
		x := &export{Export: Export{ReadOnly: readOnly, Alignment: 512}, size: 1 << 20}
		c := &conn{s: &Server{opts: Options{MaxRequest: 1 << 20}}, x: x, structured: structured, meta: structured}
		errno, _ := c.check(r)
		if errno != 0 {
			return
		}
		if r.typ != cmdFlush && r.offset+uint64(r.length) > x.size {
			t.Fatalf("accepted %+v beyond the end", r)
		}
		if readOnly && (r.typ == cmdWrite || r.typ == cmdTrim || r.typ == cmdWriteZeroes) {
			t.Fatalf("accepted write %+v on a read-only export", r)
		}
	})
}

// FuzzSession runs a whole client byte stream through a server over an
// in-memory pipe: whatever the bytes, the server must neither panic nor
// hang, and the export keeps its size.
func FuzzSession(f *testing.F) {
	var seed []byte
	seed = binary.BigEndian.AppendUint32(seed, flagCFixedNewstyle|flagCNoZeroes)
	opt := func(o uint32, data []byte) {
		seed = binary.BigEndian.AppendUint64(seed, magicIHaveOpt)
		seed = binary.BigEndian.AppendUint32(seed, o)
		seed = binary.BigEndian.AppendUint32(seed, uint32(len(data)))
		seed = append(seed, data...)
	}
	opt(optStructured, nil)
	opt(optSetMetaCtx, metaData("", metaContextAllocation))
	opt(optGo, infoData("", infoBlockSize))
	req := func(flags, typ uint16, off uint64, length uint32, payload []byte) {
		seed = binary.BigEndian.AppendUint32(seed, magicRequest)
		seed = binary.BigEndian.AppendUint16(seed, flags)
		seed = binary.BigEndian.AppendUint16(seed, typ)
		seed = binary.BigEndian.AppendUint64(seed, 1)
		seed = binary.BigEndian.AppendUint64(seed, off)
		seed = binary.BigEndian.AppendUint32(seed, length)
		seed = append(seed, payload...)
	}
	req(0, cmdWrite, 512, 512, make([]byte, 512))
	req(0, cmdRead, 0, 4096, nil)
	req(0, cmdBlockStatus, 0, 65536, nil)
	req(0, cmdTrim, 0, 4096, nil)
	req(0, cmdWriteZeroes, 4096, 4096, nil)
	req(0, cmdFlush, 0, 0, nil)
	req(0, cmdDisc, 0, 0, nil)
	f.Add(seed)
	f.Add(seed[:40])
	var list []byte
	list = binary.BigEndian.AppendUint32(list, flagCFixedNewstyle)
	list = binary.BigEndian.AppendUint64(list, magicIHaveOpt)
	list = binary.BigEndian.AppendUint32(list, optList)
	list = binary.BigEndian.AppendUint32(list, 0)
	f.Add(list)

	file, _ := newFile(f, 1<<20, true)
	s, err := NewServer([]Export{{File: sparseFile{file}}, {Name: "ro", File: file, ReadOnly: true}},
		Options{MaxRequest: 1 << 20, MaxInFlight: 4, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() { s.ServeConn(server); close(done) }()
		go io.Copy(io.Discard, client)
		client.SetWriteDeadline(time.Now().Add(5 * time.Second))
		client.Write(stream)
		client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("server did not finish the connection")
		}
		if file.Size() != 1<<20 {
			t.Fatalf("export size changed to %d", file.Size())
		}
	})
}
