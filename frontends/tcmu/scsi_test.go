package tcmu

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/overlaybd-go/overlaybd/core"
)

// memFile is an in-memory core.File; with discard set it is a Discarder.
type memFile struct {
	mu       sync.Mutex
	data     []byte
	ro       bool
	failRead error // returned by every read when set
	syncs    int
	discards [][2]int64
	writes   int
}

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failRead != nil {
		return 0, m.failRead
	}
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ro {
		return 0, fmt.Errorf("write: %w", core.ErrReadOnly)
	}
	if off+int64(len(p)) > int64(len(m.data)) {
		return 0, core.ErrOutOfRange
	}
	m.writes++
	return copy(m.data[off:], p), nil
}

func (m *memFile) Size() int64 { return int64(len(m.data)) }
func (m *memFile) Sync() error { m.syncs++; return nil }
func (m *memFile) Close() error {
	return nil
}

type discardFile struct{ *memFile }

func (d discardFile) Discard(off, n int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.discards = append(d.discards, [2]int64{off, n})
	clear(d.data[off : off+n])
	return nil
}

func newDisk(blocks int) (*Disk, *memFile) {
	m := &memFile{data: make([]byte, blocks*BlockSize)}
	for i := range m.data {
		m.data[i] = byte(i/BlockSize + 1)
	}
	return &Disk{File: discardFile{m}, Config: "overlaybd//a/config.v1.json;7",
		Serial: func() (string, error) { return "0123456789abcdef-xyz", nil }}, m
}

func exec(d *Disk, cdb []byte, iov ...[]byte) (byte, []byte) {
	return d.Execute(context.Background(), cdb, iov)
}

func wantSense(t *testing.T, what string, st byte, sense []byte, key, asc, ascq byte) {
	t.Helper()
	if st != StatusCheckCondition || len(sense) != SenseSize || sense[0] != 0x70 || sense[2] != key || sense[7] != 0x0a ||
		sense[12] != asc || sense[13] != ascq {
		t.Errorf("%s: status %#x sense % x, want CHECK CONDITION %x/%02x %02x", what, st, sense, key, asc, ascq)
	}
}

func wantGood(t *testing.T, what string, st byte, sense []byte) {
	t.Helper()
	if st != StatusGood || sense != nil {
		t.Errorf("%s: status %#x sense % x, want GOOD", what, st, sense)
	}
}

func rw10(op byte, lba uint32, blocks uint16) []byte {
	c := make([]byte, 10)
	c[0] = op
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint16(c[7:], blocks)
	return c
}

func rw16(op byte, lba uint64, blocks uint32) []byte {
	c := make([]byte, 16)
	c[0] = op
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], blocks)
	return c
}

func TestReadWriteEveryCDBSize(t *testing.T) {
	d, m := newDisk(64)
	for _, c := range []struct {
		name   string
		rd, wr []byte
	}{
		{"6", []byte{0x08, 0, 0, 3, 2, 0}, []byte{0x0a, 0, 0, 3, 2, 0}},
		{"10", rw10(0x28, 3, 2), rw10(0x2a, 3, 2)},
		{"12", []byte{0xa8, 0, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0}, []byte{0xaa, 0, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0}},
		{"16", rw16(0x88, 3, 2), rw16(0x8a, 3, 2)},
	} {
		// A read split over two iovecs lands in both.
		a, b := make([]byte, 700), make([]byte, 324)
		st, sn := exec(d, c.rd, a, b)
		wantGood(t, "READ("+c.name+")", st, sn)
		if !bytes.Equal(append(a, b...), m.data[3*512:5*512]) {
			t.Errorf("READ(%s) data differs", c.name)
		}
		w := bytes.Repeat([]byte(c.name), 1024)
		st, sn = exec(d, c.wr, w[:100], w[100:1024])
		wantGood(t, "WRITE("+c.name+")", st, sn)
		if !bytes.Equal(m.data[3*512:5*512], w[:1024]) {
			t.Errorf("WRITE(%s) data not in the file", c.name)
		}
	}
	// Zero-length transfers are fine.
	st, sn := exec(d, rw10(0x28, 0, 0))
	wantGood(t, "READ(10) of nothing", st, sn)
}

