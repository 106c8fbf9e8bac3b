package fileengine

import (
	"sync/atomic"

	"github.com/overlaybd-go/overlaybd/core"
)

// Counters are an engine's statistics, updated atomically by its files and
// its backend and read with Snapshot.
type Counters struct {
	reads, writes, readBytes, writeBytes atomic.Uint64
	syncs, submits, submitted, fallbacks atomic.Uint64
	inFlight, maxInFlight                atomic.Int64
}

// Submitted records one submission to the kernel (a system call or a ring
// enter) that carried n requests.
func (c *Counters) Submitted(n int) {
	c.submits.Add(1)
	c.submitted.Add(uint64(n))
}

// Begin records n requests entering the kernel and raises the in-flight
// high-water mark.
func (c *Counters) Begin(n int) {
	cur := c.inFlight.Add(int64(n))
	for {
		m := c.maxInFlight.Load()
		if cur <= m || c.maxInFlight.CompareAndSwap(m, cur) {
			return
		}
	}
}

// End records n requests leaving the kernel.
func (c *Counters) End(n int) { c.inFlight.Add(-int64(n)) }

// InFlight returns the number of requests in the kernel now.
func (c *Counters) InFlight() int64 { return c.inFlight.Load() }

// Fallback records that a file or the engine fell back to a simpler path.
func (c *Counters) Fallback() { c.fallbacks.Add(1) }

// Synced records one completed fsync/fdatasync.
func (c *Counters) Synced() { c.syncs.Add(1) }

func (c *Counters) read(n int) {
	c.reads.Add(1)
	c.readBytes.Add(uint64(n))
}

func (c *Counters) write(n int) {
	c.writes.Add(1)
	c.writeBytes.Add(uint64(n))
}

// Snapshot returns the counters as core.EngineStats.
func (c *Counters) Snapshot() core.EngineStats {
	return core.EngineStats{
		Reads: c.reads.Load(), Writes: c.writes.Load(),
		ReadBytes: c.readBytes.Load(), WriteBytes: c.writeBytes.Load(),
		Syncs: c.syncs.Load(), Submits: c.submits.Load(), SubmittedRequests: c.submitted.Load(),
		MaxInFlight: uint64(c.maxInFlight.Load()), Fallbacks: c.fallbacks.Load(),
	}
}
