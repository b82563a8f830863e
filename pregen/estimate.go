package pregen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// pathLimits is the sidecar's read-only answer of its upstream limits and
// cool-downs on the API port (proxy.PathLimits: pregen imports none of the
// sidecar's parts, and never reaches its admin port).
const pathLimits = "/wxa-sidecar/limits"

// maxLimitsBytes bounds what is read of that answer: a few KB per app.
const maxLimitsBytes = 1 << 20

// wechatPerMinute is getwxacodeunlimit's documented minute quota.
const wechatPerMinute = 5000

// endpointLimit is what the sidecar enforces on the run's endpoint.
type endpointLimit struct {
	Shared        bool
	RatePerSecond float64 // 0: unlimited
	Burst         int
	// CooldownCode and CooldownLeft are a cool-down in force; 0 when none.
	CooldownCode wechat.Errcode
	CooldownLeft time.Duration
}

// limits asks the sidecar what it enforces on endpoint, for the one app
// the run's requests reach.
func (c *client) limitsFor(ctx context.Context, endpoint string) (*endpointLimit, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.limits+"?endpoint="+url.QueryEscape(endpoint), nil)
	if err != nil {
		return nil, transportError(err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, transportError(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxLimitsBytes))
	if err != nil {
		return nil, transportError(err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("it answered HTTP %d: %q", resp.StatusCode, truncate(b, 80))
	}
	var ans struct {
		Shared bool `json:"shared"`
		Limits []struct {
			App           string  `json:"app"`
			Endpoint      string  `json:"endpoint"`
			RatePerSecond float64 `json:"rate_per_second"`
			Burst         int     `json:"burst"`
			Unlimited     bool    `json:"unlimited"`
			Cooldown      *struct {
				Errcode     wechat.Errcode `json:"errcode"`
				SecondsLeft float64        `json:"seconds_left"`
			} `json:"cooldown"`
		} `json:"limits"`
	}
	if err := json.Unmarshal(b, &ans); err != nil {
		return nil, fmt.Errorf("its answer is not the limits: %w", err)
	}
	var found *endpointLimit
	for _, l := range ans.Limits {
		if l.Endpoint != endpoint {
			continue
		}
		if found != nil {
			return nil, errors.New("it manages several apps: name one with --sidecar …/apps/{appid}")
		}
		found = &endpointLimit{Shared: ans.Shared}
		if !l.Unlimited && l.RatePerSecond > 0 && !math.IsInf(l.RatePerSecond, 0) {
			found.RatePerSecond, found.Burst = l.RatePerSecond, max(l.Burst, 1)
		}
		if cd := l.Cooldown; cd != nil && cd.SecondsLeft > 0 {
			// Bounded like a Retry-After: a day is the longest WeChat's
			// quotas close an endpoint for.
			found.CooldownCode = cd.Errcode
			found.CooldownLeft = time.Duration(min(cd.SecondsLeft, 86400) * float64(time.Second))
		}
	}
	if found == nil {
		return nil, fmt.Errorf("its answer has no limit for %s", endpoint)
	}
	return found, nil
}

// duration estimates the shortest time n calls to endpoint can take
// through a sidecar enforcing lim: the cool-down in force, then the burst
// at once and the rest at the limit's rate, and never faster than WeChat's
// minute quota on getwxacodeunlimit. How fast WeChat answers and
// --concurrency can only make it longer.
func duration(n int, endpoint string, lim *endpointLimit) time.Duration {
	if n <= 0 {
		return 0
	}
	d := lim.CooldownLeft
	if lim.RatePerSecond > 0 && n > lim.Burst {
		d += time.Duration(float64(n-lim.Burst) / lim.RatePerSecond * float64(time.Second))
	}
	if endpoint == wechat.PathUnlimited {
		// Each further 5000 waits for WeChat's next minute.
		d = max(d, time.Duration((n-1)/wechatPerMinute)*time.Minute)
	}
	return d
}

// estimate is the dry run's line on how long generating n codes takes:
// from the sidecar's own limits, or why they are unknown.
func estimate(n int, endpoint string, lim *endpointLimit, limErr error) string {
	name := shortName(endpoint)
	if limErr != nil {
		return fmt.Sprintf("would take: unknown (the sidecar did not say its limits: %v)", limErr)
	}
	var how string
	switch {
	case lim.RatePerSecond > 0:
		how = fmt.Sprintf("the sidecar lets %s calls a second to %s through, %d at once", formatRate(lim.RatePerSecond),
			name, lim.Burst)
	default:
		how = fmt.Sprintf("the sidecar sets no limit on %s", name)
	}
	if lim.Shared {
		how += ", for the whole fleet"
	}
	if lim.CooldownLeft > 0 {
		how += fmt.Sprintf("; it is cooling down (errcode %d) for %s more", lim.CooldownCode, roundUp(lim.CooldownLeft))
	}
	d := duration(n, endpoint, lim)
	if d < time.Second {
		return fmt.Sprintf("would take less than a second at the sidecar's limits (%s)", how)
	}
	return fmt.Sprintf("would take at least %s (%s)", roundUp(d), how)
}

// roundUp is d in whole seconds, rounded up.
func roundUp(d time.Duration) time.Duration {
	return (d + time.Second - 1).Truncate(time.Second)
}

// formatRate is a rate without needless decimals: 2, 0.5, 82.5.
func formatRate(r float64) string {
	return fmt.Sprintf("%.4g", r)
}

// shortName is an endpoint by the name --endpoint takes.
func shortName(endpoint string) string {
	for name, path := range endpointNames {
		if path == endpoint {
			return name
		}
	}
	return endpoint
}
