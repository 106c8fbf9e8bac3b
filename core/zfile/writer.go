package zfile

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/overlaybd-go/overlaybd/core"
)

// Options configures a Writer. The zero value writes what
// `overlaybd-zfile` writes: LZ4, 4 KiB blocks, block CRCs, header not
// rewritten.
type Options struct {
	// Algorithm is the codec's registry name or ZFile number ("lz4",
	// "zstd", "1", "2"); empty means "lz4". A flavour's name ("lz4-go",
	// "zstd-native") selects that flavour; the file records the number
	// of the algorithm the codec's Name reports.
	Algorithm string
	// BlockSize is the uncompressed block size: a power of two from 4096
	// to 65536; 0 means 4096.
	BlockSize int
	// NoCRC omits the per-block CRC (upstream's tools always write it).
	NoCRC bool
	// OverwriteHeader rewrites the header at close with the final index
	// fields (flags 0x1B), as `overlaybd-commit -z` does; readers then
	// need not read the trailer. The destination must implement
	// io.WriterAt (NewWriter) or be given to NewWriterAt.
	OverwriteHeader bool
	// Workers is the number of goroutines compressing blocks in parallel;
	// 0 means GOMAXPROCS (at most 4), 1 compresses on the writing
	// goroutine. The output does not depend on it.
	Workers int
	// AllowUnreadable lets the writer store blocks larger than upstream
	// overlaybd can read (UpstreamMaxStored). Off by default: such a block
	// fails the write with a BlockTooLargeError. Only for tests that
	// reproduce upstream's own unreadable files.
	AllowUnreadable bool
	// Checksum overrides the checksum implementation (default: the
	// registered "crc32c").
	Checksum core.Checksum
}

// Writer compresses a stream into a ZFile. Write accepts any sizes; Close
// writes the last block, the jump table, the trailer and, if asked, the
// rewritten header. The first error is sticky: every later call returns it.
// A Writer is not safe for concurrent use; its compression workers are
// owned by it and stopped by Close or Abort.
//
// The Writer does not own the destination: after an error the caller
// removes the partial output (the envelope package's Create does that for
// files).
type Writer struct {
	opts  Options
	codec core.Codec
	algo  string
	num   int
	cs    core.Checksum
	bs    int

	out     *bufio.Writer
	wat     io.WriterAt // for the header rewrite, may be nil
	written int64       // bytes emitted to out

	cur     []byte // partial block being filled
	nblocks int64
	total   int64 // uncompressed bytes accepted
	table   []byte

	pending []*job    // in input order, not yet written
	jobs    chan *job // nil with one worker
	wg      sync.WaitGroup
	pool    sync.Pool
	err     error
	done    bool
}

type job struct {
	index int64
	in    []byte
	out   []byte
	n     int
	err   error
	ready chan struct{}
}

// offsetWriter turns an io.WriterAt into a sequential io.Writer.
type offsetWriter struct {
	w   io.WriterAt
	off int64
}

func (o *offsetWriter) Write(p []byte) (int, error) {
	n, err := o.w.WriteAt(p, o.off)
	o.off += int64(n)
	return n, err
}

// NewWriter returns a Writer that writes the ZFile sequentially to w. With
// Options.OverwriteHeader, w must also implement io.WriterAt (an *os.File
// does), and offset 0 of that interface must be the start of the ZFile.
func NewWriter(w io.Writer, opts Options) (*Writer, error) {
	wat, _ := w.(io.WriterAt)
	return newWriter(w, wat, opts)
}

// NewWriterAt returns a Writer that writes the ZFile to w from offset 0
// (e.g. a core.File).
func NewWriterAt(w io.WriterAt, opts Options) (*Writer, error) {
	return newWriter(&offsetWriter{w: w}, w, opts)
}

// CheckBlockSize reports whether bs is a block size the writer accepts.
func CheckBlockSize(bs int) error {
	if bs < MinBlockSize || bs > MaxBlockSize || bs&(bs-1) != 0 {
		return fmt.Errorf("zfile: block size %d: want a power of two from %d to %d", bs, MinBlockSize, MaxBlockSize)
	}
	return nil
}

