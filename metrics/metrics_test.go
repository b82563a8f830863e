package metrics

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// touch observes every metric once, so each appears in a scrape.
func touch(m *Metrics) {
	m.Requests.WithLabelValues("wxacode", "200").Inc()
	m.RequestDuration.WithLabelValues("wxacode").Observe(0.001)
	m.CacheRequests.WithLabelValues("hit").Inc()
	m.CacheStored.Inc()
	m.CacheRejected.Inc()
	m.CacheEvictions.Inc()
	m.ObserveCache(func() float64 { return 1024 }, func() float64 { return 1 })
	m.UpstreamRequests.WithLabelValues("/wxa/getwxacodeunlimit", "ok").Inc()
	m.UpstreamErrcodes.WithLabelValues("/wxa/getwxacodeunlimit", ErrcodeLabel(45009)).Inc()
	m.UpstreamDuration.WithLabelValues("/wxa/getwxacodeunlimit").Observe(0.1)
	m.UpstreamRetries.WithLabelValues("/wxa/getwxacodeunlimit").Inc()
	m.TokenFetched("wx1")(nil)
	m.TokenFetched("wx1")(errors.New("x"))
	m.ObserveTokenExpiry("wx1", func() float64 { return 7000 })
	m.TokenReplays.WithLabelValues("wx1").Inc()
	m.RateLimitWait.WithLabelValues("other").Observe(0)
	m.RateLimitRejections.WithLabelValues("other").Inc()
	m.QuotaCooldown.WithLabelValues("wx1", "other").Set(1)
}

// contract is every metric name dashboards and alerts rely on.
var contract = []string{
	"wxa_sidecar_requests_total", "wxa_sidecar_request_duration_seconds", "wxa_sidecar_cache_requests_total",
	"wxa_sidecar_cache_stored_total", "wxa_sidecar_cache_rejected_total", "wxa_sidecar_cache_evictions_total",
	"wxa_sidecar_cache_bytes", "wxa_sidecar_cache_entries", "wxa_sidecar_upstream_requests_total",
	"wxa_sidecar_upstream_errcodes_total", "wxa_sidecar_upstream_request_duration_seconds",
	"wxa_sidecar_upstream_retries_total", "wxa_sidecar_token_fetches_total", "wxa_sidecar_token_expiry_seconds",
	"wxa_sidecar_token_replays_total", "wxa_sidecar_ratelimit_wait_seconds", "wxa_sidecar_ratelimit_rejections_total",
	"wxa_sidecar_quota_cooldown_active",
}

func TestEveryContractMetricIsExposed(t *testing.T) {
	m := New()
	touch(m)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, name := range contract {
		if !strings.Contains(string(body), "\n# TYPE "+name+" ") {
			t.Errorf("%s missing from the scrape", name)
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(string(body), name) {
			t.Errorf("%s missing: the Go and process collectors are not registered", name)
		}
	}
	if got := testutil.ToFloat64(m.TokenFetches.WithLabelValues("wx1", "error")); got != 1 {
		t.Errorf("token fetch errors %v, want 1", got)
	}
}

func TestExpositionPassesPromlint(t *testing.T) {
	m := New()
	m.Init([]string{"wx1", "wx2"}, []string{"/wxa/getwxacodeunlimit", "other"})
	m.BuildInfo("v1.2.3")
	touch(m)
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(families).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestErrcodeLabelIsBounded(t *testing.T) {
	if ErrcodeLabel(45009) != "45009" || ErrcodeLabel(-1) != "-1" || ErrcodeLabel(12345) != "other" ||
		ErrcodeLabel(45063) != "45063" || ErrcodeLabel(61004) != "61004" {
		t.Error("known codes must label as themselves, the rest as other")
	}
}

func TestInitExposesEverySeriesAtZeroBeforeAnyEvent(t *testing.T) {
	m := New()
	apps, endpoints := []string{"wx1", "wx2"}, []string{"/cgi-bin/getcallbackip", "/wxa/getwxacodeunlimit", "other"}
	m.Init(apps, endpoints)
	m.BuildInfo("v1.2.3")
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, metric := range f.GetMetric() {
			var labels []string
			for _, l := range metric.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := metric.GetCounter().GetValue() + metric.GetGauge().GetValue()
			got[f.GetName()+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	want := map[string]float64{}
	for _, r := range []string{"hit", "miss", "collapsed"} {
		want["wxa_sidecar_cache_requests_total{result="+r+"}"] = 0
	}
	for _, e := range endpoints {
		for _, o := range []string{"ok", "errcode", "http_error", "timeout", "broken_image"} {
			want["wxa_sidecar_upstream_requests_total{endpoint="+e+",outcome="+o+"}"] = 0
		}
		want["wxa_sidecar_ratelimit_rejections_total{endpoint="+e+"}"] = 0
		want["wxa_sidecar_upstream_retries_total{endpoint="+e+"}"] = 0
	}
	for _, a := range apps {
		want["wxa_sidecar_token_fetches_total{app="+a+",result=ok}"] = 0
		want["wxa_sidecar_token_fetches_total{app="+a+",result=error}"] = 0
		want["wxa_sidecar_token_replays_total{app="+a+"}"] = 0
		for _, e := range endpoints {
			want["wxa_sidecar_quota_cooldown_active{app="+a+",endpoint="+e+"}"] = 0
		}
	}
	want["wxa_sidecar_build_info{goversion="+runtime.Version()+",version=v1.2.3}"] = 1
	for series, v := range want {
		if g, ok := got[series]; !ok {
			t.Errorf("%s missing before any event", series)
		} else if g != v {
			t.Errorf("%s = %v, want %v", series, g, v)
		}
	}
	// Open-ended label values are never guessed at.
	for series := range got {
		if strings.HasPrefix(series, "wxa_sidecar_upstream_errcodes_total") || strings.HasPrefix(series, "wxa_sidecar_requests_total") {
			t.Errorf("%s created before it happened", series)
		}
	}
}
