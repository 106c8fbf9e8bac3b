package prefetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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

	stop chan struct{}
	wg   sync.WaitGroup
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
// "<path>.ok". A write failure leaves the trace empty.
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
	close(r.stop)
	r.wg.Wait()
	return r.finish()
}

// Wrap returns f with every successful full read recorded as a read of
// layer index layer.
func (r *Recorder) Wrap(layer int, f core.File) core.File {
	return &recordingFile{File: f, r: r, layer: layer}
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

	mu             sync.Mutex
	done, skipped  int
	short, errored int
}

// LoadTrace reads and checks a trace file.
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
	// Done counts reads performed; Skipped records for unknown layers or
	// other operations; Short and Failed reads that returned less.
	Done, Skipped, Short, Failed int
}

// StartReplay starts concurrency workers (default 16) that pop the records
// in order and read them from layers[record.Layer].
func StartReplay(records []Record, layers []io.ReaderAt, concurrency int, log *slog.Logger) *Replayer {
	if concurrency <= 0 {
		concurrency = 16
	}
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	rp := &Replayer{records: records, log: log, cancel: cancel}
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
				if ctx.Err() != nil {
					continue
				}
				if r.Op != OpRead || int(r.Layer) >= len(layers) || layers[r.Layer] == nil || r.Count == 0 || r.Count > 64<<20 || r.Offset < 0 {
					rp.count(func() { rp.skipped++ })
					continue
				}
				if uint64(cap(buf)) < r.Count {
					buf = make([]byte, r.Count)
				}
				n, err := layers[r.Layer].ReadAt(buf[:r.Count], r.Offset)
				switch {
				case err != nil && !errors.Is(err, io.EOF):
					rp.count(func() { rp.errored++ })
					log.Debug("trace replay read failed", "layer", r.Layer, "offset", r.Offset, "err", err)
				case uint64(n) < r.Count:
					rp.count(func() { rp.short++ })
				default:
					rp.count(func() { rp.done++ })
				}
			}
		}()
	}
	return rp
}

func (rp *Replayer) count(f func()) {
	rp.mu.Lock()
	f()
	rp.mu.Unlock()
}

// Wait waits for the replay to finish and returns its counts.
func (rp *Replayer) Wait() ReplayStats {
	rp.wg.Wait()
	return rp.Stats()
}

// Stats returns the counts so far.
func (rp *Replayer) Stats() ReplayStats {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return ReplayStats{Done: rp.done, Skipped: rp.skipped, Short: rp.short, Failed: rp.errored}
}

// Close interrupts the replay and waits for the workers.
func (rp *Replayer) Close() error {
	rp.cancel()
	rp.wg.Wait()
	return nil
}
