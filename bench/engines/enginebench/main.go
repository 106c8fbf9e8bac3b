// Command enginebench drives one IO engine with the workloads that
// bench/engines/run.sh also gives fio (random or sequential reads of one
// block size from a number of goroutines, or in batches, for a fixed time)
// and prints one JSON line with the IOPS and the engine's counters.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"runtime/metrics"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/overlaybd-go/overlaybd/core"
	_ "github.com/overlaybd-go/overlaybd/engines/all"
)

type result struct {
	Engine      string  `json:"engine"`
	Workload    string  `json:"workload"`
	BlockSize   int     `json:"bs"`
	Depth       int     `json:"depth"`
	Mode        string  `json:"mode"`
	Direct      bool    `json:"direct"`
	Seconds     float64 `json:"seconds"`
	IOPS        float64 `json:"iops"`
	MiBps       float64 `json:"mibps"`
	MaxInFlight uint64  `json:"max_in_flight"`
	Submits     uint64  `json:"submits"`
	Requests    uint64  `json:"submitted_requests"`
	Fallbacks   uint64  `json:"fallbacks"`
	// CPUPerOp is the process's user and system CPU time per operation,
	// in microseconds (getrusage over the run).
	CPUPerOp float64 `json:"cpu_us_per_op"`
	// SchedP50 and SchedP90 are the Go scheduler's latencies over the
	// run (runtime/metrics /sched/latencies:seconds: how long goroutines
	// waited runnable before running), in microseconds.
	SchedP50 float64 `json:"sched_p50_us"`
	SchedP90 float64 `json:"sched_p90_us"`
}

const schedMetric = "/sched/latencies:seconds"

func schedLatencies() *metrics.Float64Histogram {
	s := []metrics.Sample{{Name: schedMetric}}
	metrics.Read(s)
	return s[0].Value.Float64Histogram()
}

// quantiles returns the qs quantiles, in microseconds, of the samples
// recorded between the snapshots before and after (each the upper bound of
// its bucket, or the lower bound of the last, unbounded one).
func quantiles(before, after *metrics.Float64Histogram, qs ...float64) []float64 {
	counts := make([]uint64, len(after.Counts))
	var total uint64
	for i := range counts {
		counts[i] = after.Counts[i] - before.Counts[i]
		total += counts[i]
	}
	out := make([]float64, len(qs))
	for k, q := range qs {
		want := uint64(q * float64(total))
		var sum uint64
		for i, c := range counts {
			sum += c
			if sum > want {
				v := after.Buckets[i+1]
				if math.IsInf(v, 1) {
					v = after.Buckets[i]
				}
				out[k] = v * 1e6
				break
			}
		}
	}
	return out
}

// cpuTime returns the user and system CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func alignedBuffer(n int) []byte {
	raw := make([]byte, n+4096)
	skip := (4096 - int(uintptr(unsafe.Pointer(&raw[0]))%4096)) % 4096
	return raw[skip : skip+n]
}

func main() {
	engine := flag.String("engine", "psync", "engine name or ioEngine number")
	path := flag.String("file", "", "file to read (must exist)")
	bs := flag.Int("bs", 4096, "block size")
	depth := flag.Int("depth", 1, "goroutines (mode goroutines) or requests per batch (mode batch)")
	mode := flag.String("mode", "goroutines", "goroutines: depth goroutines each reading; batch: one goroutine submitting batches of depth")
	workload := flag.String("rw", "randread", "randread, read (sequential) or randwrite")
	direct := flag.Bool("direct", true, "open O_DIRECT")
	runtime := flag.Duration("runtime", 5*time.Second, "how long to run")
	queue := flag.Int("queue", 0, "engine queue depth (0: default)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	flag.Parse()
	if *cpuprofile != "" {
		pf, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "enginebench:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			fmt.Fprintln(os.Stderr, "enginebench:", err)
			os.Exit(1)
		}
		defer pf.Close()
		defer pprof.StopCPUProfile()
	}
	if err := run(*engine, *path, *bs, *depth, *mode, *workload, *direct, *runtime, *queue); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "enginebench:", err)
		os.Exit(1)
	}
}

