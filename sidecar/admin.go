package sidecar

import (
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/fleet"
	"github.com/wxa-sidecar/wxa-sidecar/metrics"
	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/store"
	"github.com/wxa-sidecar/wxa-sidecar/token"
)

// adminHandler serves the admin port: liveness, readiness, metrics and
// the status report (JSON, or a page for a browser).
func (s *Sidecar) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	// Readiness gates the whole pod, so it never depends on WeChat.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", s.metrics.Handler())
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		// A browser gets a page, curl | jq (Accept: */*) the JSON.
		w.Header().Set("Vary", "Accept")
		if prefersHTML(r.Header.Values("Accept")) {
			writeStatusHTML(w, s.status(), s.history.intervals(), time.Now())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(s.status())
	})
	return mux
}

// StatusReport is /status: what a person needs at 3 a.m., never a token.
type StatusReport struct {
	Version string         `json:"version"`
	Ready   bool           `json:"ready"`
	Apps    []token.Status `json:"apps"`
	Limits  []quota.Status `json:"limits"`
	Cache   CacheStatus    `json:"cache"`
	// Links are the link lookups by endpoint; their entries share the
	// cache above (its entries and bytes count them, its hits and misses
	// do not).
	Links []codes.LinkStats `json:"links"`
	Redis *fleet.Status     `json:"redis,omitempty"`
	Store *store.Status     `json:"store,omitempty"`
}

func (s *Sidecar) status() StatusReport {
	apps := make([]token.Status, 0, len(s.tokens))
	for _, m := range s.tokens {
		apps = append(apps, m.Status())
	}
	var redis *fleet.Status
	if s.redis != nil {
		st := s.redis.Status()
		redis = &st
	}
	limits := s.gate.Status()
	if s.publicGate != nil {
		// QRCODE_ADDR's share, as the endpoint's key with "#public".
		limits = append(limits, s.publicGate.Status()...)
	}
	return StatusReport{s.version, s.ready.Load(), apps, limits, cacheStatus(s.cache.Stats(), s.metrics.Totals()), s.proxy.LinkStats(), redis, s.storeStatus()}
}

// CacheStatus is the local tier's size and what the code lookups found.
// Hits and misses are the metrics' own counts (cache_requests_total), so
// /status and /metrics never disagree: a shared hit is an L1 miss but not
// a miss.
type CacheStatus struct {
	cache.Stats
	// Requests is cache_requests_total by result.
	Requests map[string]float64 `json:"requests"`
	// HitRatio is the share of lookups answered without a call to WeChat
	// (every result ending in "hit"), 0 before the first lookup.
	HitRatio float64 `json:"hit_ratio"`
}

func cacheStatus(st cache.Stats, t metrics.Totals) CacheStatus {
	st.Hits = uint64(t.Cache["hit"])
	st.Misses = uint64(t.Cache["miss"] + t.Cache["collapsed"])
	c := CacheStatus{Stats: st, Requests: t.Cache}
	if t.CacheLookups > 0 {
		c.HitRatio = t.CacheHits / t.CacheLookups
	}
	return c
}
