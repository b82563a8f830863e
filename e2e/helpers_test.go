package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// waitFor polls cond for up to 30 s: a liveness bound, generous because
// the fake WeChat runs in this (perhaps race-instrumented) process and
// draws every image on a busy 2-CPU machine.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// response is an answer read whole, or the error that stopped it.
type response struct {
	status int
	header http.Header
	body   string
	err    error
}

// assertDrained503 checks an answer given by the drain at shutdown: 503,
// Retry-After 1 and WeChat's JSON with errcode -1.
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
