package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"os"
	"sync"
	"syscall"

	"github.com/overlaybd-go/overlaybd/core"
)

const (
	// maxExtents bounds the descriptors of one BLOCK_STATUS reply.
	maxExtents = 16 << 10
	// cacheChunk is the read size used to serve NBD_CMD_CACHE.
	cacheChunk = 1 << 20
	// zeroChunk is the size of the shared zero buffer used to zero ranges
	// of files without a ZeroWriter.
	zeroChunk = 1 << 20
	// inlineReadMax bounds the reads of a FastReads export served on the
	// reader goroutine.
	inlineReadMax = 64 << 10
)

var zeroBuf = make([]byte, zeroChunk)

// transmit serves requests until the client disconnects, the stream breaks
// or the server stops the connection; then it waits for requests in flight.
func (c *conn) transmit() {
	c.jobs = make(chan job)
	defer func() {
		c.inflight.Wait()
		close(c.jobs)
		c.workers.Wait()
	}()
	var hdr [requestHeaderLen]byte
	for {
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			if !errors.Is(err, io.EOF) && !c.isStopping() && !c.broken.Load() {
				c.log.Debug("connection ended", "err", err)
			}
			return
		}
		req, err := parseRequest(hdr[:])
		if err != nil {
			c.log.Warn("dropping connection", "err", err)
			return
		}
		// Reserve the request's buffer space before reading its payload.
		weight := int64(0)
		if (req.typ == cmdWrite || req.typ == cmdRead) && req.length <= c.s.opts.MaxRequest {
			weight = int64(req.length)
		} else if req.typ == cmdCache {
			weight = cacheChunk
		}
		if weight > 0 {
			if err := c.bytes.Acquire(context.Background(), weight); err != nil {
				return
			}
		}
		release := func() {
			if weight > 0 {
				c.bytes.Release(weight)
			}
		}
		var payload []byte
		if req.typ == cmdWrite {
			if req.length > c.s.opts.MaxRequest {
				// Skip the payload to keep the stream in step, then
				// refuse the request.
				if _, err := io.CopyN(io.Discard, c.br, int64(req.length)); err != nil {
					return
				}
				c.replyError(req, errnoOverflow, fmt.Sprintf("write of %d bytes exceeds the maximum of %d", req.length, c.s.opts.MaxRequest))
				continue
			}
			payload = c.s.bufs.get(int(req.length))
			if _, err := io.ReadFull(c.br, payload); err != nil {
				c.s.bufs.put(payload)
				release()
				c.log.Debug("client left in the middle of a write", "err", err)
				return
			}
		}
		if req.typ == cmdDisc {
			release()
			return
		}
		if errno, msg := c.check(req); errno != 0 {
			c.s.bufs.put(payload)
			release()
			c.replyError(req, errno, msg)
			continue
		}
		c.sem <- struct{}{}
		c.inflight.Add(1)
		j := job{req: req, payload: payload, release: release}
		if c.x.FastReads && req.typ == cmdRead && req.length <= inlineReadMax && c.br.Buffered() < requestHeaderLen {
			// Nothing else to read yet: serve the read here rather
			// than wake a worker and then wait for the client.
			c.run(j)
			continue
		}
		c.dispatch(j)
	}
}

// job is one validated request handed to a worker.
type job struct {
	req     request
	payload []byte
	release func()
}

// dispatch hands j to an idle worker, or starts a new one. Workers live as
// long as the connection, so that requests run on goroutines whose stacks
// have already grown; there are never more than MaxInFlight of them, as
// the in-flight semaphore bounds the jobs.
func (c *conn) dispatch(j job) {
	select {
	case c.jobs <- j:
		return
	default:
	}
	if c.nworkers < c.s.opts.MaxInFlight {
		c.nworkers++
		c.workers.Add(1)
		go c.worker(j)
		return
	}
	c.jobs <- j
}

// worker runs jobs until the connection's job channel closes.
func (c *conn) worker(j job) {
	defer c.workers.Done()
	for {
		c.run(j)
		var ok bool
		if j, ok = <-c.jobs; !ok {
			return
		}
	}
}

