// Package metrics is the one place every Prometheus metric of the sidecar
// is named. Labels take values from bounded sets only (routes, outcomes,
// known endpoints and errcodes, configured apps) — never a scene, page,
// token or raw path — so a caller cannot grow the series without bound.
//
// It owns a private registry, with the Go and process collectors, so
// nothing global is exposed.
package metrics

import (
	"net/http"
	"runtime"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wxa-sidecar/wxa-sidecar/upstream"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

const namespace = "wxa_sidecar"

// Metrics holds every collector, registered on Registry.
type Metrics struct {
	Registry *prometheus.Registry

	Requests        *prometheus.CounterVec   // route, code
	RequestDuration *prometheus.HistogramVec // route

	CacheRequests  *prometheus.CounterVec // result: hit, miss, collapsed
	CacheStored    prometheus.Counter
	CacheRejected  prometheus.Counter
	CacheEvictions prometheus.Counter

	LinkRequests *prometheus.CounterVec // endpoint, result: hit, shared_hit, miss, collapsed

	UpstreamRequests *prometheus.CounterVec   // endpoint, outcome
	UpstreamErrcodes *prometheus.CounterVec   // endpoint, errcode
	UpstreamDuration *prometheus.HistogramVec // endpoint
	UpstreamRetries  *prometheus.CounterVec   // endpoint

	TokenFetches *prometheus.CounterVec // app, result: ok, error
	TokenReplays *prometheus.CounterVec // app

	RateLimitWait       *prometheus.HistogramVec // endpoint
	RateLimitRejections *prometheus.CounterVec   // endpoint
	QuotaCooldown       *prometheus.GaugeVec     // app, endpoint

	// QRCodeRefusals counts GET /qrcode requests on QRCODE_ADDR refused
	// before reaching WeChat by the public port's own limits.
	QRCodeRefusals *prometheus.CounterVec // reason: QRCodeRefusalReasons

	// The shared tier (REDIS_URL): registered by ObserveRedis only.
	RedisUp              prometheus.Gauge
	RedisRequests        *prometheus.CounterVec   // op, result
	RedisRequestDuration *prometheus.HistogramVec // op
	FleetLeases          *prometheus.CounterVec   // result: acquired, waited, timed_out
	// RedisUnsealed: registered by ObserveUnsealed only.
	RedisUnsealed *prometheus.CounterVec // kind
}

// durationBuckets start at 100µs, where a cache hit lies, and reach 30s,
// beyond any upstream timeout.
var durationBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// New creates and registers every metric.
func New() *Metrics {
	r := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
		f(c)
		return c
	}
	plain := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help})
		f(c)
		return c
	}
	histogram := func(name, help string, labels ...string) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help,
			Buckets: durationBuckets}, labels)
		f(h)
		return h
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, labels)
		f(g)
		return g
	}
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Metrics{
		Registry: r,
		Requests: counter("requests_total",
			"Requests answered by the sidecar, by route (wxacode, link, qrcode, token, passthrough) and HTTP status code.", "route", "code"),
		RequestDuration: histogram("request_duration_seconds",
			"Time to answer a request, by route.", "route"),
		CacheRequests: counter("cache_requests_total",
			"Code-image lookups, one per request: hit (from this replica's cache), shared_hit (from the fleet's Redis, REDIS_URL), store_hit (from the durable store, STORE_URL), miss (found nowhere: this request made the upstream call, or was answered without one), collapsed (found nowhere: it shared another request's upstream call, on this replica or another).", "result"),
		CacheStored:    plain("cache_stored_total", "Images stored in the cache."),
		CacheRejected:  plain("cache_rejected_total", "Images the cache declined to store (admission policy or size)."),
		CacheEvictions: plain("cache_evictions_total", "Images evicted from the cache to make room or at the end of CACHE_TTL."),
		LinkRequests: counter("link_requests_total",
			"Link lookups (generatescheme, generate_urllink, genwxashortlink, generatenfcscheme), one per request, by endpoint and result: hit (a kept link), shared_hit (from the fleet's Redis), store_hit (a link kept for life, from the durable store, STORE_URL), miss (this request made the upstream call, or was answered without one), collapsed (shared another request's upstream call).", "endpoint", "result"),
		UpstreamRequests: counter("upstream_requests_total",
			"Calls to WeChat by endpoint and outcome (ok, errcode, http_error, timeout, broken_image).", "endpoint", "outcome"),
		UpstreamErrcodes: counter("upstream_errcodes_total",
			"Errcodes WeChat answered, by endpoint and errcode (known codes, else other).", "endpoint", "errcode"),
		UpstreamDuration: histogram("upstream_request_duration_seconds",
			"Time until WeChat's response headers, by endpoint.", "endpoint"),
		UpstreamRetries: counter("upstream_retries_total",
			"Code fetches retried after a transient failure, by endpoint.", "endpoint"),
		TokenFetches: counter("token_fetches_total",
			"access_token fetches from WeChat, by app and result (ok, error).", "app", "result"),
		TokenReplays: counter("token_replays_total",
			"Requests replayed with a fresh token after WeChat said the token was dead (40001, 40014, 42001).", "app"),
		RateLimitWait: histogram("ratelimit_wait_seconds",
			"Time a call queued for an upstream rate-limit slot, by endpoint.", "endpoint"),
		RateLimitRejections: counter("ratelimit_rejections_total",
			"Calls refused with 45011 because no rate-limit slot was free within UPSTREAM_MAX_WAIT, by endpoint.", "endpoint"),
		QuotaCooldown: gauge("quota_cooldown_active",
			"1 while calls to the app's endpoint are answered locally because WeChat reported its quota reached.", "app", "endpoint"),
		QRCodeRefusals: counter("qrcode_refusals_total",
			"GET /qrcode requests on QRCODE_ADDR refused with 429 before reaching WeChat, by reason: public_budget (QRCODE_LIMIT, the port's share of the fleet's limit), client_limit (QRCODE_CLIENT_LIMIT).", "reason"),
	}
}