func TestOutOfRange(t *testing.T) {
	d, _ := newDisk(64)
	for _, c := range []struct {
		name string
		cdb  []byte
		n    int
	}{
		{"READ(10) last+1", rw10(0x28, 64, 1), 512},
		{"READ(10) crossing the end", rw10(0x28, 63, 2), 1024},
		{"WRITE(16) huge LBA", rw16(0x8a, 1<<62, 1), 512},
		{"READ(16) overflowing LBA", rw16(0x88, ^uint64(0), 1), 512},
		{"WRITE SAME(16) past the end", rw16(0x93, 60, 8), 512},
	} {
		st, sn := exec(d, c.cdb, make([]byte, c.n))
		wantSense(t, c.name, st, sn, 5, 0x21, 0)
	}
	st, sn := exec(d, rw10(0x28, 63, 1), make([]byte, 512))
	wantGood(t, "READ of the last block", st, sn)
}

func TestReadErrors(t *testing.T) {
	d, m := newDisk(8)
	m.failRead = fmt.Errorf("block 3: %w", core.ErrChecksum)
	buf := bytes.Repeat([]byte{0xee}, 512)
	st, sn := exec(d, rw10(0x28, 1, 1), buf)
	wantSense(t, "READ of a block failing its checksum", st, sn, 3, 0x11, 0)
	m.failRead = fmt.Errorf("index: %w", core.ErrCorrupt)
	st, sn = exec(d, rw10(0x28, 1, 1), buf)
	wantSense(t, "READ of corrupt data", st, sn, 3, 0x11, 0)
	// A transient error is retried within ReadRetry, then reported.
	m.failRead = errors.New("connection reset")
	d.ReadRetry = 0
	st, sn = exec(d, rw10(0x28, 1, 1), buf)
	wantSense(t, "READ failing without retry budget", st, sn, 3, 0x11, 0)
	// Cancellation ends the retries.
	d.ReadRetry = 1 << 40
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	st, sn = d.Execute(ctx, rw10(0x28, 1, 1), [][]byte{buf})
	wantSense(t, "READ on a closing device", st, sn, 3, 0x11, 0)
}

func TestWriteProtect(t *testing.T) {
	d, m := newDisk(8)
	d.ReadOnly = true
	m.ro = true
	st, sn := exec(d, rw10(0x2a, 1, 1), make([]byte, 512))
	wantSense(t, "WRITE to a read-only image", st, sn, 5, 0x30, 5)
	st, sn = exec(d, rw16(0x93, 1, 1), make([]byte, 512))
	wantSense(t, "WRITE SAME to a read-only image", st, sn, 5, 0x30, 5)
	// A file that refuses the write by itself.
	d.ReadOnly = false
	st, sn = exec(d, rw10(0x2a, 1, 1), make([]byte, 512))
	wantSense(t, "WRITE refused with ErrReadOnly", st, sn, 5, 0x30, 5)
	// The WP bit of MODE SENSE.
	d.ReadOnly = true
	buf := make([]byte, 8)
	exec(d, []byte{0x5a, 0, 0x3f, 0, 0, 0, 0, 0, 8, 0}, buf)
	if buf[3] != 0x80 {
		t.Errorf("MODE SENSE(10) of a read-only disk: % x", buf)
	}
	exec(d, []byte{0x1a, 0, 0x3f, 0, 4, 0}, buf[:4])
	if buf[2] != 0x80 {
		t.Errorf("MODE SENSE(6) of a read-only disk: % x", buf[:4])
	}
}

