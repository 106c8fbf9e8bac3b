package core

// CodecBlock is one block of a batched codec call: Src is read, the result is
// written to the front of Dst, and N and Err report the outcome of this block
// alone.
type CodecBlock struct {
	Dst, Src []byte
	// N is the length of the result written to Dst.
	N int
	// Err is this block's own error (one wrapping ErrCorrupt for input that
	// does not decode); nil when the block succeeded.
	Err error
}

// BatchCodec is an optional capability of a Codec: it compresses or
// decompresses many blocks in one call, which lets a codec that lives across
// a process boundary pay its round trip once per batch. The returned error
// reports a failure of the whole call (every block failed); otherwise each
// block's outcome is in its N and Err.
type BatchCodec interface {
	Codec
	CompressBatch(blocks []CodecBlock) error
	DecompressBatch(blocks []CodecBlock) error
}

// DecompressBatch decompresses blocks with c, in one call when c is a
// BatchCodec and block by block otherwise. It returns the first error, of
// the call or of a block.
func DecompressBatch(c Codec, blocks []CodecBlock) error {
	if bc, ok := c.(BatchCodec); ok {
		if err := bc.DecompressBatch(blocks); err != nil {
			return err
		}
	} else {
		for i := range blocks {
			b := &blocks[i]
			b.N, b.Err = c.Decompress(b.Dst, b.Src)
		}
	}
	for i := range blocks {
		if blocks[i].Err != nil {
			return blocks[i].Err
		}
	}
	return nil
}

// CompressBatch compresses blocks with c, in one call when c is a BatchCodec
// and block by block otherwise. It returns the first error, of the call or
// of a block.
func CompressBatch(c Codec, blocks []CodecBlock) error {
	if bc, ok := c.(BatchCodec); ok {
		if err := bc.CompressBatch(blocks); err != nil {
			return err
		}
	} else {
		for i := range blocks {
			b := &blocks[i]
			b.N, b.Err = c.Compress(b.Dst, b.Src)
		}
	}
	for i := range blocks {
		if blocks[i].Err != nil {
			return blocks[i].Err
		}
	}
	return nil
}

// BatchMinimum is an optional method of a BatchCodec: the fewest blocks
// for which one batched call is worth more than calls block by block. A
// codec in the process saves only its per-call overhead, which a few
// blocks do not repay; a codec across a process boundary saves a round
// trip from two blocks on, which is what callers assume without it.
type BatchMinimum interface {
	MinBatch() int
}
