package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire constants of the NBD protocol (NetworkBlockDevice doc/proto.md).
const (
	magicNBD         uint64 = 0x4e42444d41474943 // "NBDMAGIC"
	magicIHaveOpt    uint64 = 0x49484156454F5054 // "IHAVEOPT"
	magicOptReply    uint64 = 0x0003e889045565a9
	magicRequest     uint32 = 0x25609513
	magicSimpleReply uint32 = 0x67446698
	magicStructReply uint32 = 0x668e33ef

	// Handshake flags (server) and client flags.
	flagFixedNewstyle  uint16 = 1 << 0
	flagNoZeroes       uint16 = 1 << 1
	flagCFixedNewstyle uint32 = 1 << 0
	flagCNoZeroes      uint32 = 1 << 1

	// Transmission flags.
	flagHasFlags        uint16 = 1 << 0
	flagReadOnly        uint16 = 1 << 1
	flagSendFlush       uint16 = 1 << 2
	flagSendFUA         uint16 = 1 << 3
	flagSendTrim        uint16 = 1 << 5
	flagSendWriteZeroes uint16 = 1 << 6
	flagSendDF          uint16 = 1 << 7
	flagCanMultiConn    uint16 = 1 << 8
	flagSendCache       uint16 = 1 << 10

	// Options.
	optExportName     uint32 = 1
	optAbort          uint32 = 2
	optList           uint32 = 3
	optStartTLS       uint32 = 5
	optInfo           uint32 = 6
	optGo             uint32 = 7
	optStructured     uint32 = 8
	optListMetaCtx    uint32 = 9
	optSetMetaCtx     uint32 = 10
	optExtendedHeader uint32 = 11

	// Option replies.
	repAck          uint32 = 1
	repServer       uint32 = 2
	repInfo         uint32 = 3
	repMetaContext  uint32 = 4
	repErrUnsup     uint32 = 1<<31 + 1
	repErrPolicy    uint32 = 1<<31 + 2
	repErrInvalid   uint32 = 1<<31 + 3
	repErrTLSReqd   uint32 = 1<<31 + 5
	repErrUnknown   uint32 = 1<<31 + 6
	repErrShutdown  uint32 = 1<<31 + 7
	repErrTooBig    uint32 = 1<<31 + 9
	repErrBlockSize uint32 = 1<<31 + 8

	// Info types.
	infoExport      uint16 = 0
	infoName        uint16 = 1
	infoDescription uint16 = 2
	infoBlockSize   uint16 = 3

	// Commands.
	cmdRead        uint16 = 0
	cmdWrite       uint16 = 1
	cmdDisc        uint16 = 2
	cmdFlush       uint16 = 3
	cmdTrim        uint16 = 4
	cmdCache       uint16 = 5
	cmdWriteZeroes uint16 = 6
	cmdBlockStatus uint16 = 7

	// Command flags.
	cmdFlagFUA      uint16 = 1 << 0
	cmdFlagNoHole   uint16 = 1 << 1
	cmdFlagDF       uint16 = 1 << 2
	cmdFlagReqOne   uint16 = 1 << 3
	cmdFlagFastZero uint16 = 1 << 4

	// Structured reply flags and types.
	replyFlagDone           uint16 = 1 << 0
	replyTypeNone           uint16 = 0
	replyTypeOffsetData     uint16 = 1
	replyTypeBlockStatus    uint16 = 5
	replyTypeError          uint16 = 1<<15 + 1
	replyTypeErrorOffset    uint16 = 1<<15 + 2
	metaContextAllocation          = "base:allocation"
	metaContextAllocationID        = 1

	// Error values of the transmission phase.
	errnoPerm     uint32 = 1
	errnoIO       uint32 = 5
	errnoNoMem    uint32 = 12
	errnoInval    uint32 = 22
	errnoNoSpc    uint32 = 28
	errnoOverflow uint32 = 75
	errnoNotSup   uint32 = 95
	errnoShutdown uint32 = 108

	// maxStringLen is the protocol's bound on export names and other
	// strings.
	maxStringLen = 4096
	// requestHeaderLen is the size of a (compact) request header.
	requestHeaderLen = 28
)

// errMalformed marks option or request data that does not parse.
var errMalformed = errors.New("nbd: malformed message")

// request is one parsed transmission-phase request header.
type request struct {
	flags  uint16
	typ    uint16
	handle uint64
	offset uint64
	length uint32
}

