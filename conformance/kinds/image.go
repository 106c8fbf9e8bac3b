package kinds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/overlaybd-go/overlaybd/conformance"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/core/image"
	"github.com/overlaybd-go/overlaybd/core/lsmt"
	"github.com/overlaybd-go/overlaybd/engines/psync"
)

// ImageConfig is the writable kind of whole images as a device opens them:
// from a config.v1.json through core/image, with a writable upper over the
// committed layers. Every commit adds the frozen layer to "lowers"
// (alternately as a "file" and as a "dir" holding overlaybd.commit) and
// rewrites the configuration; every reopen opens the image again from it;
// after every open the result file must say "success".
type ImageConfig struct {
	// Sparse selects sparse upper layers.
	Sparse bool
	// Global is the global configuration (nil: built-in defaults); its
	// ioEngine opens the lowers.
	Global *config.Global
}

var _ conformance.WritableKind = ImageConfig{}

// Name implements conformance.WritableKind.
func (k ImageConfig) Name() string {
	name := "image/config.v1.json/append-only"
	if k.Sparse {
		name = "image/config.v1.json/sparse"
	}
	if k.Global != nil {
		if e, err := k.Global.IOEngine.Name(); err == nil && e != psync.Name {
			name += "/" + e
		}
	}
	return name
}

// Alignment implements conformance.WritableKind.
func (k ImageConfig) Alignment() int64 { return lsmt.SectorSize }

// Create implements conformance.WritableKind.
func (k ImageConfig) Create(dir string, vsize int64) (conformance.Device, error) {
	d := &imageDevice{kind: k, dir: dir, vsize: vsize,
		cfgPath: filepath.Join(dir, "config.v1.json"), result: filepath.Join(dir, "init-debug.log")}
	if err := d.newUpper(); err != nil {
		return nil, err
	}
	if err := d.open(); err != nil {
		return nil, err
	}
	return d, nil
}

type imageDevice struct {
	kind         ImageConfig
	dir          string
	vsize        int64
	cfgPath      string
	result       string
	n            int
	lowers       []config.Layer
	upper        config.Upper
	img          *image.Image
	parent, uuid lsmt.UUID
}

func (d *imageDevice) newUpper() error {
	d.n++
	data := filepath.Join(d.dir, fmt.Sprintf("writable_data.%d", d.n))
	index := filepath.Join(d.dir, fmt.Sprintf("writable_index.%d", d.n))
	open := func(p string) (core.File, error) {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return nil, err
		}
		return psync.NewFile(f, nil), nil
	}
	df, err := open(data)
	if err != nil {
		return err
	}
	xf, err := open(index)
	if err != nil {
		df.Close()
		return err
	}
	d.parent, d.uuid = d.uuid, lsmt.NewUUID()
	w, err := lsmt.Create(df, xf, lsmt.CreateOptions{VirtualSize: d.vsize, UUID: d.uuid, ParentUUID: d.parent, Sparse: d.kind.Sparse})
	if err != nil {
		df.Close()
		xf.Close()
		return err
	}
	if err := errors.Join(w.Sync(), w.Close()); err != nil {
		return err
	}
	d.upper = config.Upper{Data: data, Index: index}
	return nil
}

// open writes the configuration and opens the image from it.
func (d *imageDevice) open() error {
	cfg := config.Image{Lowers: d.lowers, Upper: d.upper, ResultFile: d.result}
	if cfg.Lowers == nil {
		cfg.Lowers = []config.Layer{}
	}
	b, err := json.Marshal(&cfg)
	if err != nil {
		return err
	}
	if err := os.WriteFile(d.cfgPath, b, 0o600); err != nil {
		return err
	}
	os.Remove(d.result)
	img, err := image.OpenFile(context.Background(), d.cfgPath, image.Options{Global: d.kind.Global})
	if err != nil {
		return fmt.Errorf("open image: %w", err)
	}
	ok, reason, err := config.ReadResult(d.result)
	if err != nil || !ok {
		img.Close()
		return fmt.Errorf("result file after a successful open: ok=%v reason=%q err=%v", ok, reason, err)
	}
	if !img.Writable() {
		img.Close()
		return errors.New("image with an upper is not writable")
	}
	d.img = img
	return nil
}

// File implements conformance.Device.
func (d *imageDevice) File() core.File { return d.img }

// Reopen implements conformance.Device.
func (d *imageDevice) Reopen() error {
	if err := d.img.Close(); err != nil {
		return err
	}
	d.img = nil
	return d.open()
}

// Commit implements conformance.Committer.
func (d *imageDevice) Commit() error {
	i := len(d.lowers)
	var out string
	var layer config.Layer
	if i%2 == 0 {
		out = filepath.Join(d.dir, fmt.Sprintf("layer-%d.commit", i))
		layer = config.Layer{File: out}
	} else {
		ldir := filepath.Join(d.dir, fmt.Sprintf("layer-%d", i))
		if err := os.Mkdir(ldir, 0o755); err != nil {
			return err
		}
		out = filepath.Join(ldir, "overlaybd.commit")
		layer = config.Layer{Dir: ldir}
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	err = d.img.Upper().Commit(f, lsmt.CommitOptions{UUID: d.uuid})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if err := d.img.Close(); err != nil {
		return err
	}
	d.img = nil
	d.lowers = append(d.lowers, layer)
	if err := d.newUpper(); err != nil {
		return err
	}
	return d.open()
}

// Close implements conformance.Device.
func (d *imageDevice) Close() error {
	if d.img == nil {
		return nil
	}
	err := d.img.Close()
	d.img = nil
	return err
}
