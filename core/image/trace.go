package image

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/core/prefetch"
)

// tracing is what an image's trace asks for (CONFIG.md §5.5, REMOTE.md
// §10): a recorder wrapping every lower's unwrapped file, or the records of
// a trace to replay once the image is open. The zero value does nothing.
type tracing struct {
	path    string
	rec     *prefetch.Recorder
	records []prefetch.Record
}

// accelTracePath is the trace of an acceleration layer: "<dir>/trace". A
// layer without a dir has none.
func accelTracePath(accel config.Layer) string {
	if accel.Dir == "" {
		return ""
	}
	return accel.Dir + "/trace"
}

// setupTrace examines the image's trace. It never fails the image: a trace
// that cannot be used is skipped with a warning and the image opens
// without it.
//
//   - Acceleration layer: "<dir>/trace" non-empty is replayed; missing or
//     empty, nothing happens.
//   - recordTracePath: missing, nothing; empty, record; non-empty, replay.
//
// A trace that is not a binary trace is upstream's list of files, which is
// not supported yet; a binary trace that fails its checks (magic, size,
// checksum) is not replayed.
func setupTrace(cfg *config.Image, accel *config.Layer, log *slog.Logger) *tracing {
	var path string
	switch {
	case accel != nil:
		path = accelTracePath(*accel)
		if path == "" {
			log.Warn("acceleration layer has no dir: no trace to replay")
			return &tracing{}
		}
		st, err := os.Stat(path)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				log.Warn("acceleration layer: cannot examine the trace, prefetch skipped", "path", path, "err", err)
			}
			return &tracing{}
		}
		if st.Size() == 0 {
			return &tracing{}
		}
	case cfg.RecordTracePath != "":
		path = cfg.RecordTracePath
		mode, err := prefetch.DetectMode(path)
		if err != nil {
			log.Warn("cannot examine the trace, trace record/replay skipped", "path", path, "err", err)
			return &tracing{}
		}
		switch mode {
		case prefetch.Disabled:
			return &tracing{}
		case prefetch.RecordMode:
			rec, err := prefetch.NewRecorder(path, log)
			if err != nil {
				log.Warn("cannot start recording the trace, recording skipped", "path", path, "err", err)
				return &tracing{}
			}
			log.Info("recording a trace", "path", path)
			return &tracing{path: path, rec: rec}
		}
	default:
		return &tracing{}
	}
	records, err := prefetch.LoadTrace(path)
	switch {
	case errors.Is(err, prefetch.ErrFileList):
		log.Warn("the trace is a list of files: file-list prefetch is not supported yet, prefetch skipped", "path", path)
		return &tracing{}
	case err != nil:
		log.Warn("the trace cannot be used, replay skipped", "path", path, "err", err)
		return &tracing{}
	}
	return &tracing{path: path, records: records}
}

// wrap returns lower i's unwrapped file as the stack reads it: recorded in
// record mode, as is otherwise.
func (t *tracing) wrap(i int, f core.File) core.File {
	if t == nil || t.rec == nil {
		return f
	}
	return t.rec.Wrap(i, f)
}

// abort stops a recording for an image that failed to open: nothing is
// written, so the next open records again.
func (t *tracing) abort() {
	if t != nil && t.rec != nil {
		t.rec.Abort()
	}
}

// start begins the replay over the lowers' unwrapped files, with
// prefetchConfig.concurrency workers. It returns nil when there is nothing
// to replay.
func (t *tracing) start(infos []LayerInfo, g *config.Global, log *slog.Logger) *prefetch.Replayer {
	if t == nil || len(t.records) == 0 {
		return nil
	}
	if g == nil {
		g = config.DefaultGlobal()
	}
	files := make([]io.ReaderAt, len(infos))
	for i, li := range infos {
		if li.file != nil {
			files[i] = li.file
		}
	}
	log.Info("replaying a trace", "path", t.path, "records", len(t.records), "concurrency", g.PrefetchConfig.Concurrency)
	return prefetch.StartReplay(t.records, files, g.PrefetchConfig.Concurrency, log.With("trace", t.path))
}

// Prefetch returns the replay of the image's trace, or nil when the image
// replays none. Its Wait and Stats tell how far the replay got; Image.Close
// stops it.
func (img *Image) Prefetch() *prefetch.Replayer { return img.replayer }

// TraceRecorder returns the recorder of the image's trace, or nil when the
// image records none. Image.Close finishes the recording.
func (img *Image) TraceRecorder() *prefetch.Recorder { return img.recorder }

// stopReplay interrupts the replay and waits for its workers.
func (img *Image) stopReplay() {
	if img.replayer != nil {
		img.replayer.Close()
	}
}

// finishTrace writes the recorded trace, if any.
func (img *Image) finishTrace() error {
	if img.recorder == nil {
		return nil
	}
	if err := img.recorder.Close(); err != nil {
		return fmt.Errorf("image: finish trace: %w", err)
	}
	return nil
}
