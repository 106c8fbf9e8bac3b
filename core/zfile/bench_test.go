package zfile_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/zfile"
	"github.com/overlaybd-go/overlaybd/engines/psync"
	"golang.org/x/sys/unix"
)

// benchInput is 32 MiB of the vectors' plain input repeated: patterned,
// zero, text and incompressible regions.
var benchInput = sync.OnceValue(func() []byte {
	const size = 32 << 20
	b := make([]byte, 0, size)
	for len(b) < size {
		b = append(b, plain[:min(len(plain), size-len(b))]...)
	}
	return b
})

// benchFile writes data to a file in dir and opens it with psync.
func benchFile(b *testing.B, dir, name string, data []byte) core.File {
	b.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		b.Fatal(err)
	}
	f, err := psync.New(core.EngineConfig{}).Open(p, core.OpenOptions{Flag: os.O_RDONLY})
	if err != nil {
		b.Fatal(err)
	}
	return f
}

// benchCases are the files of the extraction benchmarks. The lz4 files
// without block CRCs show, in the same run, how much of the gap to the bare
// codec the mandatory CRC accounts for.
var benchCases = []struct {
	algo  string
	bs    int
	noCRC bool
}{{"lz4", 4096, false}, {"lz4", 32768, false}, {"zstd", 4096, false}, {"zstd", 32768, false},
	{"lz4", 4096, true}, {"lz4", 32768, true}}

// benchName names a benchmark case: algorithm, block size, "-nocrc".
func benchName(algo string, bs int, noCRC bool) string {
	s := fmt.Sprintf("%s-bs%d", algo, bs/1024)
	if noCRC {
		s += "-nocrc"
	}
	return s
}

