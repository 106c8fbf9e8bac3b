package tcmu

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/overlaybd-go/overlaybd/core"
)

// BlockSize is the logical block size of every device (overlaybd's sector).
const BlockSize = core.SectorSize

// SCSI operation codes handled or recognised.
const (
	opTestUnitReady  = 0x00
	opRead6          = 0x08
	opWrite6         = 0x0a
	opInquiry        = 0x12
	opModeSelect6    = 0x15
	opModeSense6     = 0x1a
	opReadCapacity10 = 0x25
	opRead10         = 0x28
	opWrite10        = 0x2a
	opSyncCache10    = 0x35
	opWriteSame10    = 0x41
	opUnmap          = 0x42
	opModeSelect10   = 0x55
	opModeSense10    = 0x5a
	opRead16         = 0x88
	opWrite16        = 0x8a
	opSyncCache16    = 0x91
	opWriteSame16    = 0x93
	opServiceActIn16 = 0x9e
	opMaintenanceIn  = 0xa3
	opMaintenanceOut = 0xa4
	opRead12         = 0xa8
	opWrite12        = 0xaa

	saReadCapacity16 = 0x10
)

// maxWriteSameChunk bounds the buffer used to expand a WRITE SAME.
const maxWriteSameChunk = 1 << 20

// Disk answers the SCSI commands of one device from a core.File. It is safe
// for concurrent use: every command is independent.
type Disk struct {
	// File is the image. Its size is rounded down to whole blocks.
	File core.File
	// ReadOnly sets the write-protect bit and refuses writes.
	ReadOnly bool
	// Config is the device's configuration string (dev_config), reported in
	// the vendor-specific designator of VPD page 0x83 as upstream does.
	Config string
	// Serial returns the unit serial number (configfs wwn/vpd_unit_serial).
	// nil means an empty serial.
	Serial func() (string, error)
	// ReadRetry is how long a failing read is retried (with backoff from
	// 20 ms to 30 s) before it is reported as a medium error. Corrupt data
	// (core.ErrCorrupt, core.ErrChecksum) is never retried.
	ReadRetry time.Duration
	// Logger receives warnings about failed commands; nil uses slog.Default.
	Logger *slog.Logger
}

func (d *Disk) log() *slog.Logger {
	if d.Logger != nil {
		return d.Logger
	}
	return slog.Default()
}

func (d *Disk) blocks() uint64 { return uint64(d.File.Size()) / BlockSize }

// Execute runs one command. cdb is nil for an opcode whose CDB length is
// undefined. iov are the data buffers (data-in for reads, data-out for
// writes). It returns the SAM status and, for CHECK CONDITION, 96 bytes of
// sense data.
func (d *Disk) Execute(ctx context.Context, cdb []byte, iov [][]byte) (status byte, sense []byte) {
	defer func() {
		// A bug in one command must not take down every device of the
		// process: report it as a target failure.
		if r := recover(); r != nil {
			d.log().Error("command handler panicked", "cdb", fmt.Sprintf("% x", cdb), "panic", r, "stack", string(debug.Stack()))
			status, sense = hardwareError.scsi()
		}
	}()
	return d.execute(ctx, cdb, iov).scsi()
}

func (d *Disk) execute(ctx context.Context, cdb []byte, iov [][]byte) outcome {
	if len(cdb) == 0 {
		return invalidOpcode
	}
	n := cdbLen(cdb[0], func() (byte, bool) {
		if len(cdb) > 7 {
			return cdb[7], true
		}
		return 0, false
	})
	if n < 0 {
		return invalidOpcode
	}
	if len(cdb) < n {
		return invalidCDB
	}
	cdb = cdb[:n]
	switch cdb[0] {
	case opTestUnitReady:
		return ok
	case opInquiry:
		return d.inquiry(cdb, iov)
	case opModeSense6, opModeSense10:
		return d.modeSense(cdb, iov)
	case opModeSelect6, opModeSelect10:
		return d.modeSelect(cdb, iov)
	case opServiceActIn16:
		if cdb[1]&0x1f == saReadCapacity16 {
			return d.readCapacity16(iov)
		}
		return invalidOpcode
	case opReadCapacity10:
		return d.readCapacity10(cdb, iov)
	case opRead6, opRead10, opRead12, opRead16:
		return d.read(ctx, cdb, iov)
	case opWrite6, opWrite10, opWrite12, opWrite16:
		return d.write(cdb, iov)
	case opSyncCache10, opSyncCache16:
		if err := d.File.Sync(); err != nil {
			d.log().Warn("synchronize cache failed", "err", err)
			return writeError
		}
		return ok
	case opWriteSame10, opWriteSame16:
		return d.writeSame(cdb, iov)
	case opUnmap:
		return d.unmap(cdb, iov)
	default:
		return invalidOpcode
	}
}

