package wire

import (
	"context"
	"encoding"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	grpcencoding "google.golang.org/grpc/encoding"
)

// The control service is gRPC over go-plugin's connection. Its messages are
// small Go structs with their own encoding (JSON for the rare control
// messages, a fixed binary layout for Call), selected per call by the gRPC
// content subtype CodecName, so no generated code is needed on either side.

// CodecName is the gRPC content subtype of the control service's messages.
const CodecName = "overlaybd-codec-plugin-v1"

// ServiceName is the gRPC name of the control service.
const ServiceName = "overlaybd.codecplugin.v1.Control"

func init() { grpcencoding.RegisterCodec(messageCodec{}) }

type messageCodec struct{}

func (messageCodec) Name() string { return CodecName }

func (messageCodec) Marshal(v any) ([]byte, error) {
	if m, ok := v.(encoding.BinaryMarshaler); ok {
		return m.MarshalBinary()
	}
	return json.Marshal(v)
}

func (messageCodec) Unmarshal(data []byte, v any) error {
	if m, ok := v.(encoding.BinaryUnmarshaler); ok {
		return m.UnmarshalBinary(data)
	}
	return json.Unmarshal(data, v)
}

// Empty is the request of Info and Stats.
type Empty struct{}

// CodecInfo describes one codec a plugin serves.
type CodecInfo struct {
	// Name is the ZFile codec name, "lz4" or "zstd".
	Name string `json:"name"`
	// ID is the ZFile algorithm number: 1 lz4, 2 zstd.
	ID int `json:"id"`
	// MaxBlock is the largest block the plugin accepts.
	MaxBlock int `json:"maxBlock"`
	// BoundOverhead is CompressBound(MaxBlock) - MaxBlock; the host bounds
	// compressed blocks of up to MaxBlock bytes by n + BoundOverhead.
	BoundOverhead int `json:"boundOverhead"`
}

// Info is the plugin's description of itself.
type Info struct {
	// Protocol is the wire protocol version the plugin speaks.
	Protocol int `json:"protocol"`
	// Version is the plugin's own version string, free form.
	Version string `json:"version"`
	// MaxBatch is the largest number of blocks per doorbell message.
	MaxBatch int `json:"maxBatch"`
	// Codecs are the codecs served.
	Codecs []CodecInfo `json:"codecs"`
}

// CodecStats counts what a plugin did with one codec since it started.
type CodecStats struct {
	Decompressed      uint64 `json:"decompressed"`
	DecompressedBytes uint64 `json:"decompressedBytes"`
	Compressed        uint64 `json:"compressed"`
	CompressedBytes   uint64 `json:"compressedBytes"`
	Errors            uint64 `json:"errors"`
}

// Stats are a plugin's counters since it started.
type Stats struct {
	// Batches counts doorbell messages served.
	Batches uint64 `json:"batches"`
	// Calls counts blocks served through the control service's Call.
	Calls uint64 `json:"calls"`
	// Codecs holds the counters of each codec by name.
	Codecs map[string]CodecStats `json:"codecs"`
}

// CallRequest asks for one block through the control service itself: one
// gRPC round trip per block. The data plane is the fast path; Call exists for
// diagnostics and as the baseline the data plane is measured against.
type CallRequest struct {
	Op     uint8
	Codec  uint8
	DstCap uint32
	Src    []byte
}

// MarshalBinary encodes r.
func (r *CallRequest) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 6+len(r.Src))
	b = append(b, r.Op, r.Codec)
	b = binary.LittleEndian.AppendUint32(b, r.DstCap)
	return append(b, r.Src...), nil
}

// UnmarshalBinary decodes r, copying the input.
func (r *CallRequest) UnmarshalBinary(b []byte) error {
	if len(b) < 6 {
		return errors.New("call request too short")
	}
	r.Op, r.Codec = b[0], b[1]
	r.DstCap = binary.LittleEndian.Uint32(b[2:])
	r.Src = append([]byte(nil), b[6:]...)
	return nil
}

// CallReply is the answer to a CallRequest; Sum is the reply checksum with
// seq 0 and index 0.
type CallReply struct {
	Status uint32
	Sum    uint32
	Data   []byte
}

