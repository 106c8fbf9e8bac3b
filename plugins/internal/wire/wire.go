// Package wire is the protocol between the codec plugin host and codec
// plugins: the go-plugin handshake, the layout of the shared-memory data plane
// handed to the plugin at launch, the doorbell messages that carry batches of
// blocks, the reply checksum, and the gRPC control service. docs/plugins.md
// describes the same protocol for authors of plugins in other languages.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	goplugin "github.com/hashicorp/go-plugin"

	"github.com/overlaybd-go/overlaybd/codecs/crc32c"
)

// ProtocolVersion is the go-plugin protocol version of this protocol. A host
// and a plugin that differ refuse each other at the handshake.
const ProtocolVersion = 1

// Handshake is the go-plugin handshake every codec plugin uses.
var Handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "OVERLAYBD_CODEC_PLUGIN",
	MagicCookieValue: "d5b6f1f0-codec-plugin-v1",
}

// PluginName is the name of the control service in go-plugin's plugin set.
const PluginName = "codec"

// EnvDataPlane names the environment variable that tells the plugin where
// its data plane is: "memfd=3,lane=8388608,socks=4:5:6:7" (file descriptors
// inherited at launch; the memfd holds one lane of lane bytes per socket).
const EnvDataPlane = "OVERLAYBD_CODEC_DATAPLANE"

// DataPlane describes the data plane passed to a plugin.
type DataPlane struct {
	// MemFD is the descriptor of the shared memory file.
	MemFD int
	// LaneSize is the size in bytes of each lane's region of the memfd;
	// lane i occupies [i*LaneSize, (i+1)*LaneSize).
	LaneSize int
	// Socks are the descriptors of the lanes' doorbell sockets
	// (SOCK_SEQPACKET), one per lane.
	Socks []int
}

// String formats d as the value of EnvDataPlane.
func (d DataPlane) String() string {
	socks := make([]string, len(d.Socks))
	for i, s := range d.Socks {
		socks[i] = strconv.Itoa(s)
	}
	return fmt.Sprintf("memfd=%d,lane=%d,socks=%s", d.MemFD, d.LaneSize, strings.Join(socks, ":"))
}

// ParseDataPlane parses the value of EnvDataPlane.
func ParseDataPlane(s string) (DataPlane, error) {
	var d DataPlane
	seen := map[string]bool{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || seen[k] {
			return d, fmt.Errorf("data plane %q: bad or repeated field %q", s, kv)
		}
		seen[k] = true
		var err error
		switch k {
		case "memfd":
			d.MemFD, err = strconv.Atoi(v)
		case "lane":
			d.LaneSize, err = strconv.Atoi(v)
		case "socks":
			for _, f := range strings.Split(v, ":") {
				n, e := strconv.Atoi(f)
				if e != nil {
					err = e
					break
				}
				d.Socks = append(d.Socks, n)
			}
		default:
			err = errors.New("unknown field")
		}
		if err != nil {
			return d, fmt.Errorf("data plane %q: field %q: %v", s, k, err)
		}
	}
	if !seen["memfd"] || !seen["lane"] || !seen["socks"] || d.LaneSize <= 0 || d.LaneSize > MaxLaneSize || len(d.Socks) == 0 || len(d.Socks) > MaxLanes {
		return d, fmt.Errorf("data plane %q: incomplete or out of range", s)
	}
	return d, nil
}

// DataPlaneFromEnv reads the data plane description from the environment.
func DataPlaneFromEnv() (DataPlane, error) {
	v := os.Getenv(EnvDataPlane)
	if v == "" {
		return DataPlane{}, fmt.Errorf("%s is not set: this binary is a codec plugin, started by an overlaybd binary", EnvDataPlane)
	}
	return ParseDataPlane(v)
}

// Limits of the data plane.
const (
	// MaxLanes is the largest number of lanes.
	MaxLanes = 64
	// MaxLaneSize is the largest lane.
	MaxLaneSize = 1 << 30
	// MaxBatch is the largest number of blocks in one doorbell message.
	MaxBatch = 256
)

// Ops of a batch.
const (
	OpDecompress = 1
	OpCompress   = 2
)

