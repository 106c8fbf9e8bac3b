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

var _ conformance.ReadOnlyKind = LSMTReadOnly{}

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

// Build implements conformance.ReadOnlyKind.
func (k LSMTReadOnly) Build(dir string, m *conformance.Model) (core.File, error) {
	if m.Size()%lsmt.SectorSize != 0 {
		return nil, fmt.Errorf("size %d is not a multiple of %d", m.Size(), lsmt.SectorSize)
	}
	eng := k.Engine
	if eng == nil {
		eng = psync.New(core.EngineConfig{})
	}
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

	files := make([]core.File, 0, L)
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	for j, p := range paths {
		f, err := eng.Open(p, core.OpenOptions{Flag: os.O_RDONLY})
		if err != nil {
			closeAll()
			return nil, err
		}
		inner, desc, err := envelope.Open(f)
		if err != nil {
			f.Close()
			closeAll()
			return nil, fmt.Errorf("layer %d: %w", j, err)
		}
		files = append(files, inner)
		if desc.Inner() != envelope.KindLSMT || desc.Has(envelope.KindTar) != k.Tar || desc.Has(envelope.KindZFile) != (k.ZFile != nil) {
			closeAll()
			return nil, fmt.Errorf("layer %d: recognised as %s", j, desc)
		}
	}
	if L == 1 {
		ro, err := lsmt.OpenReadOnly(files[0])
		if err != nil {
			closeAll()
			return nil, err
		}
		return ro, nil
	}
	s, err := lsmt.OpenStack(files, nil)
	if err != nil {
		closeAll()
		return nil, err
	}
	return s, nil
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
	w, err := lsmt.Create(data, index, lsmt.CreateOptions{VirtualSize: m.Size(), Sparse: k.Sparse})
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
	if err := w.Commit(o, lsmt.CommitOptions{UUID: lsmt.NewUUID()}); err != nil {
		o.Abort()
		return "", fmt.Errorf("commit: %w", err)
	}
	if err := o.Close(); err != nil {
		return "", err
	}
	closed = true
	return out, errors.Join(w.Close())
}