func TestWriteSameAndUnmap(t *testing.T) {
	d, m := newDisk(64)
	// WRITE SAME(16) with UNMAP discards.
	c := rw16(0x93, 8, 4)
	c[1] = 0x08
	st, sn := exec(d, c, make([]byte, 512))
	wantGood(t, "WRITE SAME(16) UNMAP", st, sn)
	// WRITE SAME(10) with UNMAP.
	c = rw10(0x41, 20, 2)
	c[1] = 0x08
	st, sn = exec(d, c, make([]byte, 512))
	wantGood(t, "WRITE SAME(10) UNMAP", st, sn)
	if len(m.discards) != 2 || m.discards[0] != [2]int64{8 * 512, 4 * 512} || m.discards[1] != [2]int64{20 * 512, 2 * 512} {
		t.Errorf("discards %v", m.discards)
	}
	// WRITE SAME without UNMAP writes the pattern.
	pat := bytes.Repeat([]byte{1, 2, 3, 4}, 128)
	st, sn = exec(d, rw16(0x93, 30, 3), pat)
	wantGood(t, "WRITE SAME(16)", st, sn)
	if !bytes.Equal(m.data[30*512:33*512], bytes.Repeat(pat, 3)) || m.data[33*512] != 34 {
		t.Error("WRITE SAME pattern")
	}
	// Bad fields: zero blocks (WSNZ), ANCHOR, LBDATA, no data block.
	st, sn = exec(d, rw16(0x93, 30, 0), pat)
	wantSense(t, "WRITE SAME of 0 blocks", st, sn, 5, 0x24, 0)
	c = rw16(0x93, 30, 1)
	c[1] = 0x10
	st, sn = exec(d, c, pat)
	wantSense(t, "WRITE SAME with ANCHOR", st, sn, 5, 0x24, 0)
	st, sn = exec(d, rw16(0x93, 30, 1))
	wantSense(t, "WRITE SAME without a data block", st, sn, 5, 0x24, 0)

	// UNMAP with two descriptors.
	p := make([]byte, 8+32)
	binary.BigEndian.PutUint16(p, 6+32)
	binary.BigEndian.PutUint16(p[2:], 32)
	binary.BigEndian.PutUint64(p[8:], 40)
	binary.BigEndian.PutUint32(p[16:], 2)
	binary.BigEndian.PutUint64(p[24:], 50)
	binary.BigEndian.PutUint32(p[32:], 0)
	m.discards = nil
	st, sn = exec(d, []byte{0x42, 0, 0, 0, 0, 0, 0, 0, 40, 0}, p)
	wantGood(t, "UNMAP", st, sn)
	if len(m.discards) != 1 || m.discards[0] != [2]int64{40 * 512, 2 * 512} {
		t.Errorf("UNMAP discards %v", m.discards)
	}
	st, sn = exec(d, []byte{0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	wantGood(t, "UNMAP of an empty list", st, sn)
	st, sn = exec(d, []byte{0x42, 0, 0, 0, 0, 0, 0, 0, 4, 0}, p[:4])
	wantSense(t, "UNMAP with a short list", st, sn, 5, 0x1a, 0)
	st, sn = exec(d, []byte{0x42, 0, 0, 0, 0, 0, 0, 0, 40, 0}, p[:20])
	wantSense(t, "UNMAP with less data than announced", st, sn, 5, 0x1a, 0)
	bad := append([]byte(nil), p...)
	binary.BigEndian.PutUint16(bad[2:], 64)
	st, sn = exec(d, []byte{0x42, 0, 0, 0, 0, 0, 0, 0, 40, 0}, bad)
	wantSense(t, "UNMAP with a descriptor length beyond the list", st, sn, 5, 0x1a, 0)
	binary.BigEndian.PutUint64(bad[8:], 63)
	binary.BigEndian.PutUint16(bad[2:], 32)
	st, sn = exec(d, []byte{0x42, 0, 0, 0, 0, 0, 0, 0, 40, 0}, bad)
	wantSense(t, "UNMAP past the end", st, sn, 5, 0x21, 0)
	st, sn = exec(d, []byte{0x42, 1, 0, 0, 0, 0, 0, 0, 40, 0}, p)
	wantSense(t, "UNMAP with ANCHOR", st, sn, 5, 0x24, 0)
}

func TestDiscardFallsBackToZeros(t *testing.T) {
	m := &memFile{data: bytes.Repeat([]byte{9}, 16*512)}
	d := &Disk{File: m}
	c := rw16(0x93, 2, 3)
	c[1] = 0x08
	st, sn := exec(d, c, make([]byte, 512))
	wantGood(t, "WRITE SAME UNMAP on a file without Discard", st, sn)
	if !allZero(m.data[2*512:5*512]) || m.data[5*512] != 9 || m.data[2*512-1] != 9 {
		t.Error("discard fallback did not zero exactly the range")
	}
}

func TestSyncCache(t *testing.T) {
	d, m := newDisk(8)
	st, sn := exec(d, rw10(0x35, 0, 0))
	wantGood(t, "SYNCHRONIZE CACHE(10)", st, sn)
	st, sn = exec(d, rw16(0x91, 0, 0))
	wantGood(t, "SYNCHRONIZE CACHE(16)", st, sn)
	if m.syncs != 2 {
		t.Errorf("%d syncs", m.syncs)
	}
}

func TestInquiry(t *testing.T) {
	d, _ := newDisk(8)
	buf := make([]byte, 96)
	st, sn := exec(d, []byte{0x12, 0, 0, 0, 96, 0}, buf)
	wantGood(t, "INQUIRY", st, sn)
	want := []byte{0, 0, 5, 2, 31, 8, 0, 2}
	want = append(want, "LIO-ORG TCMU device     0002"...)
	if !bytes.Equal(buf[:36], want) || !allZero(buf[36:]) {
		t.Errorf("standard INQUIRY: %q", buf[:36])
	}
	st, sn = exec(d, []byte{0x12, 0, 0x80, 0, 96, 0}, buf)
	wantSense(t, "standard INQUIRY with a page code", st, sn, 5, 0x24, 0)
	// Truncated to the allocation length (the iovec).
	short := make([]byte, 5)
	exec(d, []byte{0x12, 0, 0, 0, 5, 0}, short)
	if !bytes.Equal(short, want[:5]) {
		t.Errorf("truncated INQUIRY % x", short)
	}

	pages := map[byte][]byte{}
	for _, p := range []byte{0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2} {
		b := make([]byte, 600)
		st, sn := exec(d, []byte{0x12, 1, p, 2, 0x58, 0}, b)
		wantGood(t, fmt.Sprintf("VPD %#x", p), st, sn)
		if b[1] != p {
			t.Errorf("VPD %#x: page code %#x", p, b[1])
		}
		pages[p] = b
	}
	if !bytes.Equal(pages[0][:10], []byte{0, 0, 0, 6, 0, 0x80, 0x83, 0xb0, 0xb1, 0xb2}) {
		t.Errorf("VPD 0: % x", pages[0][:10])
	}
	if s := pages[0x80]; s[3] != 21 || string(s[4:24]) != "0123456789abcdef-xyz" || s[24] != 0 {
		t.Errorf("VPD 0x80: % x", s[:28])
	}
	id := pages[0x83]
	wantID := []byte{0, 0x83, 0, 0}
	wantID = append(wantID, 2, 1, 0, 29)
	wantID = append(wantID, "LIO-ORG 0123456789abcdef-xyz\x00"...)
	wantID = append(wantID, 1, 3, 0, 16, 0x60, 0x01, 0x40, 0x50, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0, 0, 0, 0)
	cfg := "overlaybd//a/config.v1.json;7"
	wantID = append(wantID, 2, 0, 0, byte(len(cfg)+1))
	wantID = append(wantID, cfg+"\x00"...)
	binary.BigEndian.PutUint16(wantID[2:], uint16(len(wantID)-4))
	if !bytes.Equal(id[:len(wantID)], wantID) || !allZero(id[len(wantID):]) {
		t.Errorf("VPD 0x83:\n got % x\nwant % x", id[:len(wantID)], wantID)
	}
	b0 := pages[0xb0]
	if binary.BigEndian.Uint16(b0[2:]) != 0x3c || b0[4] != 1 || b0[5] != 1 || binary.BigEndian.Uint32(b0[8:]) != 0 ||
		binary.BigEndian.Uint32(b0[20:]) != 0 || binary.BigEndian.Uint32(b0[24:]) != 4 || b0[32] != 0x80 ||
		binary.BigEndian.Uint64(b0[36:]) != 0xffffffff {
		t.Errorf("VPD 0xb0: % x", b0[:64])
	}
	if b1 := pages[0xb1]; binary.BigEndian.Uint16(b1[2:]) != 0x3c || b1[4] != 0 || b1[5] != 0 {
		t.Errorf("VPD 0xb1: % x", b1[:8])
	}
	if b2 := pages[0xb2]; binary.BigEndian.Uint16(b2[2:]) != 4 || b2[5] != 0xe4 {
		t.Errorf("VPD 0xb2: % x", b2[:8])
	}
	st, sn = exec(d, []byte{0x12, 1, 0x86, 0, 96, 0}, buf)
	wantSense(t, "unsupported VPD page", st, sn, 5, 0x24, 0)
	d.Serial = func() (string, error) { return "", errors.New("no configfs") }
	st, sn = exec(d, []byte{0x12, 1, 0x80, 0, 96, 0}, buf)
	wantSense(t, "VPD 0x80 without a serial", st, sn, 4, 0x44, 0)
}

func TestReadCapacity(t *testing.T) {
	d, _ := newDisk(1000)
	b := make([]byte, 32)
	st, sn := exec(d, []byte{0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}, b)
	wantGood(t, "READ CAPACITY(16)", st, sn)
	want := make([]byte, 32)
	binary.BigEndian.PutUint64(want, 999)
	binary.BigEndian.PutUint32(want[8:], 512)
	want[14] = 0xc0
	if !bytes.Equal(b, want) {
		t.Errorf("READ CAPACITY(16): % x", b)
	}
	st, sn = exec(d, []byte{0x9e, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}, b)
	wantSense(t, "SERVICE ACTION IN(16) other action", st, sn, 5, 0x20, 0)
	b = make([]byte, 8)
	st, sn = exec(d, []byte{0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0}, b)
	wantGood(t, "READ CAPACITY(10)", st, sn)
	if binary.BigEndian.Uint32(b) != 999 || binary.BigEndian.Uint32(b[4:]) != 512 {
		t.Errorf("READ CAPACITY(10): % x", b)
	}
	st, sn = exec(d, []byte{0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0}, b)
	wantSense(t, "READ CAPACITY(10) with an LBA", st, sn, 5, 0x24, 0)
}

func TestModeSenseSelect(t *testing.T) {
	d, _ := newDisk(8)
	all := make([]byte, 60)
	st, sn := exec(d, []byte{0x1a, 0, 0x3f, 0, 60, 0}, all)
	wantGood(t, "MODE SENSE(6) all pages", st, sn)
	if all[0] != 4+12+20+12-1 || all[2] != 0 || all[3] != 0 || all[4] != 0x01 || all[16] != 0x08 || all[17] != 0x12 ||
		!bytes.Equal(all[36:48], []byte{0x0a, 0x0a, 2, 0, 0, 0x40, 0, 0, 0xff, 0xff, 0, 0}) || !allZero(all[48:]) {
		t.Errorf("MODE SENSE(6): % x", all)
	}
	b := make([]byte, 28)
	st, sn = exec(d, []byte{0x5a, 0, 0x08, 0, 0, 0, 0, 0, 28, 0}, b)
	wantGood(t, "MODE SENSE(10) caching", st, sn)
	if binary.BigEndian.Uint16(b) != 26 || b[8] != 0x08 || b[10] != 0 {
		t.Errorf("MODE SENSE(10) caching: % x", b)
	}
	// The mode data length is the untruncated size.
	b = make([]byte, 6)
	exec(d, []byte{0x1a, 0, 0x3f, 0, 6, 0}, b)
	if b[0] != 47 {
		t.Errorf("truncated MODE SENSE(6) length %d", b[0])
	}
	st, sn = exec(d, []byte{0x1a, 0, 0x3f, 0, 0, 0}, b)
	wantGood(t, "MODE SENSE allocation 0", st, sn)
	st, sn = exec(d, []byte{0x1a, 0, 0x3f, 0, 3, 0}, b)
	wantSense(t, "MODE SENSE(6) allocation < header", st, sn, 5, 0x24, 0)
	st, sn = exec(d, []byte{0x5a, 0, 0x3f, 0, 0, 0, 0, 0, 7, 0}, b)
	wantSense(t, "MODE SENSE(10) allocation < header", st, sn, 5, 0x24, 0)
	st, sn = exec(d, []byte{0x1a, 0, 0x1c, 0, 60, 0}, all)
	wantSense(t, "MODE SENSE unknown page", st, sn, 5, 0x24, 0)
	st, sn = exec(d, []byte{0x1a, 0, 0x3f, 0xff, 60, 0}, all)
	wantSense(t, "MODE SENSE subpage", st, sn, 5, 0x24, 0)

	// MODE SELECT: the current page back is accepted, a change is not.
	ctl := append(make([]byte, 4), 0x0a, 0x0a, 2, 0, 0, 0x40, 0, 0, 0xff, 0xff, 0, 0)
	st, sn = exec(d, []byte{0x15, 0x10, 0, 0, byte(len(ctl)), 0}, ctl)
	wantGood(t, "MODE SELECT(6) unchanged control page", st, sn)
	ctl10 := append(make([]byte, 8), ctl[4:]...)
	st, sn = exec(d, []byte{0x55, 0x10, 0, 0, 0, 0, 0, 0, byte(len(ctl10)), 0}, ctl10)
	wantGood(t, "MODE SELECT(10) unchanged control page", st, sn)
	changed := bytes.Clone(ctl)
	changed[6] = 0
	st, sn = exec(d, []byte{0x15, 0x10, 0, 0, byte(len(changed)), 0}, changed)
	wantSense(t, "MODE SELECT changing a page", st, sn, 5, 0x26, 0)
	st, sn = exec(d, []byte{0x15, 0x00, 0, 0, byte(len(ctl)), 0}, ctl)
	wantSense(t, "MODE SELECT without PF", st, sn, 5, 0x24, 0)
	st, sn = exec(d, []byte{0x15, 0x11, 0, 0, byte(len(ctl)), 0}, ctl)
	wantSense(t, "MODE SELECT with SP", st, sn, 5, 0x24, 0)
	st, sn = exec(d, []byte{0x15, 0x10, 0, 0, 10, 0}, ctl[:10])
	wantSense(t, "MODE SELECT with a cut page", st, sn, 5, 0x1a, 0)
	st, sn = exec(d, []byte{0x55, 0x10, 0, 0, 0, 0, 0, 2, 0, 0}, make([]byte, 512))
	wantSense(t, "MODE SELECT(10) of 512 bytes", st, sn, 5, 0x1a, 0)
	unknown := append(make([]byte, 4), 0x1c, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	st, sn = exec(d, []byte{0x15, 0x10, 0, 0, byte(len(unknown)), 0}, unknown)
	wantSense(t, "MODE SELECT of an unknown page", st, sn, 5, 0x24, 0)
	st, sn = exec(d, []byte{0x15, 0x10, 0, 0, 0, 0})
	wantGood(t, "MODE SELECT of nothing", st, sn)
}

func TestUnhandledCommands(t *testing.T) {
	d, _ := newDisk(8)
	st, sn := exec(d, []byte{0, 0, 0, 0, 0, 0})
	wantGood(t, "TEST UNIT READY", st, sn)
	for _, c := range [][]byte{
		{0x1b, 0, 0, 0, 1, 0},                      // START STOP UNIT
		{0x2f, 0, 0, 0, 0, 0, 0, 0, 1, 0},          // VERIFY(10)
		{0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, // REPORT SUPPORTED OPCODES
		{0xa4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		{0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0}, // COMPARE AND WRITE
		{0x60},                // group 3: undefined length
		{0xc0, 1, 2, 3, 4, 5}, // vendor specific
		{},
	} {
		st, sn := exec(d, c)
		wantSense(t, fmt.Sprintf("CDB % x", c), st, sn, 5, 0x20, 0)
	}
	// A CDB shorter than its opcode's group says.
	st, sn = exec(d, []byte{0x28, 0, 0})
	wantSense(t, "short READ(10)", st, sn, 5, 0x24, 0)
	// A longer slice is cut to the group length, not misread as READ(16).
	st, sn = exec(d, append(rw10(0x28, 1, 1), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), make([]byte, 512))
	wantGood(t, "READ(10) in a 16-byte buffer", st, sn)
}

func TestOutcomeMapping(t *testing.T) {
	for o, want := range map[outcome][2]byte{ok: {0, 0}, noResource: {0x28, 0}, busy: {0x08, 0}} {
		st, sn := o.scsi()
		if st != want[0] || sn != nil {
			t.Errorf("%v: %#x % x", o, st, sn)
		}
	}
	for o, want := range map[outcome][3]byte{readError: {3, 0x11, 0}, writeError: {3, 0x0c, 0}, writeProtected: {5, 0x30, 5},
		invalidOpcode: {5, 0x20, 0}, invalidCDB: {5, 0x24, 0}, invalidParamList: {5, 0x26, 0},
		invalidParamListLen: {5, 0x1a, 0}, hardwareError: {4, 0x44, 0}, lbaOutOfRange: {5, 0x21, 0}} {
		st, sn := o.scsi()
		wantSense(t, o.String(), st, sn, want[0], want[1], want[2])
	}
}

// FuzzExecute runs arbitrary CDBs and data against a small disk: no panic
// (Execute would turn one into HARDWARE ERROR, which the fuzzer rejects),
// a valid status, sense exactly for CHECK CONDITION, and nothing written
// outside the disk.
func FuzzExecute(f *testing.F) {
	for _, c := range [][]byte{
		{0x00, 0, 0, 0, 0, 0}, {0x12, 0, 0, 0, 96, 0}, {0x12, 1, 0x83, 0, 255, 0}, {0x12, 1, 0xb0, 0, 64, 0},
		{0x1a, 0, 0x3f, 0, 255, 0}, {0x5a, 0, 0x08, 0, 0, 0, 0, 0, 28, 0}, {0x15, 0x10, 0, 0, 16, 0},
		{0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}, {0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		{0x08, 0, 0, 1, 1, 0}, rw10(0x28, 2, 1), rw10(0x2a, 2, 1), rw16(0x88, 3, 1), rw16(0x8a, 3, 1),
		{0xa8, 0, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0}, rw10(0x35, 0, 0), rw16(0x93, 1, 2), rw10(0x41, 1, 2),
		{0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0}, {0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {0x7f, 0, 0, 0, 0, 0, 0, 8},
	} {
		f.Add(c, uint16(512), []byte{0, 22, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2})
	}
	f.Fuzz(func(t *testing.T, cdb []byte, n uint16, payload []byte) {
		d, m := newDisk(16)
		buf := make([]byte, int(n)%4096)
		copy(buf, payload)
		st, sn := exec(d, cdb, buf)
		switch st {
		case StatusGood, StatusBusy, StatusTaskSetFull:
			if sn != nil {
				t.Fatalf("status %#x with sense", st)
			}
		case StatusCheckCondition:
			if len(sn) != SenseSize || sn[0] != 0x70 {
				t.Fatalf("bad sense % x", sn)
			}
			if sn[2] == 4 {
				t.Fatalf("CDB % x: HARDWARE ERROR (a handler panicked?)", cdb)
			}
		default:
			t.Fatalf("status %#x", st)
		}
		if len(m.data) != 16*512 {
			t.Fatal("disk size changed")
		}
	})
}
