package plugins

import (
	"context"
	"fmt"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/plugins/internal/wire"
)

// codec is a plugin's codec on the shared-memory data plane.
type codec struct {
	p        *Plugin
	name     string
	id       uint8
	overhead int
}

// Codec returns the plugin's codec for a ZFile algorithm name as a
// core.BatchCodec over the data plane. The name must be one of the plugin's
// configured algorithms.
func (p *Plugin) Codec(name string) (core.Codec, error) {
	ci, err := p.codecInfo(name)
	if err != nil {
		return nil, err
	}
	return &codec{p: p, name: name, id: uint8(ci.ID), overhead: ci.BoundOverhead}, nil
}

func (p *Plugin) codecInfo(name string) (wire.CodecInfo, error) {
	configured := false
	for _, a := range p.cfg.Algorithms {
		configured = configured || a == name
	}
	in, err := p.instance(context.Background())
	if err != nil {
		return wire.CodecInfo{}, err
	}
	ci, ok := findCodec(in.info, name)
	if !configured || !ok {
		return wire.CodecInfo{}, fmt.Errorf("codec plugin %s: algorithm %q is not configured for it: %w", p.cfg.Path, name, core.ErrUnsupported)
	}
	return ci, nil
}

// Name implements core.Codec.
func (c *codec) Name() string { return c.name }

// CompressBound implements core.Codec. The plugin reports the bound at its
// largest block; the overhead of the ZFile codecs' bounds grows with the
// input, so the largest block's overhead bounds every smaller block.
func (c *codec) CompressBound(n int) int { return n + c.overhead }

// Compress implements core.Codec.
func (c *codec) Compress(dst, src []byte) (int, error) {
	b := []core.CodecBlock{{Dst: dst, Src: src}}
	if err := c.p.do(wire.OpCompress, c.id, b); err != nil {
		return 0, err
	}
	return b[0].N, b[0].Err
}

// Decompress implements core.Codec.
func (c *codec) Decompress(dst, src []byte) (int, error) {
	b := []core.CodecBlock{{Dst: dst, Src: src}}
	if err := c.p.do(wire.OpDecompress, c.id, b); err != nil {
		return 0, err
	}
	return b[0].N, b[0].Err
}

// CompressBatch implements core.BatchCodec.
func (c *codec) CompressBatch(blocks []core.CodecBlock) error {
	return c.p.do(wire.OpCompress, c.id, blocks)
}

// DecompressBatch implements core.BatchCodec.
func (c *codec) DecompressBatch(blocks []core.CodecBlock) error {
	return c.p.do(wire.OpDecompress, c.id, blocks)
}

// callCodec is a plugin's codec on the control service: one gRPC call per
// block.
type callCodec struct {
	codec
}

// CallCodec returns the plugin's codec for name through the control
// service, one gRPC call per block, without the data plane. It exists for
// diagnostics and as the baseline the data plane is measured against; it
// neither retries nor restarts.
func (p *Plugin) CallCodec(name string) (core.Codec, error) {
	ci, err := p.codecInfo(name)
	if err != nil {
		return nil, err
	}
	return &callCodec{codec{p: p, name: name, id: uint8(ci.ID), overhead: ci.BoundOverhead}}, nil
}

func (c *callCodec) call(op uint8, dst, src []byte) (int, error) {
	in, err := c.p.instance(context.Background())
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.p.opts.callTimeout)
	defer cancel()
	r, err := in.ctrl.Call(ctx, &wire.CallRequest{Op: op, Codec: c.id, DstCap: uint32(len(dst)), Src: src})
	if err != nil {
		return 0, fmt.Errorf("%w: %w: %w", ErrPluginFailed, core.ErrCorrupt, err)
	}
	if r.Status != wire.StatusOK {
		if r.Status == wire.StatusCorrupt {
			return 0, fmt.Errorf("codec plugin: block does not decode or does not fit %d bytes: %w", len(dst), core.ErrCorrupt)
		}
		return 0, fmt.Errorf("%w: status %d: %w", ErrPluginFailed, r.Status, core.ErrCorrupt)
	}
	if len(r.Data) > len(dst) {
		return 0, fmt.Errorf("%w: %w: reply of %d bytes for a destination of %d", ErrPluginFailed, core.ErrCorrupt, len(r.Data), len(dst))
	}
	if wire.Sum(0, 0, r.Status, r.Data) != r.Sum {
		return 0, fmt.Errorf("%w: %w: %w: reply checksum mismatch", ErrPluginFailed, core.ErrCorrupt, core.ErrChecksum)
	}
	return copy(dst, r.Data), nil
}

// Compress implements core.Codec.
func (c *callCodec) Compress(dst, src []byte) (int, error) { return c.call(wire.OpCompress, dst, src) }

// Decompress implements core.Codec.
func (c *callCodec) Decompress(dst, src []byte) (int, error) {
	return c.call(wire.OpDecompress, dst, src)
}
