package iouring

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pinner keeps the Go buffers of a submission in place until it completes.
type pinner struct{ p runtime.Pinner }

// pin pins b and returns its address.
func (p *pinner) pin(b []byte) uint64 {
	p.p.Pin(&b[0])
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}

func (p *pinner) unpin() { p.p.Unpin() }

// arena is a set of equal buffers in one anonymous mapping, registered with
// the ring (IORING_REGISTER_BUFFERS) so that reads and writes through them
// skip the kernel's per-request page pinning.
type arena struct {
	mem  []byte
	size int
	free chan int
}

func newArena(ringFd, count, size int) (*arena, error) {
	if size <= 0 {
		size = 256 << 10
	}
	size = (size + 4095) &^ 4095
	mem, err := unix.Mmap(-1, 0, count*size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("io_uring: map registered buffers: %w", err)
	}
	iov := make([]unix.Iovec, count)
	for i := range iov {
		iov[i].Base = &mem[i*size]
		iov[i].SetLen(size)
	}
	if err := sysRegister(ringFd, registerBuffers, unsafe.Pointer(&iov[0]), uint32(count)); err != nil {
		unix.Munmap(mem)
		return nil, fmt.Errorf("io_uring: register %d buffers of %d bytes: %w", count, size, err)
	}
	a := &arena{mem: mem, size: size, free: make(chan int, count)}
	for i := range count {
		a.free <- i
	}
	return a, nil
}

// index returns the registered buffer that holds all of b.
func (a *arena) index(b []byte) (uint16, bool) {
	if a == nil || len(b) == 0 {
		return 0, false
	}
	start := uintptr(unsafe.Pointer(&a.mem[0]))
	p := uintptr(unsafe.Pointer(&b[0]))
	if p < start || p >= start+uintptr(len(a.mem)) {
		return 0, false
	}
	i := int(p-start) / a.size
	if int(p-start)+len(b) > (i+1)*a.size {
		return 0, false
	}
	return uint16(i), true
}

func (a *arena) get(n int) ([]byte, bool) {
	if a == nil || n > a.size {
		return nil, false
	}
	select {
	case i := <-a.free:
		return a.mem[i*a.size : i*a.size+n : (i+1)*a.size], true
	default:
		return nil, false
	}
}

func (a *arena) put(b []byte) {
	if i, ok := a.index(b); ok {
		a.free <- int(i)
	}
}

func (a *arena) unmap() {
	unix.Munmap(a.mem)
}
