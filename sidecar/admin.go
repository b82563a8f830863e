package sidecar

import (
	"encoding/json"
	"io"
	"net/http"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/fleet"
	"github.com/wxa-sidecar/wxa-sidecar/quota"
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
			writeStatusHTML(w, s.status())
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
	Cache   cache.Stats    `json:"cache"`
	Redis   *fleet.Status  `json:"redis,omitempty"`
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
	return StatusReport{s.version, s.ready.Load(), apps, s.gate.Status(), s.cache.Stats(), redis}
}