// Status of one block in a reply.
const (
	// StatusOK: the result is in the block's destination.
	StatusOK = 0
	// StatusCorrupt: the input does not decode, or the result does not
	// fit in the destination.
	StatusCorrupt = 1
	// StatusFailed: the codec failed for another reason.
	StatusFailed = 2
	// StatusBadRequest: the descriptor was invalid (offsets outside the
	// lane, unknown codec).
	StatusBadRequest = 3
)

// Magic starts every doorbell message and reply ("OBDP").
const Magic = 0x5044424f

// HeaderSize is the size of a message header; DescSize of a request
// descriptor; ResultSize of a reply entry.
const (
	HeaderSize = 24
	DescSize   = 16
	ResultSize = 16
)

// Header starts every doorbell message and reply. A reply echoes its
// request's header.
type Header struct {
	Op    uint8
	Codec uint8 // ZFile algorithm number: 1 lz4, 2 zstd
	Seq   uint64
	Count uint32
}

// Desc is one block of a request: its input at [SrcOff, SrcOff+SrcLen) and its
// output area at [DstOff, DstOff+DstCap) of the lane.
type Desc struct {
	SrcOff, SrcLen, DstOff, DstCap uint32
}

// Result is one block of a reply: its status, the length N of its output at
// the block's DstOff, and Sum, the reply checksum (see Sum).
type Result struct {
	Status, N, Sum uint32
}

var le = binary.LittleEndian

// AppendHeader appends the encoding of h.
func AppendHeader(b []byte, h Header) []byte {
	b = le.AppendUint32(b, Magic)
	b = append(b, 1, h.Op, h.Codec, 0)
	b = le.AppendUint64(b, h.Seq)
	b = le.AppendUint32(b, h.Count)
	return le.AppendUint32(b, 0)
}

// ParseHeader decodes a message header.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("message of %d bytes is shorter than a header", len(b))
	}
	if le.Uint32(b) != Magic || b[4] != 1 {
		return Header{}, fmt.Errorf("bad message magic %#x or version %d", le.Uint32(b), b[4])
	}
	return Header{Op: b[5], Codec: b[6], Seq: le.Uint64(b[8:]), Count: le.Uint32(b[16:])}, nil
}

// AppendDesc appends the encoding of d.
func AppendDesc(b []byte, d Desc) []byte {
	b = le.AppendUint32(b, d.SrcOff)
	b = le.AppendUint32(b, d.SrcLen)
	b = le.AppendUint32(b, d.DstOff)
	return le.AppendUint32(b, d.DstCap)
}

// ParseDesc decodes the i-th descriptor of a request message.
func ParseDesc(msg []byte, i int) Desc {
	b := msg[HeaderSize+i*DescSize:]
	return Desc{SrcOff: le.Uint32(b), SrcLen: le.Uint32(b[4:]), DstOff: le.Uint32(b[8:]), DstCap: le.Uint32(b[12:])}
}

// AppendResult appends the encoding of r.
func AppendResult(b []byte, r Result) []byte {
	b = le.AppendUint32(b, r.Status)
	b = le.AppendUint32(b, r.N)
	b = le.AppendUint32(b, r.Sum)
	return le.AppendUint32(b, 0)
}

// ParseResult decodes the i-th entry of a reply message.
func ParseResult(msg []byte, i int) Result {
	b := msg[HeaderSize+i*ResultSize:]
	return Result{Status: le.Uint32(b), N: le.Uint32(b[4:]), Sum: le.Uint32(b[8:])}
}

// Sum is the reply checksum of block index of batch seq: CRC32C over the
// little-endian seq, index, status and length, then the output bytes. The
// plugin computes it after its codec returns; the host checks it before it
// copies a byte out of shared memory, so that a reply damaged after the codec
// (a stray write, a confused plugin, a reply to another batch) is never data.
//
// The value is the standard CRC-32C (initial and final inversion, as
// hash/crc32 with the Castagnoli table); it is computed with package
// crc32c's raw form, which folds long outputs with carry-less
// multiplication where the CPU has it.
func Sum(seq uint64, index, status uint32, out []byte) uint32 {
	var h [20]byte
	le.PutUint64(h[:], seq)
	le.PutUint32(h[8:], index)
	le.PutUint32(h[12:], status)
	le.PutUint32(h[16:], uint32(len(out)))
	return ^crc32c.Update(crc32c.Update(0xffffffff, h[:]), out)
}
