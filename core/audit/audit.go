// Package audit writes overlaybd's audit log (enableAudit, auditPath): one
// line per data-path event in upstream's format
//
//	YYYY/MM/DD HH:MM:SS.uuuuuu|AUDIT|th=<16 hex>|<event>[name=value]…
//
// with upstream's event names and fields (download, file:read, file:write,
// file:pread, bk_download, eviction) and upstream's fixed rotation of 10 MiB
// × 3 files. A nil *Log is valid and writes nothing, so callers need not
// check whether auditing is on.
package audit

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/core/config"
	"github.com/overlaybd-go/overlaybd/core/logging"
)

// Upstream's event names.
const (
	EventDownload   = "download"    // every registry read made by a cache
	EventFileRead   = "file:read"   // file-cache media read ≥ 1 ms
	EventFileWrite  = "file:write"  // file-cache media write ≥ 10 ms
	EventFilePread  = "file:pread"  // read of a local/downloaded layer ≥ 10 ms
	EventBkDownload = "bk_download" // each background-download read
	EventEviction   = "eviction"    // file/gzip cache eviction run
)

// Rotation is upstream's fixed audit rotation: 10 MiB per file, 3 rotated
// files kept.
const (
	RotateSize = 10 << 20
	RotateNum  = 3
)

// Thresholds below which upstream does not record an IO event; events not
// listed are always recorded.
var Thresholds = map[string]time.Duration{
	EventFileRead:  time.Millisecond,
	EventFileWrite: 10 * time.Millisecond,
	EventFilePread: 10 * time.Millisecond,
}

// Field is one named value, printed as [name=value].
type Field struct {
	Name  string
	Value any
}

// Log is an open audit log.
type Log struct {
	r   *logging.Rotator
	now func() time.Time

	mu  sync.Mutex
	buf []byte
}

// Open opens the audit log global asks for. It returns a nil *Log (which
// records nothing) and no error when enableAudit is false or auditPath is
// empty. When the file cannot be opened it returns a nil *Log and the error;
// upstream then runs on without audit, and so should the caller, logging the
// error as a warning.
func Open(global *config.Global) (*Log, error) {
	if !global.EnableAudit || global.AuditPath == "" {
		return nil, nil
	}
	return OpenFile(global.AuditPath)
}

// OpenFile opens (appending to) the audit log at path with upstream's
// rotation.
func OpenFile(path string) (*Log, error) {
	return openFile(path, RotateSize)
}

func openFile(path string, size int64) (*Log, error) {
	r, err := logging.OpenRotator(path, size, RotateNum)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return &Log{r: r, now: time.Now}, nil
}

// Enabled reports whether l records events.
func (l *Log) Enabled() bool { return l != nil }

// Event records event name with fields, in order.
func (l *Log) Event(name string, fields ...Field) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := appendPrefix(l.buf[:0], l.now())
	b = append(b, name...)
	for _, f := range fields {
		b = append(b, '[')
		b = append(b, f.Name...)
		b = append(b, '=')
		b = appendValue(b, f.Value)
		b = append(b, ']')
	}
	b = append(b, '\n')
	l.buf = b
	// Audit output is best effort, as upstream: a failed write is dropped.
	_, _ = l.r.Write(b)
}

// IO records an IO event (download, file:read, file:write, file:pread,
// bk_download) of size bytes at offset of pathname that took latency,
// applying upstream's latency thresholds. Signed-URL queries and URL
// credentials are removed from pathname.
func (l *Log) IO(event, pathname string, offset, size int64, latency time.Duration) {
	if l == nil || latency < Thresholds[event] {
		return
	}
	l.Event(event,
		Field{"pathname", logging.Redact(pathname)},
		Field{"offset", offset},
		Field{"size", size},
		Field{"latency", latency.Microseconds()})
}

// Eviction records a cache eviction run.
func (l *Log) Eviction(actualEvict, evictByCache, evictByDisk, totalUsed int64) {
	l.Event(EventEviction,
		Field{"actualEvict", actualEvict},
		Field{"evictByCache", evictByCache},
		Field{"evictByDisk", evictByDisk},
		Field{"totalUsed_", totalUsed})
}

// Close closes the file.
func (l *Log) Close() error {
	if l == nil {
		return nil
	}
	return l.r.Close()
}

// appendPrefix appends "YYYY/MM/DD HH:MM:SS.uuuuuu|AUDIT|th=<16 hex>|" with
// the time in local standard time (no DST shift), as upstream's logger
// prints it, and the OS thread id in the place of upstream's coroutine id.
func appendPrefix(b []byte, t time.Time) []byte {
	t = standardTime(t)
	b = t.AppendFormat(b, "2006/01/02 15:04:05.000000")
	b = append(b, "|AUDIT|th="...)
	b = fmt.Appendf(b, "%016X", uint64(unix.Gettid()))
	return append(b, '|')
}

// standardTime returns t in the local zone's standard (non-DST) offset.
func standardTime(t time.Time) time.Time {
	t = t.In(time.Local)
	if !t.IsDST() {
		return t
	}
	// The standard offset is the smaller of January's and July's offsets
	// in the zones that shift forward in summer.
	y := t.Year()
	_, jan := time.Date(y, 1, 1, 0, 0, 0, 0, time.Local).Zone()
	_, jul := time.Date(y, 7, 1, 0, 0, 0, 0, time.Local).Zone()
	return t.In(time.FixedZone("STD", min(jan, jul)))
}

func appendValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case string:
		return append(b, x...)
	case int:
		return strconv.AppendInt(b, int64(x), 10)
	case int64:
		return strconv.AppendInt(b, x, 10)
	case uint64:
		return strconv.AppendUint(b, x, 10)
	case uint32:
		return strconv.AppendUint(b, uint64(x), 10)
	default:
		return fmt.Append(b, x)
	}
}

// ObserveSourceRead records upstream's "download" event for a read a cache
// made from its source (see metrics.InstrumentCache). The pathname is
// SourceName(src).
func (l *Log) ObserveSourceRead(src core.Source, off int64, n int, latency time.Duration, err error) {
	if l == nil {
		return
	}
	l.IO(EventDownload, SourceName(src), off, int64(n), latency)
}

// SourceName is a source's pathname in audit events: upstream's path form
// of its URL ("/" followed by the URL) when it has a URL() string method,
// else its key.
func SourceName(src core.Source) string {
	if u, ok := src.(interface{ URL() string }); ok {
		return "/" + strings.TrimPrefix(u.URL(), "/")
	}
	return src.Key()
}

var _ core.Auditor = (*Log)(nil)
