package metrics

import (
	"sync"
	"time"
)

// Meter keeps upstream overlaybd's four counters of one set of reads
// ("pread" or "download"): calls in roughly the last second (counted at call
// start, failures included), bytes returned by successful reads in roughly
// the last second, the largest call duration in the current or previous 5 s
// interval, and the total bytes returned since start. The zero Meter is
// ready to use; it is safe for concurrent use.
type Meter struct {
	now func() time.Time // nil means time.Now

	mu      sync.Mutex
	qps     window
	tput    window
	latency maxInterval
	count   uint64
}

// window is a 1 s decaying window: the previous second's sum weighted by the
// part of it still inside the last second, plus the current second's sum.
type window struct {
	sec       int64 // the current second (Unix)
	cur, prev uint64
}

func (w *window) roll(now time.Time) {
	s := now.Unix()
	switch {
	case s == w.sec:
	case s == w.sec+1:
		w.sec, w.prev, w.cur = s, w.cur, 0
	default:
		w.sec, w.prev, w.cur = s, 0, 0
	}
}

func (w *window) add(now time.Time, n uint64) {
	w.roll(now)
	w.cur += n
}

func (w *window) value(now time.Time) float64 {
	w.roll(now)
	frac := float64(now.Nanosecond()) / 1e9
	return float64(w.prev)*(1-frac) + float64(w.cur)
}

// maxInterval is the largest value seen in the current or the previous
// 5 s interval.
type maxInterval struct {
	idx       int64
	cur, prev uint64
}

const latencyInterval = 5 * time.Second

func (m *maxInterval) roll(now time.Time) {
	i := now.UnixNano() / int64(latencyInterval)
	switch {
	case i == m.idx:
	case i == m.idx+1:
		m.idx, m.prev, m.cur = i, m.cur, 0
	default:
		m.idx, m.prev, m.cur = i, 0, 0
	}
}

func (m *maxInterval) put(now time.Time, v uint64) {
	m.roll(now)
	m.cur = max(m.cur, v)
}

func (m *maxInterval) value(now time.Time) uint64 {
	m.roll(now)
	return max(m.cur, m.prev)
}

func (m *Meter) clock() time.Time {
	if m.now != nil {
		return m.now()
	}
	return time.Now()
}

// Start counts a call and returns its start time, to be passed to Done.
func (m *Meter) Start() time.Time {
	now := m.clock()
	m.mu.Lock()
	m.qps.add(now, 1)
	m.mu.Unlock()
	return now
}

// Done ends a call begun at start that returned n bytes. The bytes count
// only when err is nil (io.EOF after n bytes counts as success too: pass nil).
func (m *Meter) Done(start time.Time, n int, err error) {
	now := m.clock()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.latency.put(now, uint64(max(now.Sub(start), 0)/time.Microsecond))
	if err == nil && n > 0 {
		m.tput.add(now, uint64(n))
		m.count += uint64(n)
	}
}

// MeterValues is a snapshot of a Meter.
type MeterValues struct {
	// QPS is calls per second, Throughput bytes per second.
	QPS, Throughput float64
	// MaxLatencyUS is the largest call duration (µs) of the current or
	// previous 5 s interval.
	MaxLatencyUS uint64
	// Count is the total bytes returned since start.
	Count uint64
}

// Values returns the meter's current values.
func (m *Meter) Values() MeterValues {
	now := m.clock()
	m.mu.Lock()
	defer m.mu.Unlock()
	return MeterValues{
		QPS:          m.qps.value(now),
		Throughput:   m.tput.value(now),
		MaxLatencyUS: m.latency.value(now),
		Count:        m.count,
	}
}
