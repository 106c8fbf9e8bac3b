package tcmu

import "encoding/binary"

// Identification strings of the standard INQUIRY data (as upstream).
const (
	vendorID   = "LIO-ORG "
	productID  = "TCMU device     "
	productRev = "0002"
)

func (d *Disk) serial() (string, error) {
	if d.Serial == nil {
		return "", nil
	}
	return d.Serial()
}

func (d *Disk) inquiry(cdb []byte, iov [][]byte) outcome {
	if cdb[1]&0x01 == 0 { // standard data
		if cdb[2] != 0 {
			return invalidCDB
		}
		b := make([]byte, 36)
		b[2] = 0x05 // SPC-3
		b[3] = 0x02 // response data format 2
		b[4] = 31   // additional length
		b[5] = 0x08 // 3PC
		b[7] = 0x02 // CmdQue
		copy(b[8:], vendorID)
		copy(b[16:], productID)
		copy(b[32:], productRev)
		fill(iov, b)
		return ok
	}
	switch cdb[2] {
	case 0x00: // supported pages
		b := make([]byte, 16)
		b[3] = 6
		copy(b[4:], []byte{0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2})
		fill(iov, b)
	case 0x80: // unit serial number
		s, err := d.serial()
		if err != nil {
			d.log().Warn("unit serial unavailable", "err", err)
			return hardwareError
		}
		b := make([]byte, 512)
		b[1] = 0x80
		s = truncate(s, 512-5)
		b[3] = byte(len(s) + 1)
		copy(b[4:], s)
		fill(iov, b)
	case 0x83: // device identification
		s, err := d.serial()
		if err != nil {
			d.log().Warn("unit serial unavailable", "err", err)
			return hardwareError
		}
		fill(iov, deviceIdentification(s, d.Config))
	case 0xb0: // block limits
		b := make([]byte, 64)
		b[1] = 0xb0
		binary.BigEndian.PutUint16(b[2:], 0x3c)
		b[4] = 0x01 // WSNZ
		b[5] = 0x01 // maximum COMPARE AND WRITE length
		// Maximum and optimal transfer length: 0 (not reported). Maximum
		// unmap LBA count 0 as upstream, so Linux discards with WRITE SAME(16).
		binary.BigEndian.PutUint32(b[24:], 4) // maximum unmap descriptor count
		b[32] = 0x80                          // UGAVALID, alignment 0
		binary.BigEndian.PutUint64(b[36:], 0xffffffff)
		fill(iov, b)
	case 0xb1: // block device characteristics
		b := make([]byte, 64)
		b[1] = 0xb1
		binary.BigEndian.PutUint16(b[2:], 0x3c)
		fill(iov, b)
	case 0xb2: // logical block provisioning
		b := make([]byte, 64)
		b[1] = 0xb2
		binary.BigEndian.PutUint16(b[2:], 0x04)
		b[5] = 0xe4 // LBPU | LBPWS | LBPWS10 | LBPRZ
		fill(iov, b)
	default:
		return invalidCDB
	}
	return ok
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func hexNibble(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// deviceIdentification builds VPD page 0x83: a T10 vendor designator, an
// NAA designator derived from the serial, and the configuration string as
// a vendor-specific designator.
func deviceIdentification(serial, config string) []byte {
	serial = truncate(serial, 255-len(vendorID)-1)
	config = truncate(config, 254)
	b := make([]byte, 4, 4+4+len(vendorID)+len(serial)+1+4+16+4+len(config)+1)
	b[1] = 0x83
	// T10 vendor ID: code set ASCII, type 1.
	b = append(b, 0x02, 0x01, 0x00, byte(len(vendorID)+len(serial)+1))
	b = append(b, vendorID...)
	b = append(b, serial...)
	b = append(b, 0)
	// NAA IEEE Registered Extended: code set binary, type 3.
	naa := make([]byte, 16)
	copy(naa, []byte{0x60, 0x01, 0x40, 0x50})
	pos, high := 3, false // the first digit goes into the low nibble of byte 3
	for i := 0; i < len(serial) && pos < len(naa); i++ {
		v, isHex := hexNibble(serial[i])
		if !isHex {
			continue
		}
		if high {
			naa[pos] = v << 4
		} else {
			naa[pos] |= v
			pos++
		}
		high = !high
	}
	b = append(b, 0x01, 0x03, 0x00, 16)
	b = append(b, naa...)
	// Vendor specific: the configuration string.
	b = append(b, 0x02, 0x00, 0x00, byte(len(config)+1))
	b = append(b, config...)
	b = append(b, 0)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)-4))
	return b
}

// modePage is one emulated mode page: its bytes as MODE SENSE returns them.
type modePage struct {
	code byte
	data []byte
}

var modePages = []modePage{
	{0x01, append([]byte{0x01, 0x0a}, make([]byte, 10)...)},                                // read-write error recovery
	{0x08, append([]byte{0x08, 0x12}, make([]byte, 18)...)},                                // caching, WCE off
	{0x0a, []byte{0x0a, 0x0a, 0x02, 0x00, 0x00, 0x40, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00}}, // control
}

func selectPages(code, subpage byte) []modePage {
	if subpage != 0 {
		return nil
	}
	if code == 0x3f {
		return modePages
	}
	for _, p := range modePages {
		if p.code == code {
			return []modePage{p}
		}
	}
	return nil
}

func (d *Disk) modeSense(cdb []byte, iov [][]byte) outcome {
	six := cdb[0] == opModeSense6
	hdr, alloc := 4, int(cdb[4])
	if !six {
		hdr, alloc = 8, int(binary.BigEndian.Uint16(cdb[7:]))
	}
	if alloc == 0 {
		return ok
	}
	if alloc < hdr {
		return invalidCDB
	}
	pages := selectPages(cdb[2]&0x3f, cdb[3])
	if pages == nil {
		return invalidCDB
	}
	b := make([]byte, hdr)
	for _, p := range pages {
		b = append(b, p.data...)
	}
	var wp byte
	if d.ReadOnly {
		wp = 0x80
	}
	if six {
		if len(b) >= 255 {
			return invalidCDB
		}
		b[0] = byte(len(b) - 1)
		b[2] = wp
	} else {
		binary.BigEndian.PutUint16(b, uint16(len(b)-2))
		b[3] = wp
	}
	out := make([]byte, alloc)
	copy(out, b)
	fill(iov, out)
	return ok
}

func (d *Disk) modeSelect(cdb []byte, iov [][]byte) outcome {
	six := cdb[0] == opModeSelect6
	hdr, plen := 4, int(cdb[4])
	if !six {
		hdr, plen = 8, int(binary.BigEndian.Uint16(cdb[7:]))
	}
	if plen == 0 {
		return ok
	}
	if plen >= 512 {
		return invalidParamListLen
	}
	if cdb[1]&0x11 != 0x10 { // PF must be 1, SP 0
		return invalidCDB
	}
	if plen < hdr+2 || iovLen(iov) < plen {
		return invalidParamListLen
	}
	p := gather(iov, plen)
	var sub byte
	if p[hdr]&0x40 != 0 { // SPF: sub-page format
		sub = p[hdr+1]
	}
	pages := selectPages(p[hdr]&0x3f, sub)
	if len(pages) != 1 {
		return invalidCDB
	}
	want := pages[0].data
	if plen < hdr+len(want) {
		return invalidParamListLen
	}
	if string(p[hdr:hdr+len(want)]) != string(want) {
		return invalidParamList
	}
	return ok
}