// lba decodes the logical block address of a READ/WRITE/WRITE SAME CDB.
func lba(cdb []byte) uint64 {
	switch len(cdb) {
	case 6:
		return uint64(cdb[1]&0x1f)<<16 | uint64(cdb[2])<<8 | uint64(cdb[3])
	case 10, 12:
		return uint64(binary.BigEndian.Uint32(cdb[2:]))
	default:
		return binary.BigEndian.Uint64(cdb[2:])
	}
}

// span checks that n bytes at block lba lie inside the device.
func (d *Disk) span(lba uint64, n uint64) (off int64, res outcome) {
	blocks := d.blocks()
	if lba > blocks || n > (blocks-lba)*BlockSize {
		return 0, lbaOutOfRange
	}
	return int64(lba * BlockSize), ok
}

func iovLen(iov [][]byte) int {
	n := 0
	for _, b := range iov {
		n += len(b)
	}
	return n
}

// fill copies data into the buffers, truncated to their total length.
func fill(iov [][]byte, data []byte) {
	for _, b := range iov {
		if len(data) == 0 {
			return
		}
		n := copy(b, data)
		data = data[n:]
	}
}

// gather returns the first n bytes of the buffers as one slice (the buffer
// itself when there is only one).
func gather(iov [][]byte, n int) []byte {
	if len(iov) == 1 && len(iov[0]) >= n {
		return iov[0][:n]
	}
	out := make([]byte, 0, n)
	for _, b := range iov {
		if len(out)+len(b) > n {
			b = b[:n-len(out)]
		}
		out = append(out, b...)
	}
	return out
}

func corrupt(err error) bool {
	return errors.Is(err, core.ErrCorrupt) || errors.Is(err, core.ErrChecksum)
}

func (d *Disk) read(ctx context.Context, cdb []byte, iov [][]byte) outcome {
	n := iovLen(iov)
	off, res := d.span(lba(cdb), uint64(n))
	if res != ok {
		return res
	}
	if n == 0 {
		return ok
	}
	buf := gather(iov, n) // aliases the data area when there is one buffer
	start := time.Now()
	delay := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		got, err := d.File.ReadAt(buf, off)
		if got == n && (err == nil || err == io.EOF) {
			break
		}
		if err == nil || err == io.EOF || corrupt(err) || errors.Is(err, core.ErrOutOfRange) ||
			errors.Is(err, core.ErrClosed) || time.Since(start)+delay > d.ReadRetry {
			d.log().Warn("read failed", "offset", off, "length", n, "got", got, "err", err)
			return readError
		}
		if attempt%10 == 1 {
			d.log().Warn("read failed, retrying", "offset", off, "length", n, "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return readError
		case <-time.After(delay):
		}
		delay = min(delay*2, 30*time.Second)
	}
	if len(iov) > 1 {
		fill(iov, buf)
	}
	return ok
}

func (d *Disk) write(cdb []byte, iov [][]byte) outcome {
	n := iovLen(iov)
	off, res := d.span(lba(cdb), uint64(n))
	if res != ok {
		return res
	}
	if d.ReadOnly {
		return writeProtected
	}
	if n == 0 {
		return ok
	}
	if _, err := d.File.WriteAt(gather(iov, n), off); err != nil {
		d.log().Warn("write failed", "offset", off, "length", n, "err", err)
		if errors.Is(err, core.ErrReadOnly) {
			return writeProtected
		}
		return writeError
	}
	return ok
}

// discard deallocates a range so that it reads back as zeros.
func (d *Disk) discard(off, n int64) error {
	if dc, isDiscarder := d.File.(core.Discarder); isDiscarder {
		return dc.Discard(off, n)
	}
	return d.zero(off, n)
}

// zero writes zeros to a range.
func (d *Disk) zero(off, n int64) error {
	if zw, isZW := d.File.(core.ZeroWriter); isZW {
		return zw.WriteZeroes(off, n)
	}
	return d.repeat(make([]byte, BlockSize), off, n)
}