// MarshalBinary encodes r.
func (r *CallReply) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 8+len(r.Data))
	b = binary.LittleEndian.AppendUint32(b, r.Status)
	b = binary.LittleEndian.AppendUint32(b, r.Sum)
	return append(b, r.Data...), nil
}

// UnmarshalBinary decodes r, copying the input.
func (r *CallReply) UnmarshalBinary(b []byte) error {
	if len(b) < 8 {
		return errors.New("call reply too short")
	}
	r.Status = binary.LittleEndian.Uint32(b)
	r.Sum = binary.LittleEndian.Uint32(b[4:])
	r.Data = append([]byte(nil), b[8:]...)
	return nil
}

// ControlServer is what a plugin serves on the control service.
type ControlServer interface {
	Info(context.Context) (*Info, error)
	Stats(context.Context) (*Stats, error)
	Call(context.Context, *CallRequest) (*CallReply, error)
}

func handler[Req any, Resp any](name string, call func(ControlServer, context.Context, *Req) (*Resp, error)) grpc.MethodDesc {
	return grpc.MethodDesc{
		MethodName: name,
		Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := new(Req)
			if err := dec(in); err != nil {
				return nil, err
			}
			s := srv.(ControlServer)
			if icpt == nil {
				return call(s, ctx, in)
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/" + ServiceName + "/" + name}
			return icpt(ctx, in, info, func(ctx context.Context, req any) (any, error) {
				return call(s, ctx, req.(*Req))
			})
		},
	}
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*ControlServer)(nil),
	Methods: []grpc.MethodDesc{
		handler("Info", func(s ControlServer, ctx context.Context, _ *Empty) (*Info, error) { return s.Info(ctx) }),
		handler("Stats", func(s ControlServer, ctx context.Context, _ *Empty) (*Stats, error) { return s.Stats(ctx) }),
		handler("Call", func(s ControlServer, ctx context.Context, r *CallRequest) (*CallReply, error) { return s.Call(ctx, r) }),
	},
}

// ControlClient calls a plugin's control service.
type ControlClient struct {
	conn *grpc.ClientConn
}

func (c *ControlClient) invoke(ctx context.Context, method string, in, out any) error {
	return c.conn.Invoke(ctx, "/"+ServiceName+"/"+method, in, out, grpc.CallContentSubtype(CodecName))
}

// Info asks the plugin to describe itself.
func (c *ControlClient) Info(ctx context.Context) (*Info, error) {
	var out Info
	if err := c.invoke(ctx, "Info", &Empty{}, &out); err != nil {
		return nil, fmt.Errorf("control Info: %w", err)
	}
	return &out, nil
}

// Stats asks for the plugin's counters.
func (c *ControlClient) Stats(ctx context.Context) (*Stats, error) {
	var out Stats
	if err := c.invoke(ctx, "Stats", &Empty{}, &out); err != nil {
		return nil, fmt.Errorf("control Stats: %w", err)
	}
	return &out, nil
}

// Call processes one block through the control service.
func (c *ControlClient) Call(ctx context.Context, r *CallRequest) (*CallReply, error) {
	var out CallReply
	if err := c.invoke(ctx, "Call", r, &out); err != nil {
		return nil, fmt.Errorf("control Call: %w", err)
	}
	return &out, nil
}

// GRPCPlugin is the go-plugin plugin of the control service. A plugin sets
// Impl; the host leaves it nil and dispenses a *ControlClient.
type GRPCPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	Impl ControlServer
}

// GRPCServer registers the control service.
func (p *GRPCPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	if p.Impl == nil {
		return errors.New("codec plugin: no control server")
	}
	s.RegisterService(&serviceDesc, p.Impl)
	return nil
}

// GRPCClient returns a *ControlClient on conn.
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, conn *grpc.ClientConn) (any, error) {
	return &ControlClient{conn: conn}, nil
}

// PluginSet is the go-plugin plugin set of a codec plugin.
func PluginSet(server ControlServer) goplugin.PluginSet {
	return goplugin.PluginSet{PluginName: &GRPCPlugin{Impl: server}}
}