// run executes one job and releases what it holds.
func (c *conn) run(j job) {
	defer func() {
		c.s.bufs.put(j.payload)
		j.release()
		<-c.sem
		c.inflight.Done()
	}()
	c.execute(j.req, j.payload)
}

// check validates a request against the export and the negotiated state,
// returning a protocol error and a message when it must be refused.
func (c *conn) check(r request) (uint32, string) {
	x := c.x
	allowed := uint16(0)
	switch r.typ {
	case cmdRead:
		if c.structured {
			allowed = cmdFlagDF
		}
	case cmdWrite, cmdTrim:
		allowed = cmdFlagFUA
	case cmdWriteZeroes:
		allowed = cmdFlagFUA | cmdFlagNoHole
	case cmdBlockStatus:
		allowed = cmdFlagReqOne
	case cmdFlush, cmdCache:
	default:
		return errnoInval, fmt.Sprintf("unknown command %d", r.typ)
	}
	if r.flags&^allowed != 0 {
		return errnoInval, fmt.Sprintf("flags %#x not valid for command %d", r.flags, r.typ)
	}
	write := r.typ == cmdWrite || r.typ == cmdTrim || r.typ == cmdWriteZeroes
	if write && x.ReadOnly {
		return errnoPerm, "export is read-only"
	}
	if r.typ == cmdFlush {
		return 0, ""
	}
	if r.typ == cmdBlockStatus && !c.meta {
		return errnoInval, "no metadata context was negotiated"
	}
	if r.typ == cmdRead && r.length > c.s.opts.MaxRequest {
		return errnoOverflow, fmt.Sprintf("read of %d bytes exceeds the maximum of %d", r.length, c.s.opts.MaxRequest)
	}
	end := r.offset + uint64(r.length)
	if end < r.offset || end > x.size {
		if write {
			return errnoNoSpc, fmt.Sprintf("range [%d, %d) beyond the end of the export (%d bytes)", r.offset, end, x.size)
		}
		return errnoInval, fmt.Sprintf("range [%d, %d) beyond the end of the export (%d bytes)", r.offset, end, x.size)
	}
	if r.typ == cmdBlockStatus && r.length == 0 {
		return errnoInval, "block status of an empty range"
	}
	return 0, ""
}

// execute performs a valid request and replies to it.
func (c *conn) execute(r request, payload []byte) {
	off := int64(r.offset)
	n := int64(r.length)
	c.s.stats.byCmd[r.typ].Add(1) // r.typ was checked
	var err error
	switch r.typ {
	case cmdRead:
		c.read(r)
		return
	case cmdBlockStatus:
		c.blockStatus(r)
		return
	case cmdWrite:
		err = c.write(payload, off)
	case cmdFlush:
		if !c.x.ReadOnly {
			err = c.x.File.Sync()
		}
	case cmdTrim:
		err = c.trim(off, n)
	case cmdWriteZeroes:
		err = c.writeZeroes(off, n, r.flags&cmdFlagNoHole != 0)
	case cmdCache:
		err = c.cache(off, n)
	}
	if err == nil && r.flags&cmdFlagFUA != 0 {
		err = c.x.File.Sync()
	}
	if err != nil {
		c.log.Warn("request failed", "cmd", r.typ, "offset", off, "length", n, "err", err)
		c.replyError(r, errnoOf(err), err.Error())
		return
	}
	if r.typ == cmdWrite {
		c.s.stats.writeBytes.Add(uint64(len(payload)))
	}
	c.replyOK(r)
}

// aligned reports whether [off, off+n) meets the file's alignment.
func (x *export) aligned(off, n int64) bool {
	a := int64(x.Alignment)
	return off%a == 0 && n%a == 0
}

// widen returns the smallest aligned range holding [off, off+n), clipped to
// the export's size.
func (x *export) widen(off, n int64) (int64, int64) {
	a := int64(x.Alignment)
	s := off / a * a
	e := min((off+n+a-1)/a*a, int64(x.size))
	return s, e - s
}

