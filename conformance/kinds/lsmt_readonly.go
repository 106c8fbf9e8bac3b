package kinds

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/overlaybd-go/overlaybd/conformance"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/envelope"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/core/zfile"
	"github.com/overlaybd-go/overlaybd/engines/psync"

	_ "github.com/overlaybd-go/overlaybd/codecs/all" // the ZFile codecs
)

// LSMTReadOnly is the read-only kind of LSMT layers: the content is spread
// over Layers committed (or sealed) layers, each optionally compressed as a
// ZFile and wrapped in overlaybd's tar envelope, opened through the
// envelope detection and stacked read-only. Lower layers hold stale data that
// the layers above overwrite or discard.
type LSMTReadOnly struct {
	// Layers is the number of layers (default 1).
	Layers int
	// Seal seals the writable layers in place instead of committing them.
	Seal bool
	// Sparse writes the content through sparse writable layers.
	Sparse bool
	// ZFile, when set, compresses every layer file.
	ZFile *zfile.Options
	// Tar wraps every layer file in the tar envelope.
	Tar bool
	// Engine opens the files (nil: psync).
	Engine core.Engine
}

var (
	_ conformance.ReadOnlyKind = LSMTReadOnly{}
	_ Lowers                   = LSMTReadOnly{}
)

// Lowers builds read-only lower layers with a content, for writable
// devices that start over them.
type Lowers interface {
	// BuildLowers writes layers holding m's content into dir.
	BuildLowers(dir string, m *conformance.Model) (LowerSet, error)
}

// LowerSet is a built set of lower layers that a device opens as often as
// it reopens.
type LowerSet interface {
	// Open opens the layers, bottom first, as LSMT layer files (their
	// envelopes removed); the caller closes them.
	Open() ([]core.File, error)
	// Close releases what the set holds (servers, caches) once the
	// files it opened are closed.
	Close() error
}

// Name implements conformance.ReadOnlyKind.
func (k LSMTReadOnly) Name() string {
	var b strings.Builder
	b.WriteString("lsmt/")
	if k.Seal {
		b.WriteString("sealed")
	} else {
		b.WriteString("committed")
	}
	if k.Sparse {
		b.WriteString("/from-sparse")
	}
	if k.layers() > 1 {
		fmt.Fprintf(&b, "/x%d", k.layers())
	}
	if k.ZFile != nil {
		algo := k.ZFile.Algorithm
		if algo == "" {
			algo = "lz4"
		}
		bs := k.ZFile.BlockSize
		if bs == 0 {
			bs = 4096
		}
		fmt.Fprintf(&b, "/zfile-%s-%dk", algo, bs>>10)
		if k.ZFile.NoCRC {
			b.WriteString("-nocrc")
		}
	}
	if k.Tar {
		b.WriteString("/tar")
	}
	if k.Engine != nil && k.Engine.Name() != psync.Name {
		b.WriteString("/" + k.Engine.Name())
	}
	return b.String()
}

func (k LSMTReadOnly) layers() int { return max(k.Layers, 1) }

// run is a maximal range of sectors that are all zero or all data in the
// model, cut into pieces of at most 1 MiB.
type run struct {
	off, n int64
	zero   bool
}

func runsOf(m *conformance.Model) []run {
	b := m.Bytes()
	var runs []run
	isZero := func(s []byte) bool {
		for _, c := range s {
			if c != 0 {
				return false
			}
		}
		return true
	}
	for off := int64(0); off < int64(len(b)); off += lsmt.SectorSize {
		z := isZero(b[off : off+lsmt.SectorSize])
		if l := len(runs); l > 0 && runs[l-1].zero == z && runs[l-1].n < 1<<20 {
			runs[l-1].n += lsmt.SectorSize
			continue
		}
		runs = append(runs, run{off: off, n: lsmt.SectorSize, zero: z})
	}
	return runs
}

