package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/fleet"
	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"github.com/wxa-sidecar/wxa-sidecar/upstream"
)

// fleetReplica wires a harness's codes to the fleet's tiers on url, as
// main does, and records the Redis operations its client reports.
type fleetReplica struct {
	mu  sync.Mutex
	ops []string
}

func (r *fleetReplica) wire(t *testing.T, url string) func(*Options) {
	return func(o *Options) {
		c, err := fleet.New(fleet.Options{URL: url, Hooks: fleet.Hooks{Request: func(op, result string, _ time.Duration) {
			r.mu.Lock()
			r.ops = append(r.ops, op+" "+result)
			r.mu.Unlock()
		}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		o.Codes.L2 = fleet.NewL2(c, fleet.L2Options{TTL: time.Hour})
		o.Codes.Flight = fleet.NewFlight(c, fleet.FlightOptions{})
	}
}

func (r *fleetReplica) reported(opResult string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, op := range r.ops {
		if op == opResult {
			return true
		}
	}
	return false
}

type postResult struct {
	status      int
	cacheStatus string
	body        string
	err         error
}

func postAsync(h *harness, path, body string) <-chan postResult {
	ch := make(chan postResult, 1)
	go func() {
		resp, err := http.Post(h.srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			ch <- postResult{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		ch <- postResult{status: resp.StatusCode, cacheStatus: resp.Header.Get("Cache-Status"), body: string(b), err: err}
	}()
	return ch
}

func receivePost(t *testing.T, what string, ch <-chan postResult) postResult {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("%s: %v", what, r.err)
		}
		return r
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: no answer within 20s", what)
	}
	return postResult{}
}

// Three replicas sharing Redis: the first fetches (stored), the second
// waits for that flight and serves its image from Redis (collapsed,
// detail=shared), the third finds it in Redis (hit, detail=shared). One
// upstream call for all.
func TestCacheStatusOfTheSharedTier(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	var ra, rb, rc fleetReplica
	// a's WeChat holds its answer until let go: b arrives while a's flight
	// holds the lease.
	entered, letGo := make(chan struct{}, 10), make(chan struct{})
	var calls atomic.Int64
	var a *harness
	held := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		entered <- struct{}{}
		<-letGo
		fake, _ := url.Parse(a.fake.URL)
		httputil.NewSingleHostReverseProxy(fake).ServeHTTP(w, r)
	}))
	t.Cleanup(held.Close)
	a = newHarness(t, harnessOptions{cache: true, proxy: ra.wire(t, srv.URL),
		upstream: func(o *upstream.Options) { o.Base = held.URL }})
	b := newHarness(t, harnessOptions{cache: true, proxy: rb.wire(t, srv.URL)})
	c := newHarness(t, harnessOptions{cache: true, proxy: rc.wire(t, srv.URL)})
	body := `{"scene":"fleet=1","page":"pages/a/b"}`

	fromA := postAsync(a, pathUnlimited, body)
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("a's upstream call did not start")
	}
	fromB := postAsync(b, pathUnlimited, body)
	deadline := time.Now().Add(10 * time.Second)
	for !(rb.reported("lease ok") && rb.reported("l2_get ok")) {
		if time.Now().After(deadline) {
			t.Fatal("b did not wait for a's flight")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(letGo)
	respA, respB := receivePost(t, "a", fromA), receivePost(t, "b", fromB)
	respC := receivePost(t, "c", postAsync(c, pathUnlimited, body))
	for _, tc := range []struct {
		name string
		got  postResult
		want string
	}{
		{"a", respA, cacheStatusStored},
		{"b", respB, "wxa-sidecar; fwd=uri-miss; collapsed; detail=shared"},
		{"c", respC, "wxa-sidecar; hit; detail=shared"},
	} {
		if tc.got.status != http.StatusOK || tc.got.cacheStatus != tc.want {
			t.Errorf("%s: status %d Cache-Status %q, want 200 %q", tc.name, tc.got.status, tc.got.cacheStatus, tc.want)
		}
		if tc.got.body != respA.body {
			t.Errorf("%s served other bytes than a", tc.name)
		}
	}
	if got := calls.Load() + int64(b.fake.Calls(pathUnlimited)+c.fake.Calls(pathUnlimited)); got != 1 {
		t.Errorf("%d upstream calls, want 1", got)
	}
	// Fetched or shared, an image is in L1 from then on: a plain hit.
	for name, h := range map[string]*harness{"b": b, "c": c} {
		if got := receivePost(t, name, postAsync(h, pathUnlimited, body)).cacheStatus; got != cacheStatusHit {
			t.Errorf("%s again: Cache-Status %q, want %q", name, got, cacheStatusHit)
		}
	}
}
