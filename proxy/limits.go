package proxy

import (
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// PathLimits is the API port's read-only answer of the upstream limits and
// the cool-downs in force (GET, HEAD; /apps/{appid}/wxa-sidecar/limits for
// one app). It is the sidecar's own: never forwarded to WeChat, whatever
// the configuration. A client that can reach the API port (pregen, through
// a port-forward) learns from it how fast a run can go; it carries no
// token, no secret and nothing a caller sent.
const PathLimits = "/wxa-sidecar/limits"

// Limits is what PathLimits shows.
type Limits struct {
	// Options are the limits the gate enforces: the fleet's (kept in Redis)
	// when Shared, this process's otherwise. Only Default, Endpoints and
	// MaxWait are read.
	Options quota.Options
	// Shared says the limits are the whole fleet's; FleetSize is how many
	// replicas share them (each keeps 1/FleetSize while Redis is out of
	// reach).
	Shared    bool
	FleetSize int
	// Status lists the gate's cool-downs in force (quota.Local.Status,
	// fleet.Gate.Status); nil knows of none. Its rates are not read: a
	// fleet gate's show the fleet's limit, a local one's this process's.
	Status func() []quota.Status
}

// limitsAnswer is PathLimits' JSON.
type limitsAnswer struct {
	Shared         bool          `json:"shared"`
	FleetSize      int           `json:"fleet_size"`
	MaxWaitSeconds float64       `json:"max_wait_seconds"`
	Limits         []limitAnswer `json:"limits"`
}

// limitAnswer is one app's limit on one endpoint. RatePerSecond 0 is
// unlimited (and says so).
type limitAnswer struct {
	App           string          `json:"app"`
	Endpoint      string          `json:"endpoint"`
	RatePerSecond float64         `json:"rate_per_second"`
	Burst         int             `json:"burst"`
	Unlimited     bool            `json:"unlimited,omitempty"`
	Cooldown      *cooldownAnswer `json:"cooldown,omitempty"`
}

type cooldownAnswer struct {
	Errcode     wechat.Errcode `json:"errcode"`
	Until       time.Time      `json:"until"`
	SecondsLeft float64        `json:"seconds_left"`
}

// serveLimits answers PathLimits for a (nil: every app), one endpoint when
// ?endpoint= names one (a known endpoint, or "other").
func (p *Proxy) serveLimits(w http.ResponseWriter, r *http.Request, a *app) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeErrcode(w, http.StatusMethodNotAllowed, wechat.InvalidURL, "invalid url: "+PathLimits+" answers GET only")
		return
	}
	if p.limits == nil {
		writeErrcode(w, http.StatusNotFound, wechat.InvalidURL, "invalid url: this sidecar does not show its limits")
		return
	}
	endpoints := append(wechat.KnownEndpoints(), wechat.EndpointOther)
	if e := r.URL.Query().Get("endpoint"); e != "" {
		if !wechat.IsKnownEndpoint(e) && e != wechat.EndpointOther {
			writeErrcode(w, http.StatusBadRequest, wechat.InvalidArgs,
				"invalid args: endpoint "+quoteShort(e)+" is not one the sidecar limits by name")
			return
		}
		endpoints = []string{e}
	}
	var apps []string
	if a != nil {
		apps = []string{a.id}
	} else {
		for id := range p.apps {
			apps = append(apps, id)
		}
		slices.Sort(apps)
	}
	now := p.now()
	cooldowns := map[quota.Key]*cooldownAnswer{}
	if p.limits.Status != nil {
		for _, s := range p.limits.Status() {
			if s.Cooldown && now.Before(s.CooldownUntil) {
				cooldowns[quota.Key{App: s.App, Endpoint: s.Endpoint}] = &cooldownAnswer{Errcode: s.CooldownErrcode,
					Until: s.CooldownUntil.UTC(), SecondsLeft: s.CooldownUntil.Sub(now).Seconds()}
			}
		}
	}
	ans := limitsAnswer{Shared: p.limits.Shared, FleetSize: max(p.limits.FleetSize, 1),
		MaxWaitSeconds: max(p.limits.Options.MaxWait, 0).Seconds(), Limits: []limitAnswer{}}
	for _, id := range apps {
		for _, e := range endpoints {
			lim := p.limits.Options.Limit(e)
			la := limitAnswer{App: id, Endpoint: e, Cooldown: cooldowns[quota.Key{App: id, Endpoint: e}]}
			if lim.Rate > 0 {
				la.RatePerSecond, la.Burst = lim.Rate, lim.Burst
			} else {
				la.Unlimited = true
			}
			ans.Limits = append(ans.Limits, la)
		}
	}
	b, err := json.Marshal(ans)
	if err != nil {
		writeError(w, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store") // cool-downs end, limits change with a deploy
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(b)
	}
}
