package proxy

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// routeMetrics are one route's collectors, looked up once: label lookups
// are a measurable part of a cache hit.
type routeMetrics struct {
	ok       prometheus.Counter
	duration prometheus.Observer
}

func (p *Proxy) observeRequest(route string, status int, start time.Time) {
	m := p.routeMetrics[route]
	if status == http.StatusOK {
		m.ok.Inc()
	} else {
		p.metrics.Requests.WithLabelValues(route, statusLabel(status)).Inc()
	}
	m.duration.Observe(p.now().Sub(start).Seconds())
}

// statusRecorder remembers the status for the metrics.
type statusRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wroteHeader {
		s.status, s.wroteHeader = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wroteHeader = true
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and deadlines.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func statusLabel(code int) string {
	if code < 100 || code > 599 {
		return "other"
	}
	return strconv.Itoa(code)
}