// BenchmarkExtract measures sequential extraction (4 MiB reads through the
// Reader from a file in the page cache) against its peer, BareDecode: the
// same codec decoding the same blocks from memory in a loop.
func BenchmarkExtract(b *testing.B) {
	in := benchInput()
	dir := b.TempDir()
	for _, c := range benchCases {
		z := compress(b, in, zfile.Options{Algorithm: c.algo, BlockSize: c.bs, NoCRC: c.noCRC})
		name := benchName(c.algo, c.bs, c.noCRC)
		b.Run(name+"/BareDecode", func(b *testing.B) {
			r, err := zfile.Open(benchFile(b, dir, name+".bare", z))
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			_, f, _ := core.Codecs.LookupNumber(int(r.Header().Algorithm))
			codec, _ := f()
			payloads := make([][]byte, r.BlockCount())
			for i := range payloads {
				off, l := r.StoredBlock(int64(i))
				payloads[i] = z[off : off+l-crcLen(c.noCRC)]
			}
			dst := make([]byte, c.bs)
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				for _, p := range payloads {
					if _, err := codec.Decompress(dst, p); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
		for _, workers := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/Reader-workers%d", name, workers), func(b *testing.B) {
				r, err := zfile.Open(benchFile(b, dir, name, z), zfile.WithWorkers(workers))
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close()
				buf := make([]byte, 4<<20)
				b.SetBytes(r.Size())
				for b.Loop() {
					for off := int64(0); off < r.Size(); off += int64(len(buf)) {
						if _, err := r.ReadAt(buf, off); err != nil && err != io.EOF {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}

// BenchmarkRandom4K measures random aligned 4 KiB reads from an lz4 ZFile
// (4 KiB and 32 KiB blocks) against the same reads from the uncompressed
// file, both through psync from the page cache.
func BenchmarkRandom4K(b *testing.B) {
	in := benchInput()
	dir := b.TempDir()
	files := map[string]core.File{"Uncompressed": benchFile(b, dir, "raw", in)}
	for _, bs := range []int{4096, 32768} {
		r, err := zfile.Open(benchFile(b, dir, fmt.Sprint(bs), compress(b, in, zfile.Options{BlockSize: bs})))
		if err != nil {
			b.Fatal(err)
		}
		files[fmt.Sprintf("ZFile-lz4-bs%d", bs/1024)] = r
	}
	for _, name := range []string{"Uncompressed", "ZFile-lz4-bs4", "ZFile-lz4-bs32"} {
		f := files[name]
		b.Run(name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 1))
			buf := make([]byte, 4096)
			n := f.Size() / 4096
			b.SetBytes(4096)
			for b.Loop() {
				if _, err := f.ReadAt(buf, rng.Int64N(n)*4096); err != nil {
					b.Fatal(err)
				}
			}
		})
		f.Close()
	}
}

// BenchmarkRandom4KRatio measures random aligned 4 KiB reads from lz4
// ZFiles (4 KiB and 32 KiB blocks, default cache) against the same reads
// from the uncompressed file, through psync from the page cache,
// interleaved in groups of 64 reads on one locked thread so that the load
// of a shared machine hits both alike. It reports the ZFile's speed and
// thread-CPU time as fractions of the uncompressed file's ("speed-ratio",
// "cpu-ratio"; 1 would be as fast) and the ZFile's ns per read.
func BenchmarkRandom4KRatio(b *testing.B) {
	in := benchInput()
	dir := b.TempDir()
	raw := benchFile(b, dir, "raw", in)
	defer raw.Close()
	for _, bs := range []int{4096, 32768} {
		b.Run(fmt.Sprintf("lz4-bs%d", bs/1024), func(b *testing.B) {
			r, err := zfile.Open(benchFile(b, dir, fmt.Sprint(bs), compress(b, in, zfile.Options{BlockSize: bs})), zfile.WithWorkers(1))
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			const group = 64
			offs := make([]int64, group)
			rng := rand.New(rand.NewPCG(1, 1))
			buf := make([]byte, 4096)
			n := r.Size() / 4096
			var zWall, rawWall, zCPU, rawCPU time.Duration
			for b.Loop() {
				for k := range offs {
					offs[k] = rng.Int64N(n) * 4096
				}
				c0, t0 := threadCPU(), time.Now()
				for _, o := range offs {
					if _, err := raw.ReadAt(buf, o); err != nil {
						b.Fatal(err)
					}
				}
				c1, t1 := threadCPU(), time.Now()
				for _, o := range offs {
					if _, err := r.ReadAt(buf, o); err != nil {
						b.Fatal(err)
					}
				}
				c2, t2 := threadCPU(), time.Now()
				rawWall += t1.Sub(t0)
				zWall += t2.Sub(t1)
				rawCPU += c1 - c0
				zCPU += c2 - c1
			}
			b.ReportMetric(float64(rawWall)/float64(zWall), "speed-ratio")
			if zCPU > 0 {
				b.ReportMetric(float64(rawCPU)/float64(zCPU), "cpu-ratio")
			}
			b.ReportMetric(float64(zWall.Nanoseconds())/float64(b.N*group), "zfile-ns/read")
		})
	}
}

// BenchmarkBatchedSmallReads measures random reads that span 2 to 4 blocks
// of a 4 KiB-block file (8 KiB and 12 KiB, unaligned; cache off) with the
// registry's codec as it is (liblz4 batches with cgo_codecs) against the
// same codec made to decode block by block, interleaved in groups of 64
// reads on one locked thread. "cpu-ratio" above 1 means the registry's
// codec used less CPU.
func BenchmarkBatchedSmallReads(b *testing.B) {
	in := benchInput()
	dir := b.TempDir()
	for _, algo := range []string{"lz4", "zstd"} {
		z := compress(b, in, zfile.Options{Algorithm: algo})
		for _, size := range []int{8192, 12288} {
			b.Run(fmt.Sprintf("%s/%dKiB", algo, size/1024), func(b *testing.B) {
				as, err := zfile.Open(benchFile(b, dir, algo+".as", z), zfile.WithWorkers(1), zfile.WithCacheBytes(0))
				if err != nil {
					b.Fatal(err)
				}
				defer as.Close()
				per, err := zfile.Open(benchFile(b, dir, algo+".per", z), zfile.WithWorkers(1), zfile.WithCacheBytes(0), zfile.WithCodec(single{fileCodec(b, z)}))
				if err != nil {
					b.Fatal(err)
				}
				defer per.Close()
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				const group = 64
				offs := make([]int64, group)
				rng := rand.New(rand.NewPCG(2, 2))
				buf := make([]byte, size)
				var asCPU, perCPU time.Duration
				for b.Loop() {
					for k := range offs {
						offs[k] = 1 + rng.Int64N(as.Size()-int64(size)-1)
					}
					c0 := threadCPU()
					for _, o := range offs {
						if _, err := per.ReadAt(buf, o); err != nil {
							b.Fatal(err)
						}
					}
					c1 := threadCPU()
					for _, o := range offs {
						if _, err := as.ReadAt(buf, o); err != nil {
							b.Fatal(err)
						}
					}
					c2 := threadCPU()
					perCPU += c1 - c0
					asCPU += c2 - c1
				}
				if asCPU > 0 {
					b.ReportMetric(float64(perCPU)/float64(asCPU), "cpu-ratio")
				}
			})
		}
	}
}

// BenchmarkCompress measures compression MB/s per algorithm and flavour
// (one worker, and two) into io.Discard.
func BenchmarkCompress(b *testing.B) {
	in := benchInput()[:8<<20]
	for _, name := range core.Codecs.Names() {
		if _, ok := core.Codecs.NumberOf(name); ok {
			continue // the algorithm names are aliases of a flavour
		}
		for _, bs := range []int{4096, 32768} {
			for _, workers := range []int{1, 2} {
				b.Run(fmt.Sprintf("%s/bs%d/workers%d", name, bs/1024, workers), func(b *testing.B) {
					b.SetBytes(int64(len(in)))
					for b.Loop() {
						w, err := zfile.NewWriter(io.Discard, zfile.Options{Algorithm: name, BlockSize: bs, Workers: workers})
						if err != nil {
							b.Fatal(err)
						}
						if _, err := w.Write(in); err != nil {
							b.Fatal(err)
						}
						if err := w.Close(); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}

// BenchmarkExtractRatio interleaves its peers at a fine grain to cancel the
// noise of a shared machine: for every 4 MiB chunk of the file it times the
// bare codec decoding that chunk's blocks from memory into a 4 MiB buffer
// (no IO, no CRC), then the Reader reading the chunk from the page cache. It reports the Reader's speed as a
// fraction of the bare codec's ("speed-ratio"; ≥ 1 means faster).
func BenchmarkExtractRatio(b *testing.B) {
	in := benchInput()
	dir := b.TempDir()
	const chunk = 4 << 20
	for _, c := range benchCases {
		z := compress(b, in, zfile.Options{Algorithm: c.algo, BlockSize: c.bs, NoCRC: c.noCRC})
		name := benchName(c.algo, c.bs, c.noCRC)
		for _, workers := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/workers%d", name, workers), func(b *testing.B) {
				r, err := zfile.Open(benchFile(b, dir, name, z), zfile.WithWorkers(workers))
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close()
				_, f, _ := core.Codecs.LookupNumber(int(r.Header().Algorithm))
				codec, _ := f()
				// The bare loop decodes each block to its place in a chunk
				// buffer, as the reader does, so both write the same output.
				bareOut := make([]byte, chunk)
				buf := make([]byte, chunk)
				var bare, reader, bareCPU, readerCPU time.Duration
				// With one worker everything runs on this goroutine: pin it
				// to its thread and also count the thread's CPU time, which
				// time stolen by other processes does not inflate.
				if workers == 1 {
					runtime.LockOSThread()
					defer runtime.UnlockOSThread()
				}
				b.SetBytes(r.Size())
				for b.Loop() {
					for off := int64(0); off < r.Size(); off += chunk {
						c0 := threadCPU()
						t0 := time.Now()
						for i := off / int64(c.bs); i < min(r.BlockCount(), (off+chunk)/int64(c.bs)); i++ {
							o, l := r.StoredBlock(i)
							at := i*int64(c.bs) - off
							if _, err := codec.Decompress(bareOut[at:at+min(int64(c.bs), r.Size()-i*int64(c.bs))], z[o:o+l-crcLen(c.noCRC)]); err != nil {
								b.Fatal(err)
							}
						}
						t1 := time.Now()
						c1 := threadCPU()
						if _, err := r.ReadAt(buf, off); err != nil && err != io.EOF {
							b.Fatal(err)
						}
						c2 := threadCPU()
						t2 := time.Now()
						bare += t1.Sub(t0)
						reader += t2.Sub(t1)
						bareCPU += c1 - c0
						readerCPU += c2 - c1
					}
				}
				b.ReportMetric(float64(bare)/float64(reader), "speed-ratio")
				if workers == 1 && readerCPU > 0 {
					b.ReportMetric(float64(bareCPU)/float64(readerCPU), "cpu-ratio")
				}
			})
		}
	}
}

// crcLen is the length of the CRC that ends each stored block.
func crcLen(noCRC bool) int64 {
	if noCRC {
		return 0
	}
	return 4
}

// threadCPU returns the CPU time consumed by the calling thread.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