func newWriter(w io.Writer, wat io.WriterAt, opts Options) (*Writer, error) {
	if opts.Algorithm == "" {
		opts.Algorithm = "lz4"
	}
	if opts.BlockSize == 0 {
		opts.BlockSize = DefaultBlockSize
	}
	if err := CheckBlockSize(opts.BlockSize); err != nil {
		return nil, err
	}
	if opts.OverwriteHeader && wat == nil {
		return nil, fmt.Errorf("zfile: OverwriteHeader needs a destination that implements io.WriterAt")
	}
	name, f, err := core.Codecs.Resolve(opts.Algorithm)
	if err != nil {
		return nil, fmt.Errorf("zfile: algorithm: %w", err)
	}
	codec, err := f()
	if err != nil {
		return nil, fmt.Errorf("zfile: codec %s: %w", name, err)
	}
	// A flavour's own name (e.g. "lz4-go") has no number; its codec's
	// algorithm name has.
	num, ok := core.Codecs.NumberOf(name)
	if !ok {
		num, ok = core.Codecs.NumberOf(codec.Name())
	}
	if !ok || num < 0 || num > 255 {
		return nil, fmt.Errorf("zfile: codec %q has no ZFile algorithm number", name)
	}
	cs := opts.Checksum
	if cs == nil {
		cs = checksum()
	}
	if opts.Workers <= 0 {
		opts.Workers = min(runtime.GOMAXPROCS(0), 4)
	}
	zw := &Writer{
		opts: opts, codec: codec, algo: name, num: num, cs: cs, bs: opts.BlockSize,
		out: bufio.NewWriterSize(w, 1<<20), wat: wat,
	}
	zw.cur = make([]byte, 0, zw.bs)
	bound := codec.CompressBound(zw.bs) + 4
	zw.pool.New = func() any {
		return &job{in: make([]byte, 0, zw.bs), out: make([]byte, bound), ready: make(chan struct{}, 1)}
	}
	if opts.Workers > 1 {
		zw.jobs = make(chan *job)
		for range opts.Workers {
			zw.wg.Go(func() {
				for j := range zw.jobs {
					zw.compress(j)
					j.ready <- struct{}{}
				}
			})
		}
	}
	hdr := zw.header(FlagHeader | FlagData | FlagDigest)
	if err := zw.emit(hdr.Marshal()); err != nil {
		zw.stop()
		return nil, err
	}
	return zw, nil
}

// header returns the header fields common to every slot.
func (w *Writer) header(flags uint64) *Header {
	return &Header{
		Flags: flags, BlockSize: uint32(w.bs), Algorithm: uint8(w.num), Verify: !w.opts.NoCRC,
	}
}

func (w *Writer) emit(p []byte) error {
	n, err := w.out.Write(p)
	w.written += int64(n)
	if err != nil {
		return fmt.Errorf("zfile: write at %d: %w", w.written, err)
	}
	return nil
}