// repeat writes the block pattern over [off, off+n).
func (d *Disk) repeat(block []byte, off, n int64) error {
	chunk := bytes.Repeat(block, int(min(n, maxWriteSameChunk)/BlockSize))
	for n > 0 {
		c := min(n, int64(len(chunk)))
		if _, err := d.File.WriteAt(chunk[:c], off); err != nil {
			return err
		}
		off, n = off+c, n-c
	}
	return nil
}

func (d *Disk) writeSame(cdb []byte, iov [][]byte) outcome {
	var blocks uint64
	if cdb[0] == opWriteSame10 {
		blocks = uint64(binary.BigEndian.Uint16(cdb[7:]))
	} else {
		blocks = uint64(binary.BigEndian.Uint32(cdb[10:]))
	}
	// WSNZ is set in the block limits page: zero blocks is not allowed.
	// ANCHOR (bit 4), PBDATA and LBDATA (bits 1-2) are not supported.
	if blocks == 0 || cdb[1]&0x16 != 0 {
		return invalidCDB
	}
	off, res := d.span(lba(cdb), blocks*BlockSize)
	if res != ok {
		return res
	}
	if d.ReadOnly {
		return writeProtected
	}
	n := int64(blocks * BlockSize)
	var err error
	if cdb[1]&0x08 != 0 { // UNMAP
		err = d.discard(off, n)
	} else {
		if iovLen(iov) < BlockSize {
			return invalidCDB
		}
		block := gather(iov, BlockSize)
		if allZero(block) {
			err = d.zero(off, n)
		} else {
			err = d.repeat(append([]byte(nil), block...), off, n)
		}
	}
	if err != nil {
		d.log().Warn("write same failed", "offset", off, "length", n, "unmap", cdb[1]&0x08 != 0, "err", err)
		if errors.Is(err, core.ErrReadOnly) {
			return writeProtected
		}
		return writeError
	}
	return ok
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// unmap implements UNMAP (SBC-3 5.28): a parameter list of 16-byte block
// descriptors, each discarded like WRITE SAME with the UNMAP bit.
func (d *Disk) unmap(cdb []byte, iov [][]byte) outcome {
	if cdb[1]&0x01 != 0 { // ANCHOR
		return invalidCDB
	}
	plen := int(binary.BigEndian.Uint16(cdb[7:]))
	if plen == 0 {
		return ok
	}
	if plen < 8 || iovLen(iov) < plen {
		return invalidParamListLen
	}
	p := gather(iov, plen)
	dataLen := int(binary.BigEndian.Uint16(p[0:]))
	descLen := int(binary.BigEndian.Uint16(p[2:]))
	if dataLen+2 > plen || descLen+8 > plen || descLen%16 != 0 {
		return invalidParamListLen
	}
	type ext struct{ off, n int64 }
	var exts []ext
	for i := 8; i < 8+descLen; i += 16 {
		l := binary.BigEndian.Uint64(p[i:])
		nb := uint64(binary.BigEndian.Uint32(p[i+8:]))
		off, res := d.span(l, nb*BlockSize)
		if res != ok {
			return res
		}
		if nb > 0 {
			exts = append(exts, ext{off, int64(nb * BlockSize)})
		}
	}
	if d.ReadOnly {
		return writeProtected
	}
	for _, e := range exts {
		if err := d.discard(e.off, e.n); err != nil {
			d.log().Warn("unmap failed", "offset", e.off, "length", e.n, "err", err)
			return writeError
		}
	}
	return ok
}

func (d *Disk) readCapacity16(iov [][]byte) outcome {
	b := make([]byte, 32)
	binary.BigEndian.PutUint64(b, d.blocks()-1)
	binary.BigEndian.PutUint32(b[8:], BlockSize)
	b[14] = 0xc0 // LBPME | LBPRZ
	fill(iov, b)
	return ok
}

func (d *Disk) readCapacity10(cdb []byte, iov [][]byte) outcome {
	if cdb[8]&0x01 != 0 || binary.BigEndian.Uint32(cdb[2:]) != 0 { // PMI, LBA: obsolete
		return invalidCDB
	}
	b := make([]byte, 8)
	last := d.blocks() - 1
	if last > 0xffffffff {
		last = 0xffffffff
	}
	binary.BigEndian.PutUint32(b, uint32(last))
	binary.BigEndian.PutUint32(b[4:], BlockSize)
	fill(iov, b)
	return ok
}
