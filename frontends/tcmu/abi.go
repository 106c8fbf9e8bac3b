// Package tcmu serves core.File images to the Linux kernel as SCSI disks
// through TCMU (the target_core_user backend of LIO), speaking the same
// kernel ABI and the same TCM-USER generic-netlink protocol as upstream
// overlaybd's libtcmu: devices are created through configfs by whoever
// manages them (the containerd snapshotter, overlaybd-attacher, a script),
// the kernel announces them over netlink, and the [Server] opens each one's
// image, maps its UIO command ring and answers the SCSI commands from it.
//
// The package is split into the shared-memory [Ring] (mailbox, command
// ring, data area), the SCSI command handler ([Disk]), the UIO device loop
// and the netlink control plane ([Server]).
package tcmu

// Mailbox layout (struct tcmu_mailbox, include/uapi/linux/target_core_user.h).
const (
	mbVersion  = 0  // u16
	mbFlags    = 2  // u16
	mbCmdrOff  = 4  // u32
	mbCmdrSize = 8  // u32
	mbCmdHead  = 12 // u32, written by the kernel
	mbCmdTail  = 64 // u32, written by user space
	mbSize     = 128

	// MailboxVersion is the only mailbox version this package speaks.
	MailboxVersion = 2
)

// Mailbox flags set by the kernel.
const (
	MailboxFlagCapOOOC    = 1 << 0
	MailboxFlagCapReadLen = 1 << 1
	MailboxFlagCapTMR     = 1 << 2
	MailboxFlagCapKeepBuf = 1 << 3
)

// Ring entry layout (struct tcmu_cmd_entry).
const (
	entHdrLenOp   = 0 // u32: bits 0-2 opcode, rest length
	entHdrCmdID   = 4 // u16
	entHdrKFlags  = 6
	entHdrUFlags  = 7
	entReqIovCnt  = 8  // u32
	entReqCdbOff  = 24 // u64
	entReqIov     = 48 // struct iovec[]
	entRspStatus  = 8  // u8
	entRspReadLen = 12 // u32
	entRspSense   = 16 // [96]byte
	entMinSize    = 112
	iovecSize     = 16

	opMask  = 0x7
	opAlign = 8

	opPad = 0
	opCmd = 1
	opTMR = 2

	uflagUnknownOp = 0x1

	// SenseSize is the size of the sense buffer in a ring entry.
	SenseSize = 96
)

// Generic netlink family TCM-USER.
const (
	genlFamily  = "TCM-USER"
	genlGroup   = "config"
	genlVersion = 2

	cmdAddedDevice        = 1
	cmdRemovedDevice      = 2
	cmdReconfigDevice     = 3
	cmdAddedDeviceDone    = 4
	cmdRemovedDeviceDone  = 5
	cmdReconfigDeviceDone = 6
	cmdSetFeatures        = 7

	attrDevice           = 1
	attrMinor            = 2
	attrPad              = 3
	attrDevCfg           = 4
	attrDevSize          = 5
	attrWriteCache       = 6
	attrCmdStatus        = 7
	attrDeviceID         = 8
	attrSuppKernCmdReply = 9
)
