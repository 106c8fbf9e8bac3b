package metrics

import (
	"errors"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/overlaybd-go/overlaybd/core"
)

// Operation labels of the per-device metrics.
const (
	OpRead        = "read"
	OpWrite       = "write"
	OpSync        = "sync"
	OpDiscard     = "discard"
	OpWriteZeroes = "write_zeroes"
)

const (
	opRead = iota
	opWrite
	opSync
	opDiscard
	opWriteZeroes
	numOps
)

var opNames = [numOps]string{OpRead, OpWrite, OpSync, OpDiscard, OpWriteZeroes}

// devCounters are one device's resolved series.
type devCounters struct {
	bytes   [numOps]prometheus.Counter
	ops     [numOps]prometheus.Counter
	errs    [numOps]prometheus.Counter
	latency [numOps]prometheus.Observer
}

// File is a core.File that counts its IO: per device (bytes, requests,
// errors, latency) when made by Metrics.WrapFile, in one of upstream's meter
// sets when made by MeterFile. The value returned by those functions also
// implements core.Discarder, core.ZeroWriter, core.BlockStatuser and
// core.BatchFile exactly when the wrapped file does, so frontends advertise
// the same features.
type File struct {
	core.File
	meter *Meter
	dev   *devCounters
}

// WrapFile returns f counting its IO under device=device. It returns f itself
// when m is nil. Call DeleteDevice when the device goes away.
func (m *Metrics) WrapFile(device string, f core.File) core.File {
	if m == nil {
		return f
	}
	d := &devCounters{}
	for i, op := range opNames {
		d.bytes[i] = m.devBytes.WithLabelValues(device, op)
		d.ops[i] = m.devOps.WithLabelValues(device, op)
		d.errs[i] = m.devErrors.WithLabelValues(device, op)
		d.latency[i] = m.devLatency.WithLabelValues(device, op)
	}
	return wrap(&File{File: f, dev: d})
}

func (f *File) done(op int, n int, err error, start time.Time) {
	if f.dev == nil {
		return
	}
	f.dev.ops[op].Inc()
	f.dev.latency[op].Observe(time.Since(start).Seconds())
	if n > 0 {
		f.dev.bytes[op].Add(float64(n))
	}
	if err != nil && !(op == opRead && errors.Is(err, io.EOF)) {
		f.dev.errs[op].Inc()
	}
}

// ReadAt reads from the wrapped file and counts the read.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	var ms time.Time
	if f.meter != nil {
		ms = f.meter.Start()
	}
	start := time.Now()
	n, err := f.File.ReadAt(p, off)
	f.done(opRead, n, err, start)
	if f.meter != nil {
		merr := err
		if errors.Is(err, io.EOF) {
			merr = nil
		}
		f.meter.Done(ms, n, merr)
	}
	return n, err
}

// WriteAt writes to the wrapped file and counts the write.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	start := time.Now()
	n, err := f.File.WriteAt(p, off)
	f.done(opWrite, n, err, start)
	return n, err
}

// Sync syncs the wrapped file and counts the sync.
func (f *File) Sync() error {
	start := time.Now()
	err := f.File.Sync()
	f.done(opSync, 0, err, start)
	return err
}

// Unwrap returns the wrapped file.
func (f *File) Unwrap() core.File { return f.File }

type discarder struct{ f *File }

func (d discarder) Discard(off, length int64) error {
	start := time.Now()
	err := d.f.File.(core.Discarder).Discard(off, length)
	d.f.done(opDiscard, int(length), err, start)
	return err
}

type zeroWriter struct{ f *File }

func (z zeroWriter) WriteZeroes(off, length int64) error {
	start := time.Now()
	err := z.f.File.(core.ZeroWriter).WriteZeroes(off, length)
	z.f.done(opWriteZeroes, int(length), err, start)
	return err
}

type blockStatuser struct{ f *File }

func (b blockStatuser) BlockStatus(off, length int64) ([]core.Extent, error) {
	return b.f.File.(core.BlockStatuser).BlockStatus(off, length)
}

type batcher struct{ f *File }

func (b batcher) Batch(reqs []core.IORequest) error {
	start := time.Now()
	err := b.f.File.(core.BatchFile).Batch(reqs)
	if b.f.dev != nil {
		for i := range reqs {
			op := opRead
			if reqs[i].Op != core.OpRead {
				op = opWrite
			}
			rerr := reqs[i].Err
			if rerr == nil {
				rerr = err
			}
			b.f.done(op, reqs[i].N, rerr, start)
		}
	}
	return err
}

// wrap returns f with exactly the optional interfaces its wrapped file has.
func wrap(f *File) core.File {
	mask := 0
	if _, ok := f.File.(core.Discarder); ok {
		mask |= 1
	}
	if _, ok := f.File.(core.ZeroWriter); ok {
		mask |= 2
	}
	if _, ok := f.File.(core.BlockStatuser); ok {
		mask |= 4
	}
	if _, ok := f.File.(core.BatchFile); ok {
		mask |= 8
	}
	switch mask {
	case 0:
		return struct {
			*File
		}{f}
	case 1:
		return struct {
			*File
			discarder
		}{f, discarder{f}}
	case 2:
		return struct {
			*File
			zeroWriter
		}{f, zeroWriter{f}}
	case 3:
		return struct {
			*File
			discarder
			zeroWriter
		}{f, discarder{f}, zeroWriter{f}}
	case 4:
		return struct {
			*File
			blockStatuser
		}{f, blockStatuser{f}}
	case 5:
		return struct {
			*File
			discarder
			blockStatuser
		}{f, discarder{f}, blockStatuser{f}}
	case 6:
		return struct {
			*File
			zeroWriter
			blockStatuser
		}{f, zeroWriter{f}, blockStatuser{f}}
	case 7:
		return struct {
			*File
			discarder
			zeroWriter
			blockStatuser
		}{f, discarder{f}, zeroWriter{f}, blockStatuser{f}}
	case 8:
		return struct {
			*File
			batcher
		}{f, batcher{f}}
	case 9:
		return struct {
			*File
			discarder
			batcher
		}{f, discarder{f}, batcher{f}}
	case 10:
		return struct {
			*File
			zeroWriter
			batcher
		}{f, zeroWriter{f}, batcher{f}}
	case 11:
		return struct {
			*File
			discarder
			zeroWriter
			batcher
		}{f, discarder{f}, zeroWriter{f}, batcher{f}}
	case 12:
		return struct {
			*File
			blockStatuser
			batcher
		}{f, blockStatuser{f}, batcher{f}}
	case 13:
		return struct {
			*File
			discarder
			blockStatuser
			batcher
		}{f, discarder{f}, blockStatuser{f}, batcher{f}}
	case 14:
		return struct {
			*File
			zeroWriter
			blockStatuser
			batcher
		}{f, zeroWriter{f}, blockStatuser{f}, batcher{f}}
	case 15:
		return struct {
			*File
			discarder
			zeroWriter
			blockStatuser
			batcher
		}{f, discarder{f}, zeroWriter{f}, blockStatuser{f}, batcher{f}}
	}
	return f
}
