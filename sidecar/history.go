package sidecar

import (
	"context"
	"sync"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/metrics"
)

// historyStep and historyLen make the status page's charts: one sample
// every 10 s, the last 15 minutes.
const (
	historyStep = 10 * time.Second
	historyLen  = int(15 * time.Minute / historyStep)
)

// history is a ring of the metrics' running totals, sampled every step:
// the page draws the difference between neighbours, what happened in each
// interval. It holds numbers only, never a request's content.
type history struct {
	mu      sync.Mutex
	samples [historyLen + 1]sample
	n, next int
}

type sample struct {
	at time.Time
	metrics.Totals
}

func (h *history) add(at time.Time, t metrics.Totals) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.samples[h.next] = sample{at, t}
	h.next = (h.next + 1) % len(h.samples)
	h.n = min(h.n+1, len(h.samples))
}

// interval is what happened between two samples.
type interval struct {
	End                                          time.Time
	Requests, CacheHits, UpstreamCalls, Refusals float64
}

// intervals lists, oldest first, what happened in each step recorded.
func (h *history) intervals() []interval {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]interval, 0, max(h.n-1, 0))
	start := (h.next - h.n + len(h.samples)) % len(h.samples)
	for i := 1; i < h.n; i++ {
		a := h.samples[(start+i-1)%len(h.samples)]
		b := h.samples[(start+i)%len(h.samples)]
		out = append(out, interval{End: b.at,
			Requests:      max(b.Requests-a.Requests, 0),
			CacheHits:     max(b.CacheHits-a.CacheHits, 0),
			UpstreamCalls: max(b.UpstreamCalls-a.UpstreamCalls, 0),
			Refusals:      max(b.Refusals-a.Refusals, 0)})
	}
	return out
}

// run samples m every step until ctx ends; the first sample is taken at
// once, so the first interval is drawn after one step.
func (h *history) run(ctx context.Context, m *metrics.Metrics, step time.Duration, now func() time.Time) {
	h.add(now(), m.Totals())
	t := time.NewTicker(step)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.add(now(), m.Totals())
		}
	}
}
