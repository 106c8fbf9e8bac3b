// Package psync is the default IO engine: every request is a pread or pwrite
// system call on the caller's goroutine (upstream's ioEngine 0). A batch is
// performed request by request.
//
// With core.OpenOptions.Direct the file is opened O_DIRECT and requests of
// any alignment are served through an aligned bounce buffer; when the
// filesystem refuses O_DIRECT the file is opened buffered, with one log
// line and a counted fallback.
package psync

import (
	"os"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/engines/internal/fileengine"
)

// Name is the registry name of this engine.
const Name = "psync"

// Number is upstream's ioEngine number of this engine.
const Number = 0

func init() {
	core.Engines.Register(Name, Number, func(cfg core.EngineConfig) (core.Engine, error) { return New(cfg), nil })
}

// Engine performs IO with pread/pwrite on the calling goroutine.
type Engine struct {
	*fileengine.Engine
}

// File is a local file served by an engine. Besides core.File and
// core.BatchFile it offers Fd, Truncate, Name and Direct.
type File = fileengine.File

// New returns a psync engine.
func New(cfg core.EngineConfig) *Engine {
	c := new(fileengine.Counters)
	log := cfg.Logger
	return &Engine{fileengine.New(Name, log, fileengine.NewSyncBackend(c), c, fileengine.Options{})}
}

// NewFile wraps an open *os.File, which the File then owns; IO is counted
// in e's statistics (a new engine's when e is nil). The file must not have
// been opened O_DIRECT.
func NewFile(f *os.File, e *Engine) *File {
	if e == nil {
		e = New(core.EngineConfig{})
	}
	file, err := e.Wrap(f, false)
	if err != nil {
		// The sync backend's Attach cannot fail.
		panic(err)
	}
	return file
}
