package config

import (
	"fmt"
	"os"
	"path/filepath"
)

// MaxLowers is the largest number of lower layers a device may stack
// (upstream's MAX_STACK_LAYERS).
const MaxLowers = 255

// Image is config.v1.json, the configuration of one device: its layers, its
// optional writable layer, and where the outcome of opening it goes. Field
// names and defaults are upstream's (struct ImageConfig in overlaybd's
// src/config.h); the JSON written by [json.Marshal] has the shape the
// containerd snapshotter (accelerated-container-image) writes.
type Image struct {
	// File is the path the configuration was loaded from. Not part of the
	// JSON.
	File string `json:"-"`

	// RepoBlobURL is the blob URL prefix of the image's repository, e.g.
	// https://registry-1.docker.io/v2/library/redis/blobs; required when a
	// layer is fetched remotely.
	RepoBlobURL string `json:"repoBlobUrl"`
	// Lowers are the read-only layers, bottom first.
	Lowers []Layer `json:"lowers"`
	// Upper is the optional writable top layer.
	Upper Upper `json:"upper"`
	// ResultFile receives the outcome of opening the device (see
	// [WriteResult]).
	ResultFile string `json:"resultFile"`
	// Download holds the device's background-download settings; nil when
	// the file has no "download" object. [LoadImage] then copies the global
	// configuration's object (see [Image.InheritDownload]).
	Download *DownloadConfig `json:"download,omitempty"`
	// AccelerationLayer marks the last lower as an acceleration layer.
	AccelerationLayer bool `json:"accelerationLayer,omitempty"`
	// RecordTracePath is the trace file for trace record/replay.
	RecordTracePath string `json:"recordTracePath,omitempty"`
}

// Layer is one entry of "lowers".
type Layer struct {
	// GzipIndex is the turboOCI gzip index of a gzip-compressed target.
	GzipIndex string `json:"gzipIndex,omitempty"`
	// File is the path of a local layer file.
	File string `json:"file,omitempty"`
	// Digest is the blob digest ("sha256:<hex>") of the remote layer.
	Digest string `json:"digest,omitempty"`
	// TargetFile is the turboOCI data target: the original OCI layer blob.
	TargetFile string `json:"targetFile,omitempty"`
	// TargetDigest is the digest of the turboOCI data target in the same
	// repository.
	TargetDigest string `json:"targetDigest,omitempty"`
	// Size is the blob size in bytes.
	Size uint64 `json:"size,omitempty"`
	// Dir is the layer directory: searched for local copies, and the
	// destination of background downloads.
	Dir string `json:"dir,omitempty"`
}

// Local layer file names probed in a layer's Dir, in upstream's order.
var LocalLayerNames = []string{"overlaybd.commit", ".commit", "overlaybd.sealed"}

// LocalCandidates returns the local paths probed for the layer, in order:
// File, then Dir joined with each of LocalLayerNames. Upstream also probes
// "/overlaybd.commit" etc. when Dir is empty; this port does not.
func (l Layer) LocalCandidates() []string {
	var c []string
	if l.File != "" {
		c = append(c, l.File)
	}
	if l.Dir != "" {
		for _, n := range LocalLayerNames {
			c = append(c, filepath.Join(l.Dir, n))
		}
	}
	return c
}

// Upper is "upper", the writable layer.
type Upper struct {
	// Index is the writable layer's index file.
	Index string `json:"index,omitempty"`
	// Data is the writable layer's data file.
	Data string `json:"data,omitempty"`
	// Target is the turboOCI upper's data target file.
	Target string `json:"target,omitempty"`
	// GzipIndex is the gzip index of Target.
	GzipIndex string `json:"gzipIndex,omitempty"`
	// VSize is the virtual size in GiB the snapshotter created the layer
	// with; written by the snapshotter, ignored by the daemon.
	VSize int64 `json:"vsize,omitempty"`
}

// Writable reports whether the device has a writable layer: both upper.index
// and upper.data are set.
func (img *Image) Writable() bool { return img.Upper.Index != "" && img.Upper.Data != "" }

// NeedsRemote reports whether the device reads a lower from the registry:
// some lower has a Digest and none of its LocalCandidates can be stat'ed
// (upstream's choice between a local file and repoBlobUrl/digest). A daemon
// uses it to start its registry client only when a device needs one. A
// lower with neither a local copy nor a digest does not count: opening the
// image fails on it.
func (img *Image) NeedsRemote() bool {
	for _, l := range img.Lowers {
		if l.Digest != "" && !l.hasLocalCopy() {
			return true
		}
	}
	return false
}

