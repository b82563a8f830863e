package sidecar

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
)

// drainGuard stands between a server and its handler so that shutdown
// never cuts a request silently. Until drain is called it only notes, per
// connection, whether a request is in flight and whether its response has
// started. drain then takes over every request whose response has not
// started: its context is cancelled, so the handler gives up on WeChat, the
// rate limiter or a shared code fetch, and whatever the handler then writes
// is replaced by 503, errcode -1 and Retry-After: 1, which a caller can
// retry on another instance. A response that already started is left to
// finish or be cut at SHUTDOWN_TIMEOUT.
//
// A cache hit must not pay for this, so nothing is allocated per request:
// an HTTP/1 connection serves one request at a time, and each connection
// gets, once, a cancellable context (the parent of its requests' contexts)
// and a drainWriter that its requests reuse. The 503 is written from the
// handler's own goroutine once the handler notices the cancellation (every
// wait in the proxy selects on its context); writing it from drain's
// goroutine would need a goroutine or a private header map per request.
type drainGuard struct {
	draining atomic.Bool

	mu    sync.Mutex
	conns map[net.Conn]*drainConn
}

// drainConn is one connection's share of the guard.
type drainConn struct {
	cancel context.CancelFunc // cancels the connection's context, so its request's
	writer drainWriter        // reused by each request on the connection
}

type drainConnKey struct{}

// drainWriter states. Only the connection's own goroutine moves a writer
// out of responseTakenOver; drain only moves it there, from pending.
const (
	responseIdle int32 = iota // no request in the handler
	responsePending
	responseStarted
	responseTakenOver
)

// errDrained is what a taken-over request's handler gets from Write.
var errDrained = errors.New("wxa-sidecar: response replaced by the shutdown drain's 503")

// drainedBody is the 503's body: WeChat's words for a transient failure.
var drainedBody = []byte(`{"errcode":-1,"errmsg":"system error: shutting down, retry (wxa-sidecar)"}`)

var drainedContentLength = []string{strconv.Itoa(len(drainedBody))}

// guard installs g on srv: around its handler, and on its connections
// through ConnContext and ConnState (which it must not have already).
func (g *drainGuard) guard(srv *http.Server) {
	next := srv.Handler
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { g.serve(next, w, r) })
	srv.ConnContext = g.connContext
	srv.ConnState = g.connState
}

func (g *drainGuard) connContext(ctx context.Context, c net.Conn) context.Context {
	dc := &drainConn{}
	ctx, dc.cancel = context.WithCancel(ctx)
	g.mu.Lock()
	if g.conns == nil {
		g.conns = map[net.Conn]*drainConn{}
	}
	g.conns[c] = dc
	g.mu.Unlock()
	return context.WithValue(ctx, drainConnKey{}, dc)
}

func (g *drainGuard) connState(c net.Conn, state http.ConnState) {
	if state != http.StateClosed && state != http.StateHijacked {
		return
	}
	g.mu.Lock()
	dc := g.conns[c]
	delete(g.conns, c)
	g.mu.Unlock()
	if dc != nil {
		dc.cancel()
	}
}

func (g *drainGuard) serve(next http.Handler, w http.ResponseWriter, r *http.Request) {
	dc, _ := r.Context().Value(drainConnKey{}).(*drainConn)
	if dc == nil || r.ProtoMajor != 1 {
		// Several requests at once on one connection (HTTP/2, which these
		// ports do not speak) would share the writer.
		next.ServeHTTP(w, r)
		return
	}
	d := &dc.writer
	d.ResponseWriter, d.answered = w, false
	d.state.Store(responsePending)
	defer func() {
		d.ResponseWriter = nil
		d.state.Store(responseIdle)
	}()
	if g.draining.Load() {
		// Arrived after the drain (on a connection accepted before it).
		d.state.Store(responseTakenOver)
		d.answer()
		return
	}
	next.ServeHTTP(d, r)
	if d.state.Load() == responseTakenOver && !d.answered {
		d.answer()
	}
}

// drain takes over every request in flight whose response has not started,
// and every request that arrives from now on. It returns how many it took.
func (g *drainGuard) drain() int {
	g.draining.Store(true)
	g.mu.Lock()
	defer g.mu.Unlock()
	taken := 0
	for _, dc := range g.conns {
		if dc.writer.state.CompareAndSwap(responsePending, responseTakenOver) {
			// The answer closes the connection, so no later request on it
			// inherits the cancelled context.
			dc.cancel()
			taken++
		}
	}
	return taken
}

// drainWriter is the ResponseWriter a guarded handler gets. Only state is
// shared with drain; everything else belongs to the connection's goroutine.
type drainWriter struct {
	http.ResponseWriter
	state    atomic.Int32
	answered bool // the 503 went out; the handler's writes go nowhere
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
