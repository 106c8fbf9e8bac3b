package tcmu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"
)

// ErrRingBroken reports a shared region whose contents violate the kernel
// ABI (a bad mailbox, an entry that does not fit, an iovec outside the data
// area). The device cannot be served any further.
var ErrRingBroken = errors.New("tcmu: broken command ring")

var ne = binary.NativeEndian

// Command is one SCSI command taken from the ring. Everything in it was
// copied out of the ring entry except the data buffers, which alias the
// shared data area and belong to the command until it is completed.
type Command struct {
	// ID is the kernel's command id, echoed at completion.
	ID uint16
	// CDB is a copy of the command descriptor block. It is nil when the
	// opcode's group has no defined CDB length; such a command can only be
	// completed with an error.
	CDB []byte
	// Iov are the data buffers, in transfer order, inside the data area.
	Iov [][]byte
}

// Len is the total length of the command's data buffers.
func (c *Command) Len() int {
	n := 0
	for _, b := range c.Iov {
		n += len(b)
	}
	return n
}

// Ring is the shared region of one TCMU device: the mailbox, the command
// ring and the data area. Next is called by one reader at a time; Complete
// may be called from any goroutine.
type Ring struct {
	mem      []byte
	cmdrOff  uint32
	cmdrSize uint32
	dataOff  uint32
	cursor   uint32 // reader's private cursor, relative to the ring
	mu       sync.Mutex
}

// NewRing validates the mailbox at the start of mem and returns a Ring whose
// read cursor starts at the mailbox's cmd_tail (so that commands queued
// before the device was opened are taken too).
func NewRing(mem []byte) (*Ring, error) {
	if len(mem) < mbSize || uintptr(unsafe.Pointer(&mem[0]))%8 != 0 {
		return nil, fmt.Errorf("%w: region of %d bytes", ErrRingBroken, len(mem))
	}
	if v := ne.Uint16(mem[mbVersion:]); v != MailboxVersion {
		return nil, fmt.Errorf("%w: mailbox version %d, want %d", ErrRingBroken, v, MailboxVersion)
	}
	off, size := ne.Uint32(mem[mbCmdrOff:]), ne.Uint32(mem[mbCmdrSize:])
	if off < mbSize || size < entMinSize || uint64(off)+uint64(size) > uint64(len(mem)) {
		return nil, fmt.Errorf("%w: command ring at %d+%d in a region of %d bytes", ErrRingBroken, off, size, len(mem))
	}
	r := &Ring{mem: mem, cmdrOff: off, cmdrSize: size, dataOff: off + size}
	r.cursor = r.tail()
	if r.cursor >= size || r.cursor%opAlign != 0 {
		return nil, fmt.Errorf("%w: cmd_tail %d", ErrRingBroken, r.cursor)
	}
	return r, nil
}

// Flags returns the mailbox flags (the kernel's capabilities).
func (r *Ring) Flags() uint16 { return ne.Uint16(r.mem[mbFlags:]) }

func (r *Ring) u32(off int) *uint32 { return (*uint32)(unsafe.Pointer(&r.mem[off])) }

func (r *Ring) head() uint32 { return atomic.LoadUint32(r.u32(mbCmdHead)) }
func (r *Ring) tail() uint32 { return atomic.LoadUint32(r.u32(mbCmdTail)) }

// Idle reports whether every command in the ring has been completed.
func (r *Ring) Idle() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.head() == r.tail()
}

// entry returns the opcode and length of the entry at ring offset u.
func (r *Ring) entry(u uint32) (op uint32, length uint32, err error) {
	if u%opAlign != 0 || u+8 > r.cmdrSize {
		return 0, 0, fmt.Errorf("%w: entry at %d", ErrRingBroken, u)
	}
	lenOp := ne.Uint32(r.mem[r.cmdrOff+u:])
	op, length = lenOp&opMask, lenOp&^opMask
	if length < 8 || u+length > r.cmdrSize {
		return 0, 0, fmt.Errorf("%w: entry at %d has length %d (ring %d)", ErrRingBroken, u, length, r.cmdrSize)
	}
	return op, length, nil
}

// cdbLen returns the CDB length defined by the opcode group, or -1.
func cdbLen(cdb0 byte, b7 func() (byte, bool)) int {
	switch cdb0 >> 5 {
	case 0:
		return 6
	case 1, 2:
		return 10
	case 4:
		return 16
	case 5:
		return 12
	case 3:
		if cdb0 == 0x7f {
			if v, ok := b7(); ok {
				return 8 + int(v)
			}
		}
	}
	return -1
}

