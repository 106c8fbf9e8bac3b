package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"
)

// maxRedirects is the number of redirects a data request follows (the HTTP
// client default upstream).
const maxRedirects = 8

// retry runs fn until it succeeds, fails permanently, the retries are used
// up or the operation's budget runs out. Each attempt gets its own deadline
// so that a stalled exchange is abandoned.
func (c *Client) retry(ctx context.Context, what string, fn func(ctx context.Context) error) error {
	bctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	var last error
	for attempt := 0; ; attempt++ {
		actx, acancel := context.WithTimeout(bctx, c.opts.AttemptTimeout)
		err := fn(actx)
		acancel()
		if err == nil {
			return nil
		}
		if errors.Is(err, context.DeadlineExceeded) && bctx.Err() == nil {
			err = fmt.Errorf("%w: no answer within %s", ErrTimeout, c.opts.AttemptTimeout)
		}
		last = err
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, ctx.Err())
		}
		if permanent(err) {
			return c.failed(fmt.Errorf("%s: %w", what, err))
		}
		if bctx.Err() != nil {
			return c.failed(fmt.Errorf("%s: budget of %s used up: %w (last error: %w)", what, c.opts.Timeout, ErrTimeout, last))
		}
		if attempt >= c.opts.Retries {
			return c.failed(fmt.Errorf("%s: %d attempts: %w", what, attempt+1, last))
		}
		c.stats.retries.Add(1)
		c.log.Debug("retrying registry request", "op", what, "attempt", attempt+1, "err", err)
		d := time.Duration(10<<min(attempt, 7)) * time.Millisecond
		d = d/2 + rand.N(d/2+1)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-bctx.Done():
			t.Stop()
		}
	}
}

// failed counts an operation that failed for good under its error class and
// returns err. Operations the caller cancelled are not registry errors and
// are not counted.
func (c *Client) failed(err error) error {
	c.stats.errors[classOf(err)].Add(1)
	return err
}

// permanent reports errors a retry cannot cure.
func permanent(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrBadURL)
}

// readRange performs one ranged data request for p at off of a blob of the
// given size (-1: unknown; then the response's total is returned). The
// response is checked: status 206 with the exact Content-Range asked for (or
// a 200 carrying the whole blob), the total size, and the full body length.
// Anything else is an error and nothing is returned as data.
func (c *Client) readRange(ctx context.Context, blobURL string, p []byte, off, size int64) (int64, error) {
	e, err := c.entry(ctx, blobURL)
	if err != nil {
		return 0, err
	}
	total, err := c.readFrom(ctx, blobURL, e, p, off, size)
	if err != nil {
		// Any failed data request redoes the resolution next time.
		c.evict(blobURL, e)
	}
	return total, err
}

func (c *Client) readFrom(ctx context.Context, blobURL string, e *urlEntry, p []byte, off, size int64) (int64, error) {
	target := e.target
	auth := e.auth
	authHost := hostOf(blobURL)
	if e.redirected {
		auth = ""
	}
	if p2p := c.P2PAddress(); p2p != "" {
		// The agent fetches on the reader's behalf; it is handed what the
		// registry would get (REMOTE.md §6).
		target = p2p + "/" + target
		authHost = hostOf(target)
	}
	n := int64(len(p))
	for hop := 0; ; hop++ {
		hdr := rangeHeader(off, n)
		if auth != "" && hostOf(target) == authHost {
			hdr.Set("Authorization", auth)
		}
		c.stats.dataRequests.Add(1)
		resp, err := c.send(ctx, target, hdr)
		if err != nil {
			return 0, err
		}
		code := resp.StatusCode
		if code >= 300 && code < 400 && resp.Header.Get("Location") != "" {
			drain(resp)
			if hop >= maxRedirects {
				return 0, fmt.Errorf("%w: too many redirects for %s", ErrBadResponse, Redact(blobURL))
			}
			loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
			if err != nil || (loc.Scheme != "http" && loc.Scheme != "https") {
				return 0, fmt.Errorf("%w: redirect of %s to a bad location", ErrBadResponse, Redact(blobURL))
			}
			target = loc.String()
			continue
		}
		defer resp.Body.Close()
		switch code {
		case http.StatusPartialContent:
			first, last, total, err := parseContentRange(resp.Header.Get("Content-Range"))
			if err != nil {
				return 0, err
			}
			if total < 0 {
				return 0, withClass(ErrorBody, fmt.Errorf("%w: Content-Range of %s without total", ErrBadResponse, Redact(blobURL)))
			}
			if size >= 0 && total != size {
				return 0, withClass(ErrorBody, fmt.Errorf("%w: %s is %d bytes, the registry now says %d", ErrBadResponse, Redact(blobURL), size, total))
			}
			want := min(n, total-off)
			if first != off || last != off+want-1 {
				return 0, withClass(ErrorBody, fmt.Errorf("%w: asked %s for bytes %d-%d, got %d-%d", ErrBadResponse, Redact(blobURL), off, off+want-1, first, last))
			}
			if resp.ContentLength >= 0 && resp.ContentLength != want {
				return 0, withClass(ErrorBody, fmt.Errorf("%w: Content-Length %d for a range of %d", ErrBadResponse, resp.ContentLength, want))
			}
			if err := readBody(resp.Body, p[:want]); err != nil {
				return 0, err
			}
			c.stats.bytes.Add(uint64(want))
			return total, nil
		case http.StatusOK:
			// A server that ignores Range sends the whole blob.
			total := resp.ContentLength
			if total < 0 || (size >= 0 && total != size) {
				return 0, withClass(ErrorBody, fmt.Errorf("%w: 200 for a range request of %s with length %d", ErrBadResponse, Redact(blobURL), total))
			}
			if off > 0 {
				if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
					return 0, withClass(ErrorBody, fmt.Errorf("%w: body of %s: %w", ErrBadResponse, Redact(blobURL), err))
				}
			}
			want := max(0, min(n, total-off))
			if err := readBody(resp.Body, p[:want]); err != nil {
				return 0, err
			}
			c.stats.bytes.Add(uint64(want))
			return total, nil
		default:
			return 0, statusErr("read", target, code)
		}
	}
}

// readBody fills p from r; a short body is a bad response.
func readBody(r io.Reader, p []byte) error {
	n, err := io.ReadFull(r, p)
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return withClass(ErrorBody, fmt.Errorf("%w: short body: %d of %d bytes: %w", ErrBadResponse, n, len(p), err))
	}
	return nil
}
