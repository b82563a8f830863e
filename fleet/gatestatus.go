package fleet

import (
	"slices"
	"strings"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/quota"
)

// Status lists, per Key, the fleet's limit, its bucket's free slots as
// Redis last told this replica (refilled since at the limit's rate; other
// replicas' calls since are not counted), and the cool-downs this replica
// holds; keys used only while Redis was out of reach show the fleet's limit
// and no slots. It never calls Redis.
func (g *Gate) Status() []quota.Status {
	now := g.now()
	out := g.local.Status()
	g.mu.Lock()
	defer g.mu.Unlock()
	listed := make(map[quota.Key]bool, len(out))
	for i := range out {
		k := quota.Key{App: out[i].App, Endpoint: out[i].Endpoint}
		listed[k] = true
		out[i].Rate, out[i].Burst, out[i].SlotsAvailable = g.statusOf(k, now)
	}
	for k := range g.buckets {
		if !listed[k] {
			s := quota.Status{App: k.App, Endpoint: k.Endpoint}
			s.Rate, s.Burst, s.SlotsAvailable = g.statusOf(k, now)
			out = append(out, s)
		}
	}
	sortStatus(out)
	return out
}

// statusOf is k's fleet limit and estimated free slots. g.mu must be held.
func (g *Gate) statusOf(k quota.Key, now time.Time) (rate float64, burst int, slots float64) {
	lim := g.opts.Limit(k.Endpoint)
	if lim.Rate <= 0 {
		return 0, 0, 0
	}
	burst = max(lim.Burst, 1)
	if b, ok := g.buckets[k]; ok {
		slots = min(float64(burst), b.slots+now.Sub(b.at).Seconds()*lim.Rate)
	}
	return lim.Rate, burst, slots
}

// sortStatus sorts by app and endpoint, as a Local's Status does.
func sortStatus(s []quota.Status) {
	slices.SortFunc(s, func(a, b quota.Status) int {
		if c := strings.Compare(a.App, b.App); c != 0 {
			return c
		}
		return strings.Compare(a.Endpoint, b.Endpoint)
	})
}
