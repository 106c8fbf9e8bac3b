package envelope

import (
	"bytes"
	"fmt"
	"io"
	"os/user"
	"strconv"

	"github.com/overlaybd-go/overlaybd/core"
)

const (
	tarBlock = 512
	// maxExtended bounds the PAX or GNU long-name data read while probing.
	maxExtended = 1 << 20
)

// tarChecksumOK verifies a tar header's checksum as upstream does: the sum
// of the bytes with the checksum field counted as spaces, unsigned or
// signed.
func tarChecksumOK(h []byte) bool {
	stored, ok := parseNumeric(h[148:156])
	if !ok {
		return false
	}
	var u, s int64
	for i, b := range h[:tarBlock] {
		if i >= 148 && i < 156 {
			b = ' '
		}
		u += int64(b)
		s += int64(int8(b))
	}
	return stored == u || stored == s
}

// parseNumeric decodes a tar numeric field: octal digits surrounded by
// spaces or NULs, or GNU base-256.
func parseNumeric(b []byte) (int64, bool) {
	if len(b) > 0 && b[0]&0x80 != 0 {
		if b[0]&0x40 != 0 {
			return 0, false // negative
		}
		var v uint64
		for i, c := range b {
			if i == 0 {
				c &= 0x3f
			}
			if v>>55 != 0 {
				return 0, false
			}
			v = v<<8 | uint64(c)
		}
		return int64(v), true
	}
	s := bytes.Trim(b, " \x00")
	if len(s) == 0 {
		return 0, true
	}
	v, err := strconv.ParseInt(string(s), 8, 64)
	if err != nil || v < 0 {
		return 0, false
	}
	return v, true
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// isTarHeader applies upstream's probe: "ustar" at 257, "00" at 263 and a
// valid checksum.
func isTarHeader(h []byte) bool {
	return bytes.Equal(h[257:262], []byte("ustar")) && bytes.Equal(h[263:265], []byte("00")) && tarChecksumOK(h)
}

// probeTar returns the envelope of f, or nil when f is not a tar.
func probeTar(f core.File) (*TarInfo, error) {
	size := f.Size()
	if size < tarBlock {
		return nil, nil
	}
	h := make([]byte, tarBlock)
	if _, err := f.ReadAt(h, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("envelope: read tar header: %w", err)
	}
	if !isTarHeader(h) {
		return nil, nil
	}
	ti := &TarInfo{PayloadSize: -1}
	off := int64(0)
	var longName string
	for range 8 {
		if !isTarHeader(h) {
			return nil, fmt.Errorf("envelope: tar header at %d: bad magic or checksum: %w", off, core.ErrCorrupt)
		}
		hsize, ok := parseNumeric(h[124:136])
		if !ok {
			return nil, fmt.Errorf("envelope: tar header at %d: bad size field: %w", off, core.ErrCorrupt)
		}
		typ := h[156]
		switch typ {
		case 'x', 'g', 'L', 'K':
			if hsize > maxExtended || off+tarBlock+hsize > size {
				return nil, fmt.Errorf("envelope: tar extended header at %d: %d bytes: %w", off, hsize, core.ErrCorrupt)
			}
			data := make([]byte, hsize)
			if _, err := f.ReadAt(data, off+tarBlock); err != nil && err != io.EOF {
				return nil, fmt.Errorf("envelope: read tar extended header: %w", err)
			}
			switch typ {
			case 'x':
				ti.PAX = true
				recs, err := parsePAX(data)
				if err != nil {
					return nil, fmt.Errorf("envelope: tar PAX header at %d: %w", off, err)
				}
				if v, ok := recs["size"]; ok {
					n, err := strconv.ParseInt(v, 10, 64)
					if err != nil || n < 0 {
						return nil, fmt.Errorf("envelope: tar PAX size %q: %w", v, core.ErrCorrupt)
					}
					if n > 0 {
						ti.PayloadSize = n
					}
				}
				if v, ok := recs["path"]; ok {
					longName = v
				}
			case 'L':
				longName = cstring(data)
			}
			off += tarBlock + (hsize+tarBlock-1)/tarBlock*tarBlock
			if off+tarBlock > size {
				return nil, fmt.Errorf("envelope: tar ends after an extended header: %w", core.ErrCorrupt)
			}
			if _, err := f.ReadAt(h, off); err != nil && err != io.EOF {
				return nil, fmt.Errorf("envelope: read tar header: %w", err)
			}
			continue
		}
		ti.Name = cstring(h[0:100])
		if longName != "" {
			ti.Name = longName
		}
		if ti.PayloadSize < 0 {
			ti.PayloadSize = hsize
		}
		ti.PayloadOffset = off + tarBlock
		if ti.PayloadSize > size-ti.PayloadOffset {
			return nil, fmt.Errorf("envelope: tar member of %d bytes at %d exceeds the %d-byte file: %w",
				ti.PayloadSize, ti.PayloadOffset, size, core.ErrCorrupt)
		}
		return ti, nil
	}
	return nil, fmt.Errorf("envelope: too many tar extended headers: %w", core.ErrCorrupt)
}

// parsePAX decodes "<len> key=value\n" records.
func parsePAX(b []byte) (map[string]string, error) {
	out := map[string]string{}
	for len(b) > 0 {
		sp := bytes.IndexByte(b, ' ')
		if sp <= 0 {
			return nil, fmt.Errorf("record without length: %w", core.ErrCorrupt)
		}
		n, err := strconv.Atoi(string(b[:sp]))
		if err != nil || n <= sp+1 || n > len(b) || b[n-1] != '\n' {
			return nil, fmt.Errorf("bad record length %q: %w", b[:sp], core.ErrCorrupt)
		}
		rec := b[sp+1 : n-1]
		eq := bytes.IndexByte(rec, '=')
		if eq < 0 {
			return nil, fmt.Errorf("record without '=': %w", core.ErrCorrupt)
		}
		out[string(rec[:eq])] = string(rec[eq+1:])
		b = b[n:]
	}
	return out, nil
}

// PayloadOffset is where the payload of an envelope written by TarWriter
// starts (PAX header, PAX data, ustar header).
const PayloadOffset = 3 * tarBlock

// TarWriter writes overlaybd's tar envelope around a payload written
// through it: a PAX header carrying the payload size, a ustar header named
// overlaybd.commit with size 0, the payload, padding and two zero blocks.
// The headers are written at Close, when the size is known, so the
// destination must be random-access. The layout matches upstream's byte for
// byte.
type TarWriter struct {
	w    io.WriterAt
	mode uint32 // st_mode of the output file
	n    int64  // payload bytes written
	done bool
}

// NewTarWriter reserves the header blocks of w and returns a writer of the
// payload. mode is the st_mode recorded in the ustar header (upstream
// records the output file's, e.g. 0100644).
func NewTarWriter(w io.WriterAt, mode uint32) (*TarWriter, error) {
	if _, err := w.WriteAt(make([]byte, PayloadOffset), 0); err != nil {
		return nil, fmt.Errorf("envelope: reserve tar headers: %w", err)
	}
	return &TarWriter{w: w, mode: mode}, nil
}

// Write appends p to the payload.
func (t *TarWriter) Write(p []byte) (int, error) {
	if t.done {
		return 0, fmt.Errorf("envelope: tar write: %w", core.ErrClosed)
	}
	n, err := t.w.WriteAt(p, PayloadOffset+t.n)
	t.n += int64(n)
	return n, err
}

// WriteAt writes p at offset off of the payload (used to rewrite a ZFile
// header inside the envelope).
func (t *TarWriter) WriteAt(p []byte, off int64) (int, error) {
	if t.done {
		return 0, fmt.Errorf("envelope: tar write: %w", core.ErrClosed)
	}
	n, err := t.w.WriteAt(p, PayloadOffset+off)
	t.n = max(t.n, off+int64(n))
	return n, err
}

// Close writes the padding, the end-of-archive blocks and the headers.
func (t *TarWriter) Close() error {
	if t.done {
		return nil
	}
	t.done = true
	end := PayloadOffset + t.n
	pad := (tarBlock - end%tarBlock) % tarBlock
	if _, err := t.w.WriteAt(make([]byte, pad+2*tarBlock), end); err != nil {
		return fmt.Errorf("envelope: write tar end: %w", err)
	}
	if _, err := t.w.WriteAt(TarHeaders(t.n, t.mode), 0); err != nil {
		return fmt.Errorf("envelope: write tar headers: %w", err)
	}
	return nil
}

// TarHeaders returns the three 512-byte blocks that precede a payload of
// size bytes in overlaybd's envelope.
func TarHeaders(size int64, mode uint32) []byte {
	b := make([]byte, PayloadOffset)
	rec := paxRecord("size", strconv.FormatInt(size, 10))
	pax := b[0:tarBlock]
	copy(pax[0:], "overlaybd.pax")
	copy(pax[124:136], fmt.Sprintf("%11o ", len(rec)))
	pax[156] = 'x'
	copy(pax[257:], "ustar\x00")
	copy(pax[263:], "00")
	putChecksum(pax)
	copy(b[tarBlock:], rec)

	h := b[2*tarBlock:]
	copy(h[0:], "overlaybd.commit")
	copy(h[100:108], fmt.Sprintf("%6o \x00", mode))
	copy(h[108:116], fmt.Sprintf("%6o \x00", 0))
	copy(h[116:124], fmt.Sprintf("%6o \x00", 0))
	copy(h[124:136], fmt.Sprintf("%11o ", 0))
	copy(h[136:148], fmt.Sprintf("%11o ", 0))
	h[156] = '0'
	copy(h[257:], "ustar\x00")
	copy(h[263:], "00")
	copy(h[265:297], rootUser())
	copy(h[297:329], rootGroup())
	putChecksum(h[:tarBlock])
	return b
}

// paxRecord formats one self-counting PAX record.
func paxRecord(k, v string) string {
	body := " " + k + "=" + v + "\n"
	n := len(body) + 1
	for {
		s := strconv.Itoa(n) + body
		if len(s) == n {
			return s
		}
		n = len(s)
	}
}

func putChecksum(h []byte) {
	copy(h[148:156], "        ")
	var sum int64
	for _, c := range h[:tarBlock] {
		sum += int64(c)
	}
	copy(h[148:156], fmt.Sprintf("%6o \x00", sum))
}

// rootUser and rootGroup are the names of uid 0 and gid 0 on this host,
// which upstream records as the owner of the member.
func rootUser() string {
	if u, err := user.LookupId("0"); err == nil && len(u.Username) < 32 {
		return u.Username
	}
	return "root"
}

func rootGroup() string {
	if g, err := user.LookupGroupId("0"); err == nil && len(g.Name) < 32 {
		return g.Name
	}
	return "root"
}
