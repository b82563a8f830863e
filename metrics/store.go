package metrics

import (
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxa-sidecar/wxa-sidecar/store"
)

// StoreMetrics are the durable store's (STORE_URL): registered by
// ObserveStore only.
type StoreMetrics struct {
	Up              prometheus.Gauge
	Requests        *prometheus.CounterVec   // op, result
	RequestDuration *prometheus.HistogramVec // op
	Drops           *prometheus.CounterVec   // reason
}

// ObserveStore registers the durable store's metrics, every series at zero
// (store_hit of cache_requests_total too), the store reported up until it
// fails, and the write queue's depth read at scrape time.
func (m *Metrics) ObserveStore(queueDepth func() float64) *StoreMetrics {
	s := &StoreMetrics{
		Up: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "store_up",
			Help: "1 while the durable store (STORE_URL) answers (its circuit breaker is closed), else 0."}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "store_requests_total",
			Help: "Operations on the durable store by op (get, put) and result (hit, miss, corrupt, ok, error, timeout, breaker_open); corrupt is an object that does not open (swapped, truncated, forged, or sealed under another key)."},
			[]string{"op", "result"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace,
			Name: "store_request_duration_seconds", Help: "Time of an operation on the durable store, by op.",
			Buckets: durationBuckets}, []string{"op"}),
		Drops: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "store_write_drops_total",
			Help: "Writes to the durable store given up, by reason: queue_full (never queued), failed (every attempt failed), shutdown (still queued when the exit bound ran out). The image is fetched again on its next miss."},
			[]string{"reason"}),
	}
	m.Registry.MustRegister(s.Up, s.Requests, s.RequestDuration, s.Drops,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "store_write_queue_depth",
			Help: "Writes to the durable store queued or being made."}, queueDepth))
	s.Up.Set(1)
	for _, op := range store.Ops {
		for _, result := range store.Results {
			s.Requests.WithLabelValues(op, result)
		}
	}
	for _, reason := range store.DropReasons {
		s.Drops.WithLabelValues(reason)
	}
	m.CacheRequests.WithLabelValues("store_hit")
	for _, endpoint := range wechat.LinkEndpoints() {
		m.LinkRequests.WithLabelValues(endpoint, "store_hit")
	}
	return s
}

// Hooks turn the store's reports into these metrics.
func (s *StoreMetrics) Hooks() store.Hooks {
	return store.Hooks{
		Request: func(op, result string, d time.Duration) {
			s.Requests.WithLabelValues(op, result).Inc()
			if result != store.ResultBreakerOpen {
				s.RequestDuration.WithLabelValues(op).Observe(d.Seconds())
			}
		},
		Up: func(up bool) {
			v := 0.0
			if up {
				v = 1
			}
			s.Up.Set(v)
		},
		Dropped: func(reason string) { s.Drops.WithLabelValues(reason).Inc() },
	}
}