// QRCodeRefusalReasons are the values of qrcode_refusals_total's reason
// label.
var QRCodeRefusalReasons = []string{"public_budget", "client_limit"}

// CacheResults are the values of cache_requests_total's result label;
// shared_hit only happens with the shared tier.
var CacheResults = []string{"hit", "shared_hit", "miss", "collapsed"}

// LeaseResults are the values of fleet_leases_total's result label.
var LeaseResults = []string{"acquired", "waited", "timed_out"}

// ObserveRedis registers the shared tier's metrics, every series at zero
// for the given ops and results, and Redis reported up until it fails.
func (m *Metrics) ObserveRedis(ops, results []string) {
	m.RedisUp = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "redis_up",
		Help: "1 while the shared tier's Redis answers (its circuit breaker is closed), else 0."})
	m.RedisRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "redis_requests_total",
		Help: "Operations on the shared tier's Redis by op (l2_get, l2_set, lease, ratelimit, cooldown, token) and result (ok, miss, error, timeout, breaker_open)."},
		[]string{"op", "result"})
	m.RedisRequestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace,
		Name: "redis_request_duration_seconds", Help: "Time of an operation on the shared tier's Redis, by op.",
		Buckets: durationBuckets}, []string{"op"})
	m.FleetLeases = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "fleet_leases_total",
		Help: "Fleet-wide code fetch leases: acquired (this replica fetched), waited (another replica's image arrived), timed_out (fetched after waiting in vain)."},
		[]string{"result"})
	m.Registry.MustRegister(m.RedisUp, m.RedisRequests, m.RedisRequestDuration, m.FleetLeases)
	m.RedisUp.Set(1)
	for _, op := range ops {
		for _, result := range results {
			m.RedisRequests.WithLabelValues(op, result)
		}
	}
	for _, result := range LeaseResults {
		m.FleetLeases.WithLabelValues(result)
	}
}

