package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/fleet"
	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/upstream"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// The parts report what they do through hooks and never import
// prometheus; these turn each part's hooks into this package's metrics,
// so every name stays here and main and the tests wire them alike.

// UpstreamHooks counts every request to WeChat: outcome, errcode, time to
// headers and token replays.
func (m *Metrics) UpstreamHooks() upstream.Hooks {
	return upstream.Hooks{
		Outcome: func(endpoint string, o upstream.Outcome) {
			m.UpstreamRequests.WithLabelValues(endpoint, string(o)).Inc()
		},
		Errcode: func(endpoint string, code wechat.Errcode) {
			m.UpstreamErrcodes.WithLabelValues(endpoint, ErrcodeLabel(int(code))).Inc()
		},
		Duration: func(endpoint string, d time.Duration) {
			m.UpstreamDuration.WithLabelValues(endpoint).Observe(d.Seconds())
		},
		Replayed: func(app string) { m.TokenReplays.WithLabelValues(app).Inc() },
	}
}

// QuotaHooks counts the gate's refusals and waits and shows its cool-downs.
func (m *Metrics) QuotaHooks() quota.Hooks {
	return quota.Hooks{
		Rejected: func(k quota.Key) { m.RateLimitRejections.WithLabelValues(k.Endpoint).Inc() },
		Waited: func(k quota.Key, d time.Duration) {
			m.RateLimitWait.WithLabelValues(k.Endpoint).Observe(d.Seconds())
		},
		Cooldown: func(k quota.Key, active bool) {
			v := 0.0
			if active {
				v = 1
			}
			m.QuotaCooldown.WithLabelValues(k.App, k.Endpoint).Set(v)
		},
	}
}

// FleetHooks counts the shared tier's Redis operations and leases, and
// the values it did not believe, and shows whether Redis is up. Call
// ObserveRedis (and ObserveUnsealed) first.
func (m *Metrics) FleetHooks() fleet.Hooks {
	return fleet.Hooks{
		Request: func(op, result string, d time.Duration) {
			m.RedisRequests.WithLabelValues(op, result).Inc()
			if result != fleet.ResultBreakerOpen {
				m.RedisRequestDuration.WithLabelValues(op).Observe(d.Seconds())
			}
		},
		Up: func(up bool) {
			v := 0.0
			if up {
				v = 1
			}
			m.RedisUp.Set(v)
		},
		Lease: func(result string) { m.FleetLeases.WithLabelValues(result).Inc() },
		Unsealed: func(kind string) {
			if m.RedisUnsealed != nil {
				m.RedisUnsealed.WithLabelValues(kind).Inc()
			}
		},
	}
}

// CodesHooks counts image lookups (one per request), stores, retries and
// the outcome of image fetches, which only the image path can judge.
// Lookup's children are resolved once: it runs on every cache hit.
func (m *Metrics) CodesHooks() codes.Hooks {
	lookups := map[string]prometheus.Counter{}
	for _, result := range CacheResults {
		lookups[result] = m.CacheRequests.WithLabelValues(result)
	}
	hit := lookups["hit"]
	return codes.Hooks{
		Lookup: func(result string) {
			if result == "hit" {
				hit.Inc()
				return
			}
			c, ok := lookups[result]
			if !ok {
				c = m.CacheRequests.WithLabelValues(result)
			}
			c.Inc()
		},
		Stored:  m.CacheStored.Inc,
		Retried: func(r codes.Request) { m.UpstreamRetries.WithLabelValues(r.Endpoint).Inc() },
		GoodImage: func(r codes.Request) {
			m.UpstreamRequests.WithLabelValues(r.Endpoint, string(upstream.OK)).Inc()
		},
		BrokenImage: func(r codes.Request) {
			m.UpstreamRequests.WithLabelValues(r.Endpoint, string(upstream.BrokenImage)).Inc()
		},
	}
}

// LinkHooks counts link lookups (one per request) by endpoint, and the
// retries of link fetches. Lookup's children are resolved once: it runs on
// every kept link handed out.
func (m *Metrics) LinkHooks() codes.LinkHooks {
	lookups := map[[2]string]prometheus.Counter{}
	for _, endpoint := range wechat.LinkEndpoints() {
		for _, result := range CacheResults {
			lookups[[2]string{endpoint, result}] = m.LinkRequests.WithLabelValues(endpoint, result)
		}
	}
	return codes.LinkHooks{
		Lookup: func(endpoint, result string) {
			c, ok := lookups[[2]string{endpoint, result}]
			if !ok {
				c = m.LinkRequests.WithLabelValues(endpoint, result)
			}
			c.Inc()
		},
		Retried: func(r codes.LinkRequest) { m.UpstreamRetries.WithLabelValues(r.Endpoint).Inc() },
	}
}