// readAt reads exactly len(p) bytes at off, widening unaligned reads.
func (c *conn) readAt(p []byte, off int64) error {
	x := c.x
	if x.aligned(off, int64(len(p))) {
		return readFull(x.File, p, off)
	}
	s, l := x.widen(off, int64(len(p)))
	buf := c.s.bufs.get(int(l))
	defer c.s.bufs.put(buf)
	if err := readFull(x.File, buf, s); err != nil {
		return err
	}
	copy(p, buf[off-s:])
	return nil
}

// write writes p at off; unaligned writes are read-modify-write under the
// export's exclusive lock.
func (c *conn) write(p []byte, off int64) error {
	x := c.x
	if x.aligned(off, int64(len(p))) {
		x.rmw.RLock()
		defer x.rmw.RUnlock()
		_, err := x.File.WriteAt(p, off)
		return err
	}
	x.rmw.Lock()
	defer x.rmw.Unlock()
	s, l := x.widen(off, int64(len(p)))
	buf := c.s.bufs.get(int(l))
	defer c.s.bufs.put(buf)
	if err := readFull(x.File, buf, s); err != nil {
		return err
	}
	copy(buf[off-s:], p)
	_, err := x.File.WriteAt(buf, s)
	return err
}

// trim discards the aligned part of the range (a trim is a hint).
func (c *conn) trim(off, n int64) error {
	x := c.x
	if x.discard == nil {
		return nil
	}
	a := int64(x.Alignment)
	s, e := (off+a-1)/a*a, (off+n)/a*a
	if e <= s {
		return nil
	}
	x.rmw.RLock()
	defer x.rmw.RUnlock()
	return x.discard.Discard(s, e-s)
}

// writeZeroes zeroes the range: unaligned head and tail by read-modify-write,
// the aligned middle with the file's ZeroWriter (unless noHole) or by
// writing zeros.
func (c *conn) writeZeroes(off, n int64, noHole bool) error {
	x := c.x
	a := int64(x.Alignment)
	end := off + n
	h := min((off+a-1)/a*a, end)
	t := max(end/a*a, h)
	if h > off {
		if err := c.write(zeroBuf[:h-off], off); err != nil {
			return err
		}
	}
	if end > t {
		if err := c.write(zeroBuf[:end-t], t); err != nil {
			return err
		}
	}
	if t <= h {
		return nil
	}
	x.rmw.RLock()
	defer x.rmw.RUnlock()
	if x.zeroer != nil && !noHole {
		return x.zeroer.WriteZeroes(h, t-h)
	}
	for pos := h; pos < t; {
		k := min(t-pos, zeroChunk)
		if _, err := x.File.WriteAt(zeroBuf[:k], pos); err != nil {
			return err
		}
		pos += k
	}
	return nil
}

// cache reads the range so that the layers below (remote caches) hold it.
func (c *conn) cache(off, n int64) error {
	off, n = c.x.widen(off, n)
	buf := c.s.bufs.get(int(min(n, cacheChunk)))
	defer c.s.bufs.put(buf)
	for n > 0 {
		k := min(n, int64(len(buf)))
		if err := readFull(c.x.File, buf[:k], off); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}

// readFull reads exactly len(p) bytes at off; io.EOF after a full read is
// success.
func readFull(f io.ReaderAt, p []byte, off int64) error {
	n, err := f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = fmt.Errorf("short read of %d/%d bytes at %d: %w", n, len(p), off, io.ErrUnexpectedEOF)
	}
	return err
}

func (c *conn) read(r request) {
	buf := c.s.bufs.get(int(r.length))
	defer c.s.bufs.put(buf)
	if err := c.readAt(buf, int64(r.offset)); err != nil {
		c.log.Warn("read failed", "offset", r.offset, "length", r.length, "err", err)
		c.replyError(r, errnoOf(err), err.Error())
		return
	}
	c.s.stats.readBytes.Add(uint64(r.length))
	if !c.structured {
		var h [16]byte
		putSimpleReply(h[:], 0, r.handle)
		c.send(h[:], buf)
		return
	}
	if r.length == 0 {
		var h [20]byte
		putChunkHeader(h[:], replyFlagDone, replyTypeNone, r.handle, 0)
		c.send(h[:])
		return
	}
	var h [28]byte
	putChunkHeader(h[:], replyFlagDone, replyTypeOffsetData, r.handle, 8+r.length)
	binary.BigEndian.PutUint64(h[20:], r.offset)
	c.send(h[:], buf)
}

