package tcmu

import (
	"fmt"
	"sync/atomic"
	"testing"
	"unsafe"
)

// fakeKernel plays the kernel's side of a shared region in memory: it
// queues command entries as target_core_user's queue_cmd_ring does (PAD to
// the end of the ring when an entry does not fit, one byte kept free) and
// reaps completions as tcmu_handle_completions does.
type fakeKernel struct {
	t        testing.TB
	mem      []byte
	cmdrOff  uint32
	cmdrSize uint32
	dataOff  uint32
	dataNext uint32
	reaped   uint32 // last cleaned offset
	nextID   uint16
	pending  map[uint16]bool
}

func newFakeKernel(t testing.TB, cmdrSize, dataSize uint32) *fakeKernel {
	// 8-aligned like a page-aligned mapping.
	words := make([]uint64, (mbSize+cmdrSize+dataSize+7)/8)
	mem := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), len(words)*8)
	ne.PutUint16(mem[mbVersion:], MailboxVersion)
	ne.PutUint16(mem[mbFlags:], MailboxFlagCapOOOC|MailboxFlagCapReadLen|MailboxFlagCapTMR|MailboxFlagCapKeepBuf)
	ne.PutUint32(mem[mbCmdrOff:], mbSize)
	ne.PutUint32(mem[mbCmdrSize:], cmdrSize)
	return &fakeKernel{t: t, mem: mem, cmdrOff: mbSize, cmdrSize: cmdrSize, dataOff: mbSize + cmdrSize,
		pending: map[uint16]bool{}}
}

func (k *fakeKernel) head() uint32 {
	return atomic.LoadUint32((*uint32)(unsafe.Pointer(&k.mem[mbCmdHead])))
}
func (k *fakeKernel) tail() uint32 {
	return atomic.LoadUint32((*uint32)(unsafe.Pointer(&k.mem[mbCmdTail])))
}
func (k *fakeKernel) setHead(v uint32) {
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&k.mem[mbCmdHead])), v)
}

// free is the ring space the kernel may use (it keeps one byte free).
func (k *fakeKernel) free() uint32 {
	h, t := k.head(), k.reaped
	if t > h {
		return t - h - 1
	}
	return k.cmdrSize - h + t - 1
}

// put writes an entry header at ring offset u.
func (k *fakeKernel) put(u uint32, op uint32, length uint32, id uint16) []byte {
	e := k.mem[k.cmdrOff+u : k.cmdrOff+u+length]
	clear(e)
	ne.PutUint32(e[entHdrLenOp:], length|op)
	ne.PutUint16(e[entHdrCmdID:], id)
	return e
}

// reserve makes room for an entry of length bytes, padding to the end of
// the ring when needed; it reports false when the ring is full.
func (k *fakeKernel) reserve(length uint32) (uint32, bool) {
	h := k.head()
	if h+length > k.cmdrSize {
		pad := k.cmdrSize - h
		if k.free() < pad+length {
			return 0, false
		}
		k.put(h, opPad, pad, 0)
		h = 0
		k.setHead(0)
	}
	if k.free() < length {
		return 0, false
	}
	return h, true
}

// queue writes a command entry with its data buffers (each one iovec) and
// publishes it; it returns the command id.
func (k *fakeKernel) queue(cdb []byte, bufs ...[]byte) (uint16, bool) {
	base := uint32(entReqIov + iovecSize*len(bufs))
	if base < entMinSize {
		base = entMinSize
	}
	length := base + (uint32(len(cdb))+7)&^7
	u, room := k.reserve(length)
	if !room {
		return 0, false
	}
	k.nextID++
	if k.nextID == 0 {
		k.nextID = 1
	}
	id := k.nextID
	e := k.put(u, opCmd, length, id)
	ne.PutUint32(e[entReqIovCnt:], uint32(len(bufs)))
	ne.PutUint64(e[entReqCdbOff:], uint64(k.cmdrOff+u+base))
	copy(e[base:], cdb)
	for i, b := range bufs {
		dataLen := uint32(len(b))
		if k.dataNext+dataLen > uint32(len(k.mem))-k.dataOff {
			k.dataNext = 0
		}
		off := k.dataOff + k.dataNext
		copy(k.mem[off:], b)
		ne.PutUint64(e[entReqIov+i*iovecSize:], uint64(off))
		ne.PutUint64(e[entReqIov+i*iovecSize+8:], uint64(dataLen))
		k.dataNext += dataLen
	}
	k.pending[id] = true
	k.setHead((u + length) % k.cmdrSize)
	return id, true
}

// queueTMR writes a task management notification entry.
func (k *fakeKernel) queueTMR() uint32 {
	u, room := k.reserve(40)
	if !room {
		k.t.Fatal("ring full")
	}
	k.put(u, opTMR, 40, 0)
	k.setHead((u + 40) % k.cmdrSize)
	return u
}

// completion is what the kernel reaps for one command.
type completion struct {
	id     uint16
	status byte
	sense  []byte
}

// reap collects the completions between the last cleaned offset and
// cmd_tail, as the kernel does after a doorbell.
func (k *fakeKernel) reap() ([]completion, error) {
	var out []completion
	tail := k.tail()
	for k.reaped != tail {
		lenOp := ne.Uint32(k.mem[k.cmdrOff+k.reaped:])
		op, length := lenOp&opMask, lenOp&^opMask
		if length == 0 {
			return out, fmt.Errorf("zero-length entry at %d", k.reaped)
		}
		if op == opCmd {
			e := k.mem[k.cmdrOff+k.reaped : k.cmdrOff+k.reaped+length]
			id := ne.Uint16(e[entHdrCmdID:])
			if !k.pending[id] {
				return out, fmt.Errorf("completion of unknown command %d at %d", id, k.reaped)
			}
			delete(k.pending, id)
			c := completion{id: id, status: e[entRspStatus]}
			if c.status == StatusCheckCondition {
				c.sense = append([]byte(nil), e[entRspSense:entRspSense+SenseSize]...)
			}
			out = append(out, c)
		}
		k.reaped = (k.reaped + length) % k.cmdrSize
	}
	return out, nil
}
