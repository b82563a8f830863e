package metrics

import (
	"strings"

	dto "github.com/prometheus/client_model/go"
)

// Totals are the running sums the status page charts: every counter the
// sidecar exports, summed over its labels, so the page and /metrics count
// the same things.
type Totals struct {
	Requests      float64 // requests_total
	CacheHits     float64 // cache_requests_total, every result ending in "hit"
	CacheLookups  float64 // cache_requests_total
	UpstreamCalls float64 // upstream_requests_total
	Refusals      float64 // ratelimit_rejections_total
	// Cache is cache_requests_total by result (hit, shared_hit, miss,
	// collapsed, and any result a later tier adds).
	Cache map[string]float64
}

// Totals gathers the registry once and sums what the page shows.
func (m *Metrics) Totals() Totals {
	t := Totals{Cache: map[string]float64{}}
	families, _ := m.Registry.Gather()
	for _, f := range families {
		switch strings.TrimPrefix(f.GetName(), namespace+"_") {
		case "requests_total":
			t.Requests = sum(f, nil)
		case "cache_requests_total":
			t.CacheLookups = sum(f, nil)
			for _, m := range f.GetMetric() {
				for _, p := range m.GetLabel() {
					if p.GetName() == "result" {
						t.Cache[p.GetValue()] += m.GetCounter().GetValue()
					}
				}
			}
			t.CacheHits = sum(f, func(l []*dto.LabelPair) bool {
				for _, p := range l {
					if p.GetName() == "result" && strings.HasSuffix(p.GetValue(), "hit") {
						return true
					}
				}
				return false
			})
		case "upstream_requests_total":
			t.UpstreamCalls = sum(f, nil)
		case "ratelimit_rejections_total":
			t.Refusals = sum(f, nil)
		}
	}
	return t
}

// sum adds a counter family's series that keep passes (all with nil).
func sum(f *dto.MetricFamily, keep func([]*dto.LabelPair) bool) float64 {
	var total float64
	for _, m := range f.GetMetric() {
		if keep == nil || keep(m.GetLabel()) {
			total += m.GetCounter().GetValue()
		}
	}
	return total
}
