package prefetch

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/core"
)

// The worked example of REMOTE.md §10.2, checked against upstream's CRC.
const exampleHex = "2018efc2000000003000000000000000" + "9e88c7a300000000" +
	"52000000000000000010000000000000" + "0000000000000000" +
	"52000000010000000000040000000000" + "0000100000000000"

func TestEncodeMatchesUpstream(t *testing.T) {
	want, _ := hex.DecodeString(exampleHex)
	got := Encode([]Record{{OpRead, 0, 4096, 0}, {OpRead, 1, 262144, 1048576}})
	if !bytes.Equal(got, want) {
		t.Fatalf("encode:\n got %x\nwant %x", got, want)
	}
	recs, err := Decode(want)
	if err != nil || len(recs) != 2 || recs[1] != (Record{OpRead, 1, 262144, 1048576}) {
		t.Fatalf("decode: %v %v", recs, err)
	}
}

func TestDecodeRejects(t *testing.T) {
	good, _ := hex.DecodeString(exampleHex)
	for name, mut := range map[string]func([]byte) []byte{
		"checksum":  func(b []byte) []byte { b[30] ^= 1; return b },
		"size":      func(b []byte) []byte { return b[:len(b)-1] },
		"magic":     func(b []byte) []byte { b[0] ^= 1; return b },
		"data_size": func(b []byte) []byte { b[8] = 24; return b },
	} {
		b := mut(append([]byte(nil), good...))
		if _, err := Decode(b); !errors.Is(err, ErrBadTrace) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	good, _ := hex.DecodeString(exampleHex)
	f.Add(good)
	f.Add(Encode(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := Decode(b)
		if err != nil {
			return
		}
		if !bytes.Equal(Encode(recs), b[:HeaderSize+RecordSize*len(recs)]) && !bytes.Equal(Encode(recs)[HeaderSize:], b[HeaderSize:]) {
			t.Fatal("decoded records do not encode back")
		}
	})
}

type countingReader struct {
	data  []byte
	reads atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.reads.Add(1)
	if off >= int64(len(c.data)) {
		return 0, io.EOF
	}
	n := copy(p, c.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func TestRecordThenReplay(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "trace")
	os.WriteFile(p, nil, 0o644)
	if m, _ := DetectMode(p); m != RecordMode {
		t.Fatalf("mode %v", m)
	}
	if m, _ := DetectMode(filepath.Join(dir, "absent")); m != Disabled {
		t.Fatalf("mode %v", m)
	}
	LockPollInterval = 20 * time.Millisecond
	rec, err := NewRecorder(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	l0 := &memFile{countingReader{data: bytes.Repeat([]byte{1}, 1<<20)}}
	l1 := &memFile{countingReader{data: bytes.Repeat([]byte{2}, 1<<20)}}
	f0, f1 := rec.Wrap(0, l0), rec.Wrap(1, l1)
	buf := make([]byte, 4096)
	f0.ReadAt(buf, 0)
	f1.ReadAt(buf[:512], 8192)
	f1.ReadAt(buf, 1<<20-100) // short: not recorded
	// Removing the lock ends the recording.
	os.Remove(p + ".lock")
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(p + ".ok"); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	f0.ReadAt(buf, 4096) // after the end: not recorded
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	if m, _ := DetectMode(p); m != ReplayMode {
		t.Fatalf("mode after recording %v", m)
	}
	recs, err := LoadTrace(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{{OpRead, 0, 4096, 0}, {OpRead, 1, 512, 8192}}
	if len(recs) != 2 || recs[0] != want[0] || recs[1] != want[1] {
		t.Fatalf("recorded %v", recs)
	}
	// Replay: the reads reach the layers; an unknown layer is skipped.
	recs = append(recs, Record{OpRead, 7, 10, 0}, Record{OpWrite, 0, 10, 0})
	r0, r1 := &countingReader{data: l0.data}, &countingReader{data: l1.data}
	st := StartReplay(recs, []io.ReaderAt{r0, r1}, 4, nil).Wait()
	if st.Done != 2 || st.Skipped != 2 || r0.reads.Load() != 1 || r1.reads.Load() != 1 {
		t.Fatalf("replay %+v", st)
	}
}

func TestFileListIsReported(t *testing.T) {
	p := filepath.Join(t.TempDir(), "trace")
	os.WriteFile(p, []byte("/usr/bin/\n/etc/hosts\n"), 0o644)
	if m, _ := DetectMode(p); m != FileListMode {
		t.Fatalf("mode %v", m)
	}
	if _, err := LoadTrace(p); !errors.Is(err, ErrFileList) || !strings.Contains(err.Error(), "not supported") {
		t.Fatalf("%v", err)
	}
}

type memFile struct{ countingReader }

func (m *memFile) WriteAt([]byte, int64) (int, error) { return 0, errors.New("ro") }
func (m *memFile) Size() int64                        { return int64(len(m.data)) }
func (m *memFile) Sync() error                        { return nil }
func (m *memFile) Close() error                       { return nil }

// batchFile is a memFile that takes batches.
type batchFile struct{ memFile }

func (b *batchFile) Batch(reqs []core.IORequest) error {
	for i := range reqs {
		reqs[i].N, reqs[i].Err = b.ReadAt(reqs[i].Buf, reqs[i].Off)
	}
	return nil
}

func TestRecordBatches(t *testing.T) {
	p := filepath.Join(t.TempDir(), "trace")
	os.WriteFile(p, nil, 0o644)
	rec, err := NewRecorder(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := rec.Wrap(3, &batchFile{memFile{countingReader{data: make([]byte, 1<<16)}}})
	bf, ok := f.(core.BatchFile)
	if !ok {
		t.Fatal("wrapping hid the batch interface")
	}
	reqs := []core.IORequest{
		{Op: core.OpRead, Buf: make([]byte, 512), Off: 1024},
		{Op: core.OpRead, Buf: make([]byte, 4096), Off: 1<<16 - 100}, // short
		{Op: core.OpRead, Buf: make([]byte, 1024), Off: 8192},
	}
	if err := bf.Batch(reqs); err != nil {
		t.Fatal(err)
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	recs, err := LoadTrace(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{{OpRead, 3, 512, 1024}, {OpRead, 3, 1024, 8192}}
	if len(recs) != 2 || recs[0] != want[0] || recs[1] != want[1] {
		t.Fatalf("recorded %v", recs)
	}
	// Close again does nothing more.
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestRecordAbort(t *testing.T) {
	p := filepath.Join(t.TempDir(), "trace")
	os.WriteFile(p, nil, 0o644)
	rec, err := NewRecorder(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec.Wrap(0, &memFile{countingReader{data: make([]byte, 4096)}}).ReadAt(make([]byte, 512), 0)
	rec.Abort()
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(p); err != nil || st.Size() != 0 {
		t.Fatalf("trace after Abort: %v %v", st, err)
	}
	for _, s := range []string{".lock", ".ok"} {
		if _, err := os.Stat(p + s); err == nil {
			t.Fatalf("%s left after Abort", s)
		}
	}
}

func TestRecordWriteFailureEmptiesTrace(t *testing.T) {
	p := filepath.Join(t.TempDir(), "trace")
	os.WriteFile(p, nil, 0o644)
	rec, err := NewRecorder(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A directory where the trace was: the write fails, even for root.
	os.Remove(p)
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := rec.Close(); err == nil {
		t.Fatal("writing the trace into a directory succeeded")
	}
	for _, s := range []string{".lock", ".ok"} {
		if _, err := os.Stat(p + s); err == nil {
			t.Fatalf("%s left after a failed write", s)
		}
	}
}

// TestReplayLargeRecordInPieces: a record larger than the worker's buffer
// is read in pieces of at most 1 MiB, all of it.
func TestReplayLargeRecordInPieces(t *testing.T) {
	r := &countingReader{data: make([]byte, 5<<20)}
	st := StartReplay([]Record{{OpRead, 0, 3<<20 + 5, 4096}}, []io.ReaderAt{r}, 1, nil).Wait()
	if st.Done != 1 || r.reads.Load() != 4 {
		t.Fatalf("replay %+v in %d reads", st, r.reads.Load())
	}
}

// BenchmarkReadAt compares a 4 KiB read of an in-memory layer with and
// without the recording wrapper.
func BenchmarkReadAt(b *testing.B) {
	layer := &memFile{countingReader{data: make([]byte, 64<<20)}}
	run := func(b *testing.B, f core.File) {
		buf := make([]byte, 4096)
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			off := int64(0)
			for pb.Next() {
				f.ReadAt(buf, off)
				off = (off + 1<<20 + 4096) % (64<<20 - 4096)
			}
		})
	}
	b.Run("plain", func(b *testing.B) { run(b, layer) })
	b.Run("recording", func(b *testing.B) {
		p := filepath.Join(b.TempDir(), "trace")
		os.WriteFile(p, nil, 0o644)
		rec, err := NewRecorder(p, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer rec.Abort()
		run(b, rec.Wrap(0, layer))
	})
}
