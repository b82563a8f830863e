package proxy

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// /status shows the cache's own Stats, the metrics show
// cache_requests_total: both count each request's lookup once. A request
// that found nothing is one cache miss, which the metric splits into miss
// (it started the upstream call, or was answered without one) and
// collapsed (it shared another request's call).
func TestStatusAndMetricsCountTheSameLookups(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true, fakeOpt: wechattest.Options{LifetimeCap: 1}})
	const distinct = 3
	for i := range distinct {
		if resp := h.postJSON(pathUnlimited, fmt.Sprintf(`{"scene":"count%d"}`, i)); !isImage(resp) {
			t.Fatalf("miss %d: status %d", i, resp.status)
		}
	}
	if resp := h.postJSON(pathUnlimited, `{"scene":"count0"}`); resp.header.Get("Cache-Status") != cacheStatusHit {
		t.Fatalf("want a hit, got %q", resp.header.Get("Cache-Status"))
	}
	// A failed fetch, then the same bytes again: the second is found in
	// the table of bodies seen before, but not in the cache.
	h.fake.FailNext(pathUnlimited, 2, wechattest.FaultHTTP500)
	if resp := h.postJSON(pathUnlimited, `{"scene":"failed"}`); resp.status != http.StatusBadGateway {
		t.Fatalf("failed fetch: status %d", resp.status)
	}
	if resp := h.postJSON(pathUnlimited, `{"scene":"failed"}`); !isImage(resp) {
		t.Fatalf("after the failure: status %d", resp.status)
	}
	// A 45029 from WeChat, then the same request answered locally.
	h.postJSON(pathWxacode, `{"path":"pages/a"}`)
	for range 2 {
		if resp := h.postJSON(pathWxacode, `{"path":"pages/b"}`); resp.errcode() != errcodeLifetimeQuota {
			t.Fatalf("want 45029, got %s", resp.body)
		}
	}
	h.get("/qrcode?scene=count1")
	h.get("/qrcode?scene=viaget")
	h.fake.SetLatency(200 * time.Millisecond)
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() { h.postJSON(pathUnlimited, `{"scene":"together"}`) })
	}
	wg.Wait()

	stats := h.cache.Stats()
	count := func(result string) uint64 {
		return uint64(testutil.ToFloat64(h.metrics.CacheRequests.WithLabelValues(result)))
	}
	hit, miss, collapsed := count("hit"), count("miss"), count("collapsed")
	if collapsed == 0 {
		t.Log("no request collapsed into another's call this time")
	}
	if stats.Hits != hit {
		t.Errorf("/status hits %d, cache_requests_total{result=hit} %d", stats.Hits, hit)
	}
	if stats.Misses != miss+collapsed {
		t.Errorf("/status misses %d, cache_requests_total miss %d + collapsed %d", stats.Misses, miss, collapsed)
	}
	// Each request above looked once: 3 + 1 + 2 + 3 + 2 + 6.
	if total := stats.Hits + stats.Misses; total != 17 {
		t.Errorf("%d lookups counted (hits %d, misses %d), want 17: one per request", total, stats.Hits, stats.Misses)
	}
}