// hasLocalCopy reports whether one of the layer's local candidates exists.
func (l Layer) hasLocalCopy() bool {
	for _, p := range l.LocalCandidates() {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}

// LoadImage reads config.v1.json and, when it has no "download" object,
// copies the one of g (see [Image.InheritDownload]); g may be nil. Upstream
// re-reads overlaybd.json for this at every device open: a daemon that does
// the same passes a freshly loaded Global.
func LoadImage(path string, g *Global) (*Image, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &FieldError{File: path, Kind: ErrInvalid, Msg: "cannot read the image configuration", Err: err}
	}
	img, err := ParseImage(data, path)
	if err != nil {
		return nil, err
	}
	img.InheritDownload(g)
	return img, nil
}

// ParseImage parses the content of config.v1.json; file names the source in
// errors. It checks syntax and types; [Image.Validate] checks the values.
func ParseImage(data []byte, file string) (*Image, error) {
	doc, err := parseDocument(data, file)
	if err != nil {
		return nil, err
	}
	img := &Image{File: file}
	r := newReader(file, doc)
	r.str("repoBlobUrl", &img.RepoBlobURL)
	elems, field := r.array("lowers")
	if elems != nil {
		img.Lowers = make([]Layer, 0, len(elems))
	}
	for i, e := range elems {
		er := r.element(field, i, e)
		var l Layer
		er.str("gzipIndex", &l.GzipIndex)
		er.str("file", &l.File)
		er.str("digest", &l.Digest)
		er.str("targetFile", &l.TargetFile)
		er.str("targetDigest", &l.TargetDigest)
		er.uint64("size", &l.Size)
		er.str("dir", &l.Dir)
		img.Lowers = append(img.Lowers, l)
	}
	up, _ := r.object("upper")
	up.str("index", &img.Upper.Index)
	up.str("data", &img.Upper.Data)
	up.str("target", &img.Upper.Target)
	up.str("gzipIndex", &img.Upper.GzipIndex)
	if v, f := up.get("vsize"); v != nil {
		if n, _, ok := up.integer(v, f, -1<<63, 1<<63-1); ok {
			img.Upper.VSize = n
		}
	}
	r.str("resultFile", &img.ResultFile)
	if dl, ok := r.object("download"); ok {
		d := DefaultDownload()
		readDownload(dl, &d)
		img.Download = &d
	}
	r.boolean("accelerationLayer", &img.AccelerationLayer)
	r.str("recordTracePath", &img.RecordTracePath)
	if *r.err != nil {
		return nil, *r.err
	}
	return img, nil
}

// InheritDownload applies upstream's rule: a device whose configuration has
// no "download" object gets the global one, copied as a whole (no
// field-wise merge). With g nil the defaults are used.
func (img *Image) InheritDownload(g *Global) {
	if img.Download != nil {
		return
	}
	d := DefaultDownload()
	if g != nil {
		d = g.Download
	}
	img.Download = &d
}

// EffectiveDownload returns the device's download settings: its own, or
// g's when it has none (the defaults when g is nil too).
func (img *Image) EffectiveDownload(g *Global) DownloadConfig {
	switch {
	case img.Download != nil:
		return *img.Download
	case g != nil:
		return g.Download
	default:
		return DefaultDownload()
	}
}

func (img *Image) invalid(field, format string, args ...any) error {
	return fieldErr(img.File, field, ErrInvalid, format, args...)
}

// Validate checks what upstream would crash on or fail the device for, and
// a few mistakes upstream silently accepts:
//   - no lowers and no writable upper (upstream crashes);
//   - more than [MaxLowers] lowers;
//   - accelerationLayer together with recordTracePath;
//   - a lower that names no file, dir or digest;
//   - only one of upper.index and upper.data (upstream silently opens
//     the device read-only).
//
// The image opener reports its error through the result file.
func (img *Image) Validate() error {
	if len(img.Lowers) == 0 && img.Upper.Index == "" && img.Upper.Data == "" {
		return img.invalid("lowers", "no lowers and no writable upper: the device would have no layers")
	}
	if img.Upper.Index != "" && img.Upper.Data == "" {
		return img.invalid("upper.data", "is empty while upper.index is set")
	}
	if img.Upper.Data != "" && img.Upper.Index == "" {
		return img.invalid("upper.index", "is empty while upper.data is set")
	}
	if len(img.Lowers) > MaxLowers {
		return img.invalid("lowers", "has %d layers, at most %d can be stacked", len(img.Lowers), MaxLowers)
	}
	if img.AccelerationLayer && img.RecordTracePath != "" {
		return img.invalid("recordTracePath", "cannot be used together with accelerationLayer")
	}
	for i, l := range img.Lowers {
		if l.File == "" && l.Dir == "" && l.Digest == "" {
			return img.invalid(fmt.Sprintf("lowers[%d]", i), "names no file, dir or digest")
		}
	}
	return nil
}