// Next takes the next command from the ring. It skips PAD entries and marks
// entries of unknown type (task management notifications) with
// TCMU_UFLAG_UNKNOWN_OP. ok is false when the ring holds no further command.
func (r *Ring) Next() (cmd Command, ok bool, err error) {
	head := r.head()
	if head >= r.cmdrSize || head%opAlign != 0 {
		return cmd, false, fmt.Errorf("%w: cmd_head %d", ErrRingBroken, head)
	}
	for r.cursor != head {
		u := r.cursor
		op, length, err := r.entry(u)
		if err != nil {
			return cmd, false, err
		}
		r.cursor = (u + length) % r.cmdrSize
		switch op {
		case opPad:
			continue
		case opCmd:
			cmd, err = r.parse(u, length)
			return cmd, err == nil, err
		default:
			r.mem[r.cmdrOff+u+entHdrUFlags] |= uflagUnknownOp
		}
	}
	return cmd, false, nil
}

func (r *Ring) parse(u, length uint32) (Command, error) {
	e := r.mem[r.cmdrOff+u : r.cmdrOff+u+length]
	if length < entReqIov {
		return Command{}, fmt.Errorf("%w: command entry at %d too short (%d)", ErrRingBroken, u, length)
	}
	cmd := Command{ID: ne.Uint16(e[entHdrCmdID:])}
	n := ne.Uint32(e[entReqIovCnt:])
	if uint64(n) > uint64(length-entReqIov)/iovecSize {
		return Command{}, fmt.Errorf("%w: command %d has %d iovecs in an entry of %d bytes", ErrRingBroken, cmd.ID, n, length)
	}
	cmd.Iov = make([][]byte, 0, n)
	memLen := uint64(len(r.mem))
	for i := uint32(0); i < n; i++ {
		base := ne.Uint64(e[entReqIov+i*iovecSize:])
		l := ne.Uint64(e[entReqIov+i*iovecSize+8:])
		if base < uint64(r.dataOff) || base > memLen || l > memLen-base {
			return Command{}, fmt.Errorf("%w: command %d iovec %d at %d+%d outside the data area", ErrRingBroken, cmd.ID, i, base, l)
		}
		cmd.Iov = append(cmd.Iov, r.mem[base:base+l:base+l])
	}
	cdbOff := ne.Uint64(e[entReqCdbOff:])
	if cdbOff >= memLen {
		return Command{}, fmt.Errorf("%w: command %d CDB at %d", ErrRingBroken, cmd.ID, cdbOff)
	}
	cl := cdbLen(r.mem[cdbOff], func() (byte, bool) {
		if cdbOff+7 < memLen {
			return r.mem[cdbOff+7], true
		}
		return 0, false
	})
	if cl > 0 {
		if cdbOff+uint64(cl) > memLen {
			return Command{}, fmt.Errorf("%w: command %d CDB at %d+%d", ErrRingBroken, cmd.ID, cdbOff, cl)
		}
		cmd.CDB = append([]byte(nil), r.mem[cdbOff:cdbOff+uint64(cl)]...)
	}
	return cmd, nil
}

// Complete writes the completion of command id into the ring slot at
// cmd_tail (the kernel accepts completions out of order) and advances
// cmd_tail past it. sense is copied when status is CHECK CONDITION. The
// kernel learns about it at the next doorbell.
func (r *Ring) Complete(id uint16, status byte, sense []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	head, tail := r.head(), r.tail()
	for tail != head {
		op, length, err := r.entry(tail)
		if err != nil {
			return err
		}
		if op != opCmd {
			tail = (tail + length) % r.cmdrSize
			continue
		}
		if length < entMinSize {
			return fmt.Errorf("%w: command entry at %d too short (%d)", ErrRingBroken, tail, length)
		}
		e := r.mem[r.cmdrOff+tail : r.cmdrOff+tail+length]
		ne.PutUint16(e[entHdrCmdID:], id)
		e[entHdrUFlags] = 0
		e[entRspStatus] = status
		if status == StatusCheckCondition {
			clear(e[entRspSense : entRspSense+SenseSize])
			copy(e[entRspSense:entRspSense+SenseSize], sense)
		}
		atomic.StoreUint32(r.u32(mbCmdTail), (tail+length)%r.cmdrSize)
		return nil
	}
	return fmt.Errorf("%w: completion of command %d with no command entry between cmd_tail and cmd_head", ErrRingBroken, id)
}