// parseRequest decodes a request header. A wrong magic is an error after
// which the stream cannot be resynchronised.
func parseRequest(b []byte) (request, error) {
	if len(b) < requestHeaderLen {
		return request{}, fmt.Errorf("%w: request header of %d bytes", errMalformed, len(b))
	}
	if m := binary.BigEndian.Uint32(b[0:4]); m != magicRequest {
		return request{}, fmt.Errorf("%w: request magic %#08x", errMalformed, m)
	}
	return request{
		flags:  binary.BigEndian.Uint16(b[4:6]),
		typ:    binary.BigEndian.Uint16(b[6:8]),
		handle: binary.BigEndian.Uint64(b[8:16]),
		offset: binary.BigEndian.Uint64(b[16:24]),
		length: binary.BigEndian.Uint32(b[24:28]),
	}, nil
}

// infoRequest is the payload of NBD_OPT_INFO and NBD_OPT_GO.
type infoRequest struct {
	name  string
	infos []uint16
}

// parseInfoRequest decodes the data of NBD_OPT_INFO / NBD_OPT_GO: a 32-bit
// name length, the name, a 16-bit count and that many 16-bit info types.
// The lengths must account for the data exactly.
func parseInfoRequest(data []byte) (infoRequest, error) {
	if len(data) < 6 {
		return infoRequest{}, fmt.Errorf("%w: info request of %d bytes", errMalformed, len(data))
	}
	nameLen := uint64(binary.BigEndian.Uint32(data[0:4]))
	if nameLen > maxStringLen || 4+nameLen+2 > uint64(len(data)) {
		return infoRequest{}, fmt.Errorf("%w: export name length %d in %d bytes", errMalformed, nameLen, len(data))
	}
	r := infoRequest{name: string(data[4 : 4+nameLen])}
	rest := data[4+nameLen:]
	n := int(binary.BigEndian.Uint16(rest[0:2]))
	rest = rest[2:]
	if len(rest) != 2*n {
		return infoRequest{}, fmt.Errorf("%w: %d info requests in %d bytes", errMalformed, n, len(rest))
	}
	r.infos = make([]uint16, n)
	for i := range r.infos {
		r.infos[i] = binary.BigEndian.Uint16(rest[2*i:])
	}
	return r, nil
}

// metaRequest is the payload of NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT.
type metaRequest struct {
	name    string
	queries []string
}

// parseMetaRequest decodes a 32-bit name length, the name, a 32-bit query
// count and that many (32-bit length, string) queries, with nothing left
// over.
func parseMetaRequest(data []byte) (metaRequest, error) {
	var r metaRequest
	name, rest, err := takeString(data)
	if err != nil {
		return r, fmt.Errorf("export name: %w", err)
	}
	r.name = name
	if len(rest) < 4 {
		return r, fmt.Errorf("%w: missing query count", errMalformed)
	}
	n := binary.BigEndian.Uint32(rest[0:4])
	rest = rest[4:]
	// Every query takes at least its 4-byte length.
	if uint64(n)*4 > uint64(len(rest)) {
		return r, fmt.Errorf("%w: %d queries in %d bytes", errMalformed, n, len(rest))
	}
	r.queries = make([]string, 0, n)
	for i := uint32(0); i < n; i++ {
		var q string
		q, rest, err = takeString(rest)
		if err != nil {
			return r, fmt.Errorf("query %d: %w", i, err)
		}
		r.queries = append(r.queries, q)
	}
	if len(rest) != 0 {
		return r, fmt.Errorf("%w: %d trailing bytes", errMalformed, len(rest))
	}
	return r, nil
}

// takeString splits a (32-bit length, string) pair off the front of b.
func takeString(b []byte) (string, []byte, error) {
	if len(b) < 4 {
		return "", nil, fmt.Errorf("%w: missing string length", errMalformed)
	}
	n := uint64(binary.BigEndian.Uint32(b[0:4]))
	if n > maxStringLen || n > uint64(len(b)-4) {
		return "", nil, fmt.Errorf("%w: string length %d in %d bytes", errMalformed, n, len(b)-4)
	}
	return string(b[4 : 4+n]), b[4+n:], nil
}

// matchMetaQuery reports whether query selects base:allocation: the exact
// name, or the namespace "base:" alone.
func matchMetaQuery(q string) bool {
	return q == metaContextAllocation || q == "base:"
}