// Write compresses p. It returns the number of bytes accepted.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.done {
		return 0, fmt.Errorf("zfile: write: %w", core.ErrClosed)
	}
	n := 0
	for len(p) > 0 {
		k := min(len(p), w.bs-len(w.cur))
		w.cur = append(w.cur, p[:k]...)
		p = p[k:]
		n += k
		if len(w.cur) == w.bs {
			if err := w.submit(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// ReadFrom compresses everything r returns until io.EOF.
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		if w.err != nil {
			return total, w.err
		}
		n, err := io.ReadFull(r, w.cur[len(w.cur):w.bs])
		w.cur = w.cur[:len(w.cur)+n]
		total += int64(n)
		if len(w.cur) == w.bs {
			if serr := w.submit(); serr != nil {
				return total, serr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// submit hands the full (or, at close, final) block in w.cur to the
// workers and writes the blocks that are ready, in order.
func (w *Writer) submit() error {
	j := w.pool.Get().(*job)
	j.index = w.nblocks
	j.in = append(j.in[:0], w.cur...)
	w.cur = w.cur[:0]
	w.nblocks++
	w.total += int64(len(j.in))
	if w.jobs == nil {
		w.compress(j)
		return w.store(j)
	}
	w.pending = append(w.pending, j)
	w.jobs <- j
	for len(w.pending) > 2*w.opts.Workers {
		if err := w.drainOne(); err != nil {
			return err
		}
	}
	return nil
}

func (w *Writer) drainOne() error {
	j := w.pending[0]
	<-j.ready
	w.pending[0] = nil
	w.pending = w.pending[1:]
	return w.store(j)
}

// compress fills j.out with the stored block: payload and CRC.
func (w *Writer) compress(j *job) {
	n, err := w.codec.Compress(j.out[:len(j.out)-4], j.in)
	if err != nil {
		j.err = fmt.Errorf("zfile: compress block %d: %w", j.index, err)
		return
	}
	if !w.opts.NoCRC {
		binary.LittleEndian.PutUint32(j.out[n:], w.cs.Update(BlockCRCSeed, j.out[:n]))
		n += 4
	}
	j.n, j.err = n, nil
}

// store writes a compressed block and records its length.
func (w *Writer) store(j *job) error {
	defer w.pool.Put(j)
	if j.err != nil {
		return w.fail(j.err)
	}
	if j.n > UpstreamMaxStored && !w.opts.AllowUnreadable {
		return w.fail(&BlockTooLargeError{
			Block: j.index, Offset: j.index * int64(w.bs), Stored: j.n, BlockSize: w.bs,
			Algorithm: w.algo, UpstreamAt: UpstreamMaxStored,
		})
	}
	w.table = binary.LittleEndian.AppendUint32(w.table, uint32(j.n))
	if err := w.emit(j.out[:j.n]); err != nil {
		return w.fail(err)
	}
	return nil
}

func (w *Writer) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return w.err
}

// stop ends the workers and waits for them.
func (w *Writer) stop() {
	if w.jobs != nil {
		close(w.jobs)
		w.wg.Wait()
		w.jobs = nil
	}
}

// Abort stops the workers without finishing the file. The caller removes
// the partial output.
func (w *Writer) Abort() {
	w.stop()
	w.done = true
	w.pending = nil
	w.fail(fmt.Errorf("zfile: writer aborted: %w", core.ErrClosed))
}

// Close writes the final block, the jump table and the trailer, rewrites
// the header if asked, flushes, and stops the workers. It does not close
// the destination.
func (w *Writer) Close() error {
	if w.done {
		return w.err
	}
	err := w.finish()
	w.stop()
	w.done = true
	return err
}

func (w *Writer) finish() error {
	if w.err != nil {
		return w.err
	}
	if len(w.cur) > 0 {
		if err := w.submit(); err != nil {
			return err
		}
	}
	for len(w.pending) > 0 {
		if err := w.drainOne(); err != nil {
			return err
		}
	}
	indexOff := w.written
	if err := w.emit(w.table); err != nil {
		return w.fail(err)
	}
	h := w.header(FlagData | FlagSealed | FlagDigest)
	h.IndexOffset = uint64(indexOff)
	h.IndexSize = uint64(w.nblocks)
	h.OriginalSize = uint64(w.total)
	h.IndexCRC = w.cs.Update(0, w.table)
	if err := w.emit(h.Marshal()); err != nil {
		return w.fail(err)
	}
	if err := w.out.Flush(); err != nil {
		return w.fail(fmt.Errorf("zfile: flush: %w", err))
	}
	if w.opts.OverwriteHeader {
		h.Flags = FlagHeader | FlagData | FlagHeaderOverwrite | FlagDigest
		if _, err := w.wat.WriteAt(h.Marshal(), 0); err != nil {
			return w.fail(fmt.Errorf("zfile: rewrite header: %w", err))
		}
	}
	return nil
}

// Stats returns the uncompressed bytes accepted and the compressed bytes
// emitted so far.
func (w *Writer) Stats() (in, out int64) { return w.total + int64(len(w.cur)), w.written }

var _ io.WriteCloser = (*Writer)(nil)