// ObserveUnsealed registers the count of values read from Redis and not
// believed, every given kind at zero.
func (m *Metrics) ObserveUnsealed(kinds []string) {
	m.RedisUnsealed = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "redis_unsealed_total",
		Help: "Values read from the shared tier's Redis and not believed, by kind (image, failure, cooldown, refusal, token, ratelimit, lease, force_refresh): sealed under another key or for another key, forged, or out of bounds. Each is treated as absent, or as Redis unreachable for that request."},
		[]string{"kind"})
	m.Registry.MustRegister(m.RedisUnsealed)
	for _, kind := range kinds {
		m.RedisUnsealed.WithLabelValues(kind)
	}
}

// Init creates, at zero, every series of the families alerts take
// increase() or rate() of, for each configured app and each endpoint label
// value: a series that first appears at 1 has no earlier sample, so
// increase() misses the event that created it. The errcode of
// upstream_errcodes_total and the code of requests_total are left out: their
// values are whatever WeChat or the sidecar answers.
func (m *Metrics) Init(apps, endpoints []string) {
	for _, result := range CacheResults {
		m.CacheRequests.WithLabelValues(result)
	}
	for _, endpoint := range wechat.LinkEndpoints() {
		for _, result := range CacheResults {
			m.LinkRequests.WithLabelValues(endpoint, result)
		}
	}
	for _, endpoint := range endpoints {
		for _, outcome := range upstream.Outcomes {
			m.UpstreamRequests.WithLabelValues(endpoint, string(outcome))
		}
		m.RateLimitRejections.WithLabelValues(endpoint)
		m.UpstreamRetries.WithLabelValues(endpoint)
	}
	for _, app := range apps {
		m.TokenFetches.WithLabelValues(app, "ok")
		m.TokenFetches.WithLabelValues(app, "error")
		m.TokenReplays.WithLabelValues(app)
		for _, endpoint := range endpoints {
			m.QuotaCooldown.WithLabelValues(app, endpoint).Set(0)
		}
	}
}

// BuildInfo exposes wxa_sidecar_build_info{version,goversion} = 1, so a
// dashboard can tell which build each instance runs.
func (m *Metrics) BuildInfo(version string) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "build_info",
		Help:        "Always 1; the labels name the sidecar's version and the Go release it was built with.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()}})
	g.Set(1)
	m.Registry.MustRegister(g)
}

// ObserveCache exposes the cache's size as gauges read at scrape time.
func (m *Metrics) ObserveCache(bytes, entries func() float64) {
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "cache_bytes",
			Help: "Bytes of images held in the cache."}, bytes),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "cache_entries",
			Help: "Images held in the cache."}, entries),
	)
}

// ObserveTokenExpiry exposes the seconds left of app's token, read at
// scrape time so the figure is never stale.
func (m *Metrics) ObserveTokenExpiry(app string, secondsLeft func() float64) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace,
		Name: "token_expiry_seconds", Help: "Seconds until the app's current access_token expires (0 without one).",
		ConstLabels: prometheus.Labels{"app": app}}, secondsLeft))
}

// TokenFetched returns the hook a token manager calls after each fetch.
func (m *Metrics) TokenFetched(app string) func(error) {
	ok, failed := m.TokenFetches.WithLabelValues(app, "ok"), m.TokenFetches.WithLabelValues(app, "error")
	return func(err error) {
		if err != nil {
			failed.Inc()
			return
		}
		ok.Inc()
	}
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// ErrcodeLabel is code as a label value: the errcodes package wechat names
// as themselves, the rest as "other", so the errcode label stays bounded.
func ErrcodeLabel(code int) string {
	if wechat.Errcode(code).Named() {
		return strconv.Itoa(code)
	}
	return "other"
}
