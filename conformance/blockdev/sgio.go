package blockdev

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sgIOHdr is struct sg_io_hdr of <scsi/sg.h> (amd64 layout).
type sgIOHdr struct {
	InterfaceID    int32
	DxferDirection int32
	CmdLen         uint8
	MxSbLen        uint8
	IovecCount     uint16
	DxferLen       uint32
	Dxferp         uintptr
	Cmdp           uintptr
	Sbp            uintptr
	Timeout        uint32
	Flags          uint32
	PackID         int32
	UsrPtr         uintptr
	Status         uint8
	MaskedStatus   uint8
	MsgStatus      uint8
	SbLenWr        uint8
	HostStatus     uint16
	DriverStatus   uint16
	Resid          int32
	Duration       uint32
	Info           uint32
}

const (
	sgIO        = 0x2285
	sgDxferNone = -1
)

// syncCache sends SYNCHRONIZE CACHE(10) over the whole device.
func (b *File) sendSyncCache() error {
	cdb := []byte{0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	sense := make([]byte, 96)
	h := &sgIOHdr{InterfaceID: 'S', DxferDirection: sgDxferNone, CmdLen: uint8(len(cdb)), MxSbLen: uint8(len(sense)),
		Cmdp: uintptr(unsafe.Pointer(&cdb[0])), Sbp: uintptr(unsafe.Pointer(&sense[0])), Timeout: 60_000}
	rc, err := b.f.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, sgIO, uintptr(unsafe.Pointer(h)))
	}); err != nil {
		return err
	}
	runtime.KeepAlive(cdb)
	runtime.KeepAlive(sense)
	if errno != 0 {
		return fmt.Errorf("SG_IO SYNCHRONIZE CACHE: %w", errno)
	}
	if h.Status != 0 || h.HostStatus != 0 || h.DriverStatus != 0 {
		return fmt.Errorf("SYNCHRONIZE CACHE: SCSI status %#x, host status %#x, driver status %#x, sense % x",
			h.Status, h.HostStatus, h.DriverStatus, sense[:h.SbLenWr])
	}
	return nil
}
