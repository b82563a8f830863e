package main

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
)

// drainGuard stands between a server and its handler so that shutdown
// never cuts a request silently. Until drain is called it only keeps a list
// of the requests in flight. drain then takes over every request whose
// response has not started: its context is cancelled, so the handler gives
// up on WeChat, the rate limiter or a shared code fetch, and whatever the
// handler then writes is replaced by 503, errcode -1 and Retry-After: 1,
// which a caller can retry on another instance. A response that already
// started is left to finish or be cut at SHUTDOWN_TIMEOUT.
//
// The 503 is written from the handler's own goroutine, once the handler
// notices the cancellation (every wait in the proxy selects on its
// context). Writing it from drain's goroutine instead would need a goroutine
// or a private header map per request, a cost every cache hit would pay.
type drainGuard struct {
	mu       sync.Mutex
	draining bool
	head     *drainWriter // requests in flight, a list linked through the writers
}

// drainWriter states: the handler has not started its response, has started
// it, or the drain took the request over.
const (
	responsePending int32 = iota
	responseStarted
	responseTakenOver
)

// errDrained is what a taken-over request's handler gets from Write.
var errDrained = errors.New("wxa-sidecar: response replaced by the shutdown drain's 503")

// drainedBody is the 503's body: WeChat's words for a transient failure.
var drainedBody = []byte(`{"errcode":-1,"errmsg":"system error: shutting down, retry (wxa-sidecar)"}`)

var drainedContentLength = []string{strconv.Itoa(len(drainedBody))}

// Handler wraps next.
func (g *drainGuard) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		d := &drainWriter{ResponseWriter: w, cancel: cancel}
		if !g.add(d) {
			d.answer()
			return
		}
		defer g.remove(d)
		next.ServeHTTP(d, r.WithContext(ctx))
		if d.state.Load() == responseTakenOver && !d.answered {
			d.answer()
		}
	})
}

// add links d into the list, unless the drain has begun: then the request
// is answered 503 at once, like the ones the drain took over.
func (g *drainGuard) add(d *drainWriter) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.draining {
		return false
	}
	d.next = g.head
	if g.head != nil {
		g.head.prev = d
	}
	g.head = d
	return true
}

func (g *drainGuard) remove(d *drainWriter) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if d.prev != nil {
		d.prev.next = d.next
	} else {
		g.head = d.next
	}
	if d.next != nil {
		d.next.prev = d.prev
	}
	d.prev, d.next = nil, nil
}

// drain takes over every request in flight whose response has not started,
// and every request that arrives from now on. It returns how many it took.
func (g *drainGuard) drain() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.draining = true
	taken := 0
	for d := g.head; d != nil; d = d.next {
		if d.state.CompareAndSwap(responsePending, responseTakenOver) {
			d.cancel()
			taken++
		}
	}
	return taken
}

// drainWriter is the ResponseWriter a guarded handler gets. Only state is
// shared with drain; everything else belongs to the handler's goroutine.
type drainWriter struct {
	http.ResponseWriter
	state    atomic.Int32
	answered bool // the 503 went out; the handler's writes go nowhere
	cancel   context.CancelFunc

	prev, next *drainWriter
}

// start reports whether the handler may write its response: true unless
// the drain took the request over first.
func (d *drainWriter) start() bool {
	return d.state.Load() == responseStarted || d.state.CompareAndSwap(responsePending, responseStarted)
}

func (d *drainWriter) Header() http.Header {
	if d.answered {
		return http.Header{}
	}
	return d.ResponseWriter.Header()
}

func (d *drainWriter) WriteHeader(code int) {
	if d.answered {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// An informational response does not start the final one.
		if d.state.Load() != responseTakenOver {
			d.ResponseWriter.WriteHeader(code)
		}
		return
	}
	if !d.start() {
		d.answer()
		return
	}
	d.ResponseWriter.WriteHeader(code)
}

func (d *drainWriter) Write(b []byte) (int, error) {
	if d.answered {
		return 0, errDrained
	}
	if !d.start() {
		d.answer()
		return 0, errDrained
	}
	return d.ResponseWriter.Write(b)
}

// FlushError keeps http.ResponseController's Flush going through start: a
// flush commits the status line as surely as a write does.
func (d *drainWriter) FlushError() error {
	if d.answered {
		return errDrained
	}
	if !d.start() {
		d.answer()
		return errDrained
	}
	return http.NewResponseController(d.ResponseWriter).Flush()
}

func (d *drainWriter) Flush() { d.FlushError() }

// Unwrap lets http.ResponseController reach deadlines and full duplex.
func (d *drainWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

// answer sends the 503 in place of the handler's response, whatever headers
// the handler had set, and flushes it: a handler that then panics with
// http.ErrAbortHandler (httputil.ReverseProxy does on a failed copy) must
// not take the answer down with the connection.
func (d *drainWriter) answer() {
	d.answered = true
	h := d.ResponseWriter.Header()
	clear(h)
	h["Content-Type"] = []string{"application/json; encoding=utf-8"}
	h["Content-Length"] = drainedContentLength
	h["Retry-After"] = []string{"1"}
	h["Connection"] = []string{"close"}
	d.ResponseWriter.WriteHeader(http.StatusServiceUnavailable)
	d.ResponseWriter.Write(drainedBody)
	http.NewResponseController(d.ResponseWriter).Flush()
}