func (c *conn) blockStatus(r request) {
	exts, err := c.extents(int64(r.offset), int64(r.length), r.flags&cmdFlagReqOne != 0)
	if err != nil {
		c.log.Warn("block status failed", "offset", r.offset, "length", r.length, "err", err)
		c.replyError(r, errnoOf(err), err.Error())
		return
	}
	b := make([]byte, 20+4+8*len(exts))
	putChunkHeader(b, replyFlagDone, replyTypeBlockStatus, r.handle, uint32(4+8*len(exts)))
	binary.BigEndian.PutUint32(b[20:], metaContextAllocationID)
	for i, e := range exts {
		binary.BigEndian.PutUint32(b[24+8*i:], uint32(e.Length))
		binary.BigEndian.PutUint32(b[28+8*i:], uint32(e.Flags))
	}
	c.send(b)
}

// extents describes [off, off+n) for base:allocation: contiguous extents
// from off, merged when their flags agree, at most maxExtents (one with
// reqOne). Files that cannot tell report everything as data.
func (c *conn) extents(off, n int64, reqOne bool) ([]core.Extent, error) {
	if c.x.statuser == nil {
		return []core.Extent{{Offset: off, Length: n}}, nil
	}
	s, l := c.x.widen(off, n)
	out, err := c.alignedExtents(s, l, reqOne)
	if err != nil || s == off && l == n {
		return out, err
	}
	// Cut the widened answer back to the request.
	end := off + n
	cut := out[:0]
	for _, e := range out {
		st, en := max(e.Offset, off), min(e.Offset+e.Length, end)
		if en > st {
			cut = append(cut, core.Extent{Offset: st, Length: en - st, Flags: e.Flags})
		}
	}
	if len(cut) == 0 {
		return nil, fmt.Errorf("block status at %d: no usable extent: %w", off, core.ErrCorrupt)
	}
	return cut, nil
}

