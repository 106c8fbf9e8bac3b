package prefetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"sync"
	"time"

	"github.com/overlaybd-go/overlaybd/core"
)

// Recorder collects the reads of a device's lower layers and writes them
// as a trace. It owns a goroutine that watches "<P>.lock"; Close stops it.
type Recorder struct {
	path string
	log  *slog.Logger

	mu      sync.Mutex
	records []Record
	done    bool
	err     error

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// LockPollInterval is how often the recorder checks for "<P>.lock".
var LockPollInterval = time.Second

// NewRecorder starts recording into path, which must exist and be empty
// (see DetectMode). It creates "<path>.lock"; removing that file ends the
// recording early.
func NewRecorder(path string, log *slog.Logger) (*Recorder, error) {
	if log == nil {
		log = slog.Default()
	}
	lf, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
	if err != nil {
		return nil, fmt.Errorf("trace record: %w", err)
	}
	lf.Close()
	r := &Recorder{path: path, log: log, stop: make(chan struct{})}
	r.wg.Add(1)
	go r.watch()
	return r, nil
}

func (r *Recorder) watch() {
	defer r.wg.Done()
	t := time.NewTicker(LockPollInterval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			if _, err := os.Stat(r.path + ".lock"); errors.Is(err, os.ErrNotExist) {
				r.finish()
				return
			}
		}
	}
}

// add appends one read.
func (r *Recorder) add(layer int, off int64, n int) {
	r.mu.Lock()
	if !r.done {
		r.records = append(r.records, Record{Op: OpRead, Layer: uint32(layer), Count: uint64(n), Offset: off})
	}
	r.mu.Unlock()
}

// finish writes the trace once: header with checksum 0 and the records,
// then the header with the checksum; removes the lock file and creates
// "<path>.ok". A write failure leaves the trace empty (so that the next
// open records again) and removes the lock file.
func (r *Recorder) finish() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return r.err
	}
	r.done = true
	out := Encode(r.records)
	hdr := append([]byte(nil), out[:HeaderSize]...)
	for i := 16; i < 20; i++ {
		out[i] = 0
	}
	err := func() error {
		f, err := os.OpenFile(r.path, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.WriteAt(out, 0); err != nil {
			return err
		}
		if _, err := f.WriteAt(hdr, 0); err != nil {
			return err
		}
		return f.Sync()
	}()
	if err != nil {
		os.Truncate(r.path, 0)
		os.Remove(r.path + ".lock")
		r.err = fmt.Errorf("trace record %s: %w", r.path, err)
		r.log.Error("writing the trace failed", "path", r.path, "err", err)
		return r.err
	}
	os.Remove(r.path + ".lock")
	if ok, err := os.OpenFile(r.path+".ok", os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666); err == nil {
		ok.Close()
	}
	r.log.Info("trace recorded", "path", r.path, "records", len(r.records))
	return nil
}

// Records returns a copy of the reads recorded so far.
func (r *Recorder) Records() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Record(nil), r.records...)
}

// Close writes the trace (unless the lock file's removal already did) and
// stops the watcher.
func (r *Recorder) Close() error {
	r.halt()
	return r.finish()
}

// halt stops the lock watcher and waits for it.
func (r *Recorder) halt() {
	r.stopOnce.Do(func() { close(r.stop) })
	r.wg.Wait()
}

// Abort stops the recorder without writing the trace: the trace file is
// left as it was (empty, so that the next open records again) and
// "<path>.lock" is removed. It is for a device that failed to open after
// recording started. Close after Abort does nothing.
func (r *Recorder) Abort() {
	r.halt()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	r.done = true
	r.records = nil
	os.Remove(r.path + ".lock")
}

// Path returns the trace file's path.
func (r *Recorder) Path() string { return r.path }

// Wrap returns f with every successful full read recorded as a read of
// layer index layer. A file that takes batches (core.BatchFile) keeps
// taking them, and every request of a batch that completes in full is
// recorded.
func (r *Recorder) Wrap(layer int, f core.File) core.File {
	rf := &recordingFile{File: f, r: r, layer: layer}
	if bf, ok := f.(core.BatchFile); ok {
		return &recordingBatchFile{recordingFile: rf, batch: bf}
	}
	return rf
}

type recordingBatchFile struct {
	*recordingFile
	batch core.BatchFile
}

// Batch submits reqs to the wrapped file and records the reads that
// completed in full.
func (f *recordingBatchFile) Batch(reqs []core.IORequest) error {
	err := f.batch.Batch(reqs)
	for _, q := range reqs {
		if q.Op == core.OpRead && q.Err == nil && q.N == len(q.Buf) && q.N > 0 {
			f.r.add(f.layer, q.Off, q.N)
		}
	}
	return err
}

type recordingFile struct {
	core.File
	r     *Recorder
	layer int
}

func (f *recordingFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.File.ReadAt(p, off)
	if n == len(p) && (err == nil || errors.Is(err, io.EOF)) && n > 0 {
		f.r.add(f.layer, off, n)
	}
	return n, err
}

// Invalidate passes invalidations on to the wrapped file.
func (f *recordingFile) Invalidate(off, length int64) error {
	if inv, ok := f.File.(core.Invalidator); ok {
		return inv.Invalidate(off, length)
	}
	return nil
}

