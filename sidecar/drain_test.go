package sidecar

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waiting counts the requests whose response has not started.
func (g *drainGuard) waiting() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, dc := range g.conns {
		if dc.writer.state.Load() == responsePending {
			n++
		}
	}
	return n
}

// guardedServer is an httptest server with g installed as main installs it.
func guardedServer(t *testing.T, g *drainGuard, h http.HandlerFunc) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	g.guard(srv.Config)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

type response struct {
	status int
	header http.Header
	body   string
	err    error
}

func getAsync(url string) <-chan response {
	ch := make(chan response, 1)
	go func() {
		resp, err := http.Get(url)
		if err != nil {
			ch <- response{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		ch <- response{status: resp.StatusCode, header: resp.Header, body: string(b), err: err}
	}()
	return ch
}

func assertDrained503(t *testing.T, r response) {
	t.Helper()
	if r.err != nil {
		t.Fatalf("request failed instead of being answered 503: %v", r.err)
	}
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "1" ||
		r.header.Get("Content-Type") != "application/json; encoding=utf-8" || !strings.Contains(r.body, `"errcode":-1`) {
		t.Errorf("got %d Retry-After %q Content-Type %q %s; want 503, Retry-After 1, WeChat JSON errcode -1",
			r.status, r.header.Get("Retry-After"), r.header.Get("Content-Type"), r.body)
	}
}

func TestDrainAnswersWaitingRequests503(t *testing.T) {
	var g drainGuard
	handlerSawCancel := make(chan error, 1)
	srv := guardedServer(t, &g, func(w http.ResponseWriter, r *http.Request) {
		// Like the proxy: headers set early, an error answer once the wait
		// is cancelled.
		w.Header().Set("Content-Type", "image/jpeg")
		<-r.Context().Done()
		handlerSawCancel <- r.Context().Err()
		w.WriteHeader(http.StatusBadGateway)
		if _, err := w.Write([]byte("upstream failed")); !errors.Is(err, errDrained) {
			t.Errorf("handler's write after the drain: %v, want errDrained", err)
		}
	})
	ch := getAsync(srv.URL)
	waitFor(t, "the request in flight", func() bool { return g.waiting() == 1 })
	if n := g.drain(); n != 1 {
		t.Errorf("drain took %d requests, want 1", n)
	}
	r := <-ch
	assertDrained503(t, r)
	if strings.Contains(r.body, "upstream failed") {
		t.Errorf("the handler's own answer leaked: %s", r.body)
	}
	if err := <-handlerSawCancel; !errors.Is(err, context.Canceled) {
		t.Errorf("handler's context: %v, want canceled", err)
	}
	// Anything arriving after the drain is answered at once.
	assertDrained503(t, <-getAsync(srv.URL))
}

func TestDrainLeavesStartedResponsesToFinish(t *testing.T) {
	var g drainGuard
	release := make(chan struct{})
	srv := guardedServer(t, &g, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("Flush through the guard: %v", err)
		}
		<-release
		io.WriteString(w, "finished")
	})
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if n := g.drain(); n != 0 {
		t.Errorf("drain took %d started responses, want 0", n)
	}
	close(release)
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != "finished" {
		t.Errorf("got %d %q %v, want the handler's 200 finished", resp.StatusCode, body, err)
	}
}

func TestDrainWriterKeepsResponseControllerWorking(t *testing.T) {
	var g drainGuard
	srv := guardedServer(t, &g, func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
			t.Errorf("SetReadDeadline through the guard: %v", err)
		}
		if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
			t.Errorf("SetWriteDeadline through the guard: %v", err)
		}
		io.WriteString(w, "ok")
		if err := rc.Flush(); err != nil {
			t.Errorf("Flush through the guard: %v", err)
		}
	})
	if r := <-getAsync(srv.URL); r.err != nil || r.body != "ok" {
		t.Errorf("got %q %v", r.body, r.err)
	}
}

// A flush before any write commits the status line: the drain must not
// answer over it.
func TestDrainCountsAFlushAsStarted(t *testing.T) {
	var g drainGuard
	release := make(chan struct{})
	srv := guardedServer(t, &g, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Handler", "yes")
		http.NewResponseController(w).Flush()
		<-release
	})
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n := g.drain()
	close(release)
	if n != 0 || resp.StatusCode != http.StatusOK || resp.Header.Get("X-Handler") != "yes" {
		t.Errorf("drain took %d, response %d; want 0 and the handler's 200", n, resp.StatusCode)
	}
}