// alignedExtents is extents for a range that meets the file's alignment.
func (c *conn) alignedExtents(off, n int64, reqOne bool) ([]core.Extent, error) {
	end := off + n
	var out []core.Extent
	pos := off
	for pos < end && len(out) < maxExtents {
		got, err := c.x.statuser.BlockStatus(pos, end-pos)
		if err != nil {
			return nil, err
		}
		progressed := false
		for _, e := range got {
			if e.Offset != pos || e.Length <= 0 {
				break // not contiguous: stop here, the client asks again
			}
			l := min(e.Length, end-pos)
			fl := e.Flags & (core.ExtentHole | core.ExtentZero)
			if k := len(out); k > 0 && out[k-1].Flags == fl {
				out[k-1].Length += l
			} else {
				if len(out) == maxExtents {
					break
				}
				out = append(out, core.Extent{Offset: pos, Length: l, Flags: fl})
			}
			pos += l
			progressed = true
			if pos >= end {
				break
			}
		}
		if !progressed || reqOne {
			break
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("block status at %d: no usable extent: %w", off, core.ErrCorrupt)
	}
	if reqOne {
		out = out[:1]
	}
	return out, nil
}

// replyOK sends a successful reply without data.
func (c *conn) replyOK(r request) {
	if c.structured {
		var h [20]byte
		putChunkHeader(h[:], replyFlagDone, replyTypeNone, r.handle, 0)
		c.send(h[:])
		return
	}
	var h [16]byte
	putSimpleReply(h[:], 0, r.handle)
	c.send(h[:])
}

// replyError sends an error reply; structured replies carry msg.
func (c *conn) replyError(r request, errno uint32, msg string) {
	c.s.stats.errors.Add(1)
	if !c.structured {
		var h [16]byte
		putSimpleReply(h[:], errno, r.handle)
		c.send(h[:])
		return
	}
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	b := make([]byte, 26+len(msg))
	putChunkHeader(b, replyFlagDone, replyTypeError, r.handle, uint32(6+len(msg)))
	binary.BigEndian.PutUint32(b[20:], errno)
	binary.BigEndian.PutUint16(b[24:], uint16(len(msg)))
	copy(b[26:], msg)
	c.send(b)
}

// writeQueue batches the replies of concurrent requests: a sender queues
// its reply; if no write is under way it becomes the writer and sends every
// queued reply with one writev; otherwise it waits until a writer has sent
// its reply. Senders return only when their buffers have been written.
type writeQueue struct {
	mu      sync.Mutex
	cond    sync.Cond
	pending net.Buffers
	spare   net.Buffers
	queued  uint64 // replies queued so far
	written uint64 // replies written (or dropped) so far
	writing bool
}

// send writes one reply atomically with respect to other replies. A failed
// write breaks the connection: the reader stops, requests in flight finish,
// and later replies are dropped.
func (c *conn) send(parts ...[]byte) {
	q := &c.wq
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.cond.L == nil {
		q.cond.L = &q.mu
	}
	if c.broken.Load() {
		return
	}
	q.pending = append(q.pending, parts...)
	q.queued++
	me := q.queued
	for q.writing && q.written < me {
		q.cond.Wait()
	}
	if q.written >= me {
		return // a writer sent it
	}
	// Become the writer of everything queued, this reply included.
	q.writing = true
	batch, upto := q.pending, q.queued
	q.pending = q.spare[:0]
	q.mu.Unlock()
	bufs := batch // WriteTo consumes its receiver
	_, err := bufs.WriteTo(c.nc)
	q.mu.Lock()
	clear(batch)
	q.spare = batch[:0]
	if err != nil && !c.broken.Swap(true) {
		c.log.Debug("reply failed, closing connection", "err", err)
		c.nc.Close()
	}
	q.written = upto
	if c.broken.Load() {
		q.pending = q.pending[:0]
		q.written = q.queued // nothing more will be written
	}
	q.writing = false
	q.cond.Broadcast()
}

func putSimpleReply(b []byte, errno uint32, handle uint64) {
	binary.BigEndian.PutUint32(b[0:], magicSimpleReply)
	binary.BigEndian.PutUint32(b[4:], errno)
	binary.BigEndian.PutUint64(b[8:], handle)
}

func putChunkHeader(b []byte, flags, typ uint16, handle uint64, length uint32) {
	binary.BigEndian.PutUint32(b[0:], magicStructReply)
	binary.BigEndian.PutUint16(b[4:], flags)
	binary.BigEndian.PutUint16(b[6:], typ)
	binary.BigEndian.PutUint64(b[8:], handle)
	binary.BigEndian.PutUint32(b[16:], length)
}

// errnoOf maps an error of the storage stack to an NBD error value.
func errnoOf(err error) uint32 {
	switch {
	case errors.Is(err, core.ErrReadOnly), errors.Is(err, os.ErrPermission):
		return errnoPerm
	case errors.Is(err, core.ErrOutOfRange):
		return errnoInval
	case errors.Is(err, core.ErrUnsupported):
		return errnoNotSup
	case errors.Is(err, core.ErrClosed):
		return errnoShutdown
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return errnoNoSpc
	case errors.Is(err, syscall.ENOMEM):
		return errnoNoMem
	}
	return errnoIO
}

// bufferPool recycles request buffers in power-of-two size classes from
// 4 KiB up.
type bufferPool struct {
	classes [32]sync.Pool
}

const minBufShift = 12

func (p *bufferPool) get(n int) []byte {
	if n == 0 {
		return nil
	}
	cls := 0
	if n > 1<<minBufShift {
		cls = bits.Len(uint(n-1)) - minBufShift
	}
	if v := p.classes[cls].Get(); v != nil {
		return (*(v.(*[]byte)))[:n]
	}
	return make([]byte, n, 1<<(cls+minBufShift))
}

func (p *bufferPool) put(b []byte) {
	if cap(b) < 1<<minBufShift || cap(b)&(cap(b)-1) != 0 {
		return
	}
	cls := bits.Len(uint(cap(b))) - 1 - minBufShift
	b = b[:0]
	p.classes[cls].Put(&b)
}