func run(engine, path string, bs, depth int, mode, workload string, direct bool, runtime time.Duration, queue int) error {
	name, factory, err := core.Engines.Resolve(engine)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	eng, err := factory(core.EngineConfig{QueueDepth: queue, Logger: log})
	if err != nil {
		return err
	}
	defer eng.Close()
	write := workload == "randwrite"
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
	}
	f, err := eng.Open(path, core.OpenOptions{Flag: flag, Direct: direct, Buffered: !direct})
	if err != nil {
		return err
	}
	defer f.Close()
	blocks := f.Size() / int64(bs)
	if blocks < 1 {
		return fmt.Errorf("%s is smaller than one block", path)
	}
	var ops atomic.Int64
	var failed atomic.Value
	deadline := time.Now().Add(runtime)
	start := time.Now()
	cpu0 := cpuTime()
	sched0 := schedLatencies()
	var wg sync.WaitGroup
	switch mode {
	case "goroutines":
		for g := range depth {
			wg.Go(func() {
				buf := alignedBuffer(bs)
				rng := rand.New(rand.NewPCG(uint64(g), 1))
				next := int64(g) * blocks / int64(depth)
				for i := 0; ; i++ {
					if i%16 == 0 && time.Now().After(deadline) {
						return
					}
					var off int64
					if workload == "read" {
						off = (next % blocks) * int64(bs)
						next++
					} else {
						off = rng.Int64N(blocks) * int64(bs)
					}
					var n int
					var err error
					if write {
						n, err = f.WriteAt(buf, off)
					} else {
						n, err = f.ReadAt(buf, off)
					}
					if n != bs {
						failed.Store(fmt.Errorf("IO at %d = %d, %v", off, n, err))
						return
					}
					ops.Add(1)
				}
			})
		}
	case "batch":
		bf, ok := f.(core.BatchFile)
		if !ok {
			return fmt.Errorf("%s files do not batch", name)
		}
		wg.Go(func() {
			reqs := make([]core.IORequest, depth)
			for i := range reqs {
				reqs[i] = core.IORequest{Op: core.OpRead, Buf: alignedBuffer(bs)}
				if write {
					reqs[i].Op = core.OpWrite
				}
			}
			rng := rand.New(rand.NewPCG(7, 1))
			next := int64(0)
			for time.Now().Before(deadline) {
				for i := range reqs {
					if workload == "read" {
						reqs[i].Off = (next % blocks) * int64(bs)
						next++
					} else {
						reqs[i].Off = rng.Int64N(blocks) * int64(bs)
					}
				}
				if err := bf.Batch(reqs); err != nil {
					failed.Store(err)
					return
				}
				for _, r := range reqs {
					if r.N != bs {
						failed.Store(fmt.Errorf("read at %d = %d, %v", r.Off, r.N, r.Err))
						return
					}
				}
				ops.Add(int64(depth))
			}
		})
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	cpu := cpuTime() - cpu0
	if err, ok := failed.Load().(error); ok {
		return err
	}
	st := eng.Stats()
	n := float64(ops.Load())
	sq := quantiles(sched0, schedLatencies(), 0.5, 0.9)
	return json.NewEncoder(os.Stdout).Encode(result{
		Engine: eng.Name(), Workload: workload, BlockSize: bs, Depth: depth, Mode: mode, Direct: direct,
		Seconds: elapsed, IOPS: n / elapsed, MiBps: n * float64(bs) / elapsed / (1 << 20),
		MaxInFlight: st.MaxInFlight, Submits: st.Submits, Requests: st.SubmittedRequests, Fallbacks: st.Fallbacks,
		CPUPerOp: float64(cpu.Microseconds()) / max(n, 1),
		SchedP50: sq[0], SchedP90: sq[1],
	})
}