// Replayer replays a trace against a device's layers in the background.
// It owns its workers; Close interrupts and waits for them.
type Replayer struct {
	records []Record
	log     *slog.Logger
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	done    chan struct{}

	mu                         sync.Mutex
	read, skipped, short, fail int
}

// LoadTrace reads and checks a trace file. A file that is not a binary
// trace fails with ErrFileList, one that fails its checks with ErrBadTrace.
func LoadTrace(path string) ([]Record, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("trace %s: %w", path, err)
	}
	if !IsTrace(b) {
		return nil, fmt.Errorf("trace %s: %w", path, ErrFileList)
	}
	recs, err := Decode(b)
	if err != nil {
		return nil, fmt.Errorf("trace %s: %w", path, err)
	}
	return recs, nil
}

// ReplayStats count what a replay did.
type ReplayStats struct {
	// Done counts records read in full; Skipped records for unknown
	// layers, other operations or impossible ranges; Short records that
	// read less than their count (the layer ends first); Failed records
	// whose read failed.
	Done, Skipped, Short, Failed int
}

// DefaultConcurrency is the number of replay workers when none is given
// (upstream's default of prefetchConfig.concurrency).
const DefaultConcurrency = 16

// MaxRecordCount is the largest count a replayed record may have; larger
// ones are skipped (a read of the device is far smaller).
const MaxRecordCount = 64 << 20

// replayChunk bounds each read a worker makes, and so its buffer.
const replayChunk = 1 << 20

// StartReplay starts concurrency workers (DefaultConcurrency when <= 0)
// that pop the records in order and read them from layers[record.Layer]
// into a private buffer, in pieces of at most 1 MiB, which fills whatever
// caches lie beneath the layers. Records for layers that are nil or out of
// range, operations other than OpRead and counts of 0 or over
// MaxRecordCount are skipped; failed and short reads are counted and
// logged at debug level. Close interrupts the replay between pieces.
func StartReplay(records []Record, layers []io.ReaderAt, concurrency int, log *slog.Logger) *Replayer {
	if concurrency <= 0 {
		concurrency = DefaultConcurrency
	}
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	rp := &Replayer{records: records, log: log, cancel: cancel, done: make(chan struct{})}
	next := make(chan Record)
	rp.wg.Add(1)
	go func() {
		defer rp.wg.Done()
		defer close(next)
		for _, r := range records {
			select {
			case next <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	for range concurrency {
		rp.wg.Add(1)
		go func() {
			defer rp.wg.Done()
			var buf []byte
			for r := range next {
				if r.Op != OpRead || int64(r.Layer) >= int64(len(layers)) || layers[r.Layer] == nil ||
					r.Count == 0 || r.Count > MaxRecordCount || r.Offset < 0 || r.Offset > math.MaxInt64-int64(r.Count) {
					rp.count(&rp.skipped)
					continue
				}
				if buf == nil {
					buf = make([]byte, replayChunk)
				}
				rp.replay(ctx, layers[r.Layer], r, buf)
			}
		}()
	}
	go func() {
		rp.wg.Wait()
		st := rp.Stats()
		if ctx.Err() != nil {
			log.Info("trace replay interrupted", "records", len(records), "done", st.Done, "skipped", st.Skipped, "short", st.Short, "failed", st.Failed)
		} else {
			log.Info("trace replay finished", "records", len(records), "done", st.Done, "skipped", st.Skipped, "short", st.Short, "failed", st.Failed)
		}
		close(rp.done)
	}()
	return rp
}

// replay reads one record piece by piece.
func (rp *Replayer) replay(ctx context.Context, f io.ReaderAt, r Record, buf []byte) {
	off, left := r.Offset, int64(r.Count)
	for left > 0 {
		if ctx.Err() != nil {
			return
		}
		p := buf[:min(left, int64(len(buf)))]
		n, err := f.ReadAt(p, off)
		off += int64(n)
		left -= int64(n)
		switch {
		case err != nil && !errors.Is(err, io.EOF):
			rp.count(&rp.fail)
			rp.log.Debug("trace replay: read failed", "layer", r.Layer, "offset", off, "err", err)
			return
		case n < len(p):
			rp.count(&rp.short)
			rp.log.Debug("trace replay: short read", "layer", r.Layer, "offset", r.Offset, "count", r.Count, "read", int64(r.Count)-left)
			return
		}
	}
	rp.count(&rp.read)
}

func (rp *Replayer) count(c *int) {
	rp.mu.Lock()
	*c++
	rp.mu.Unlock()
}

// Done is closed when every worker has returned: the replay finished or
// was interrupted.
func (rp *Replayer) Done() <-chan struct{} { return rp.done }

// Wait waits for the replay to finish and returns its counts.
func (rp *Replayer) Wait() ReplayStats {
	<-rp.done
	return rp.Stats()
}

// Len returns the number of records in the trace.
func (rp *Replayer) Len() int { return len(rp.records) }

// Stats returns the counts so far.
func (rp *Replayer) Stats() ReplayStats {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return ReplayStats{Done: rp.read, Skipped: rp.skipped, Short: rp.short, Failed: rp.fail}
}

// Close interrupts the replay and waits for the workers. Reads already
// under way finish first (each is at most 1 MiB).
func (rp *Replayer) Close() error {
	rp.cancel()
	<-rp.done
	return nil
}