func (k LSMTReadOnly) engine() core.Engine {
	if k.Engine != nil {
		return k.Engine
	}
	return psync.New(core.EngineConfig{})
}

// BuildPaths writes the layers of m's content into dir and returns their
// files, bottom first.
func (k LSMTReadOnly) BuildPaths(dir string, m *conformance.Model) ([]string, error) {
	if m.Size()%lsmt.SectorSize != 0 {
		return nil, fmt.Errorf("size %d is not a multiple of %d", m.Size(), lsmt.SectorSize)
	}
	eng := k.engine()
	// The layout (which layer owns a run, which lower layers hold stale
	// data there) is derived from the content, so a seed replays it.
	rng := rand.New(rand.NewPCG(uint64(m.Size()), uint64(crc32.ChecksumIEEE(m.Bytes()))))
	runs := runsOf(m)
	L := k.layers()
	owner := make([]int, len(runs))
	stale := make([]uint64, len(runs)) // bit j: layer j writes stale data
	for i, r := range runs {
		owner[i] = rng.IntN(L)
		for j := 0; j < owner[i]; j++ {
			if rng.IntN(3) == 0 {
				stale[i] |= 1 << j
			}
		}
		if r.zero && stale[i] == 0 && rng.IntN(2) == 0 {
			owner[i] = -1 // never written: a hole in every layer
		}
	}

	paths := make([]string, L)
	for j := 0; j < L; j++ {
		p, err := k.buildLayer(dir, j, eng, m, runs, owner, stale, rng)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", j, err)
		}
		paths[j] = p
	}
	return paths, nil
}

// Build implements conformance.ReadOnlyKind.
func (k LSMTReadOnly) Build(dir string, m *conformance.Model) (core.File, error) {
	paths, err := k.BuildPaths(dir, m)
	if err != nil {
		return nil, err
	}
	files, err := k.OpenLayers(paths)
	if err != nil {
		return nil, err
	}
	if len(files) == 1 {
		ro, err := lsmt.OpenReadOnly(files[0])
		if err != nil {
			files[0].Close()
			return nil, err
		}
		return ro, nil
	}
	s, err := lsmt.OpenStack(files, nil)
	if err != nil {
		closeFiles(files)
		return nil, err
	}
	return s, nil
}

// OpenLayers opens layer files built by BuildPaths through the engine and
// the envelope detection, checking that each is recognised as what was
// built; it returns the LSMT layers, bottom first.
func (k LSMTReadOnly) OpenLayers(paths []string) ([]core.File, error) {
	eng := k.engine()
	files := make([]core.File, 0, len(paths))
	for j, p := range paths {
		f, err := eng.Open(p, core.OpenOptions{Flag: os.O_RDONLY})
		if err != nil {
			closeFiles(files)
			return nil, err
		}
		inner, err := k.Unwrap(f)
		if err != nil {
			f.Close()
			closeFiles(files)
			return nil, fmt.Errorf("layer %d: %w", j, err)
		}
		files = append(files, inner)
	}
	return files, nil
}

// Unwrap removes the envelope of one layer file (tar, ZFile) and checks it
// is the envelope the kind builds; the result owns f.
func (k LSMTReadOnly) Unwrap(f core.File) (core.File, error) {
	inner, desc, err := envelope.Open(f)
	if err != nil {
		return nil, err
	}
	if desc.Inner() != envelope.KindLSMT || desc.Has(envelope.KindTar) != k.Tar || desc.Has(envelope.KindZFile) != (k.ZFile != nil) {
		inner.Close()
		return nil, fmt.Errorf("recognised as %s", desc)
	}
	return inner, nil
}

// BuildLowers implements Lowers: the layers are files in dir, opened
// through the kind's engine.
func (k LSMTReadOnly) BuildLowers(dir string, m *conformance.Model) (LowerSet, error) {
	paths, err := k.BuildPaths(dir, m)
	if err != nil {
		return nil, err
	}
	return localLowers{k: k, paths: paths}, nil
}

