package nbd

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/core"
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

	file := &memFile{b: make([]byte, 1<<20)}
	s, err := NewServer([]Export{{File: file}, {Name: "ro", File: file, ReadOnly: true}, {Name: "aligned", File: file, Alignment: 512}},
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
		if len(file.b) != 1<<20 {
			t.Fatalf("export size changed to %d", len(file.b))
		}
	})
}

// memFile is an in-memory core.File with every optional capability, so that
// fuzzing spends its time in the protocol code rather than in fsync.
type memFile struct {
	mu sync.RWMutex
	b  []byte
	// zero marks 4 KiB blocks discarded or zeroed, for BlockStatus.
	zero map[int64]bool
}

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if off < 0 || off > int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, core.ErrOutOfRange
	}
	return copy(m.b[off:], p), nil
}

func (m *memFile) Discard(off, n int64) error { return m.WriteZeroes(off, n) }

func (m *memFile) WriteZeroes(off, n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+n > int64(len(m.b)) {
		return core.ErrOutOfRange
	}
	clear(m.b[off : off+n])
	if m.zero == nil {
		m.zero = map[int64]bool{}
	}
	for blk := (off + 4095) / 4096; (blk+1)*4096 <= off+n; blk++ {
		m.zero[blk] = true
	}
	return nil
}

func (m *memFile) BlockStatus(off, n int64) ([]core.Extent, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []core.Extent
	for pos := off; pos < off+n; {
		end := min((pos/4096+1)*4096, off+n)
		fl := core.ExtentFlags(0)
		if m.zero[pos/4096] {
			fl = core.ExtentHole | core.ExtentZero
		}
		out = append(out, core.Extent{Offset: pos, Length: end - pos, Flags: fl})
		pos = end
	}
	return out, nil
}

func (m *memFile) Size() int64  { return int64(len(m.b)) }
func (m *memFile) Sync() error  { return nil }
func (m *memFile) Close() error { return nil }