type localLowers struct {
	k     LSMTReadOnly
	paths []string
}

func (l localLowers) Open() ([]core.File, error) { return l.k.OpenLayers(l.paths) }
func (l localLowers) Close() error               { return nil }

func closeFiles(files []core.File) {
	for _, f := range files {
		f.Close()
	}
}

func (k LSMTReadOnly) buildLayer(dir string, j int, eng core.Engine, m *conformance.Model, runs []run,
	owner []int, stale []uint64, rng *rand.Rand) (string, error) {
	dataPath := filepath.Join(dir, fmt.Sprintf("src-%d.data", j))
	idxPath := filepath.Join(dir, fmt.Sprintf("src-%d.index", j))
	data, err := eng.Open(dataPath, core.OpenOptions{Flag: os.O_RDWR | os.O_CREATE | os.O_EXCL, Perm: 0o644})
	if err != nil {
		return "", err
	}
	index, err := eng.Open(idxPath, core.OpenOptions{Flag: os.O_RDWR | os.O_CREATE | os.O_EXCL, Perm: 0o644})
	if err != nil {
		data.Close()
		return "", err
	}
	// The UUIDs come from the content-derived source too, so that the same
	// content and options give the same layer files byte for byte (remote
	// cells then push the same blobs to a registry).
	w, err := lsmt.Create(data, index, lsmt.CreateOptions{VirtualSize: m.Size(), Sparse: k.Sparse, UUID: uuidFrom(rng)})
	if err != nil {
		data.Close()
		index.Close()
		return "", err
	}
	closed := false
	defer func() {
		if !closed {
			w.Close()
		}
	}()
	garbage := make([]byte, 1<<20)
	for i, r := range runs {
		switch {
		case stale[i]&(1<<j) != 0:
			for p := 0; p+8 <= int(r.n); p += 8 {
				binary.LittleEndian.PutUint64(garbage[p:], rng.Uint64()|1)
			}
			if _, err := w.WriteAt(garbage[:r.n], r.off); err != nil {
				return "", err
			}
		case owner[i] == j && !r.zero:
			if _, err := w.WriteAt(m.Bytes()[r.off:r.off+r.n], r.off); err != nil {
				return "", err
			}
		case owner[i] == j && r.zero:
			if err := w.Discard(r.off, r.n); err != nil {
				return "", err
			}
		}
	}

	out := filepath.Join(dir, fmt.Sprintf("layer-%d", j))
	if k.Seal {
		ro, err := w.Seal()
		closed = true
		if err != nil {
			return "", fmt.Errorf("seal: %w", err)
		}
		if err := ro.Close(); err != nil {
			return "", err
		}
		if k.ZFile == nil && !k.Tar {
			return dataPath, nil
		}
		src, err := os.Open(dataPath)
		if err != nil {
			return "", err
		}
		defer src.Close()
		o, err := envelope.Create(out, envelope.CreateOptions{ZFile: k.ZFile, Tar: k.Tar})
		if err != nil {
			return "", err
		}
		if _, err := io.Copy(o, src); err != nil {
			o.Abort()
			return "", err
		}
		return out, o.Close()
	}
	o, err := envelope.Create(out, envelope.CreateOptions{ZFile: k.ZFile, Tar: k.Tar})
	if err != nil {
		return "", err
	}
	if err := w.Commit(o, lsmt.CommitOptions{UUID: uuidFrom(rng)}); err != nil {
		o.Abort()
		return "", fmt.Errorf("commit: %w", err)
	}
	if err := o.Close(); err != nil {
		return "", err
	}
	closed = true
	return out, errors.Join(w.Close())
}

// uuidFrom draws a version-4 UUID from rng.
func uuidFrom(rng *rand.Rand) lsmt.UUID {
	var u lsmt.UUID
	binary.LittleEndian.PutUint64(u[:8], rng.Uint64())
	binary.LittleEndian.PutUint64(u[8:], rng.Uint64())
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}
