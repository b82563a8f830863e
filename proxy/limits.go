package proxy

import (
	"context"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/metrics"
)

// RateLimit is a token bucket: Rate slots a second, Burst at once.
type RateLimit struct {
	Rate  float64
	Burst int
}

// Limits configures the upstream rate limits and quota cool-downs.
type Limits struct {
	// Default applies to each app and endpoint separately (each WeChat API
	// has a quota of its own). A zero Rate means unlimited.
	Default RateLimit
	// Endpoints overrides Default for the named WeChat paths.
	Endpoints map[string]RateLimit
	// MaxWait is how long a caller may queue for a slot; 0 refuses at once.
	MaxWait time.Duration
	// QuotaCooldown is how long 45009 (daily quota) closes an endpoint;
	// 0 means until the next midnight China time, when WeChat resets it.
	QuotaCooldown time.Duration
}

// chinaTime is UTC+8, where WeChat's days begin; fixed, so no tz database
// is needed in a distroless image.
var chinaTime = time.FixedZone("UTC+8", 8*60*60)

type limitKey struct{ app, endpoint string }

// cooldown closes one app+endpoint until a quota window can have reset.
type cooldown struct {
	errcode int
	until   time.Time
	// strikes counts 45009 on getwxacodeunlimit: the first may be the
	// per-minute limit of older docs, the second in a row is the day's.
	strikes int
	timer   *time.Timer
}

// limits is the one place that decides whether a call may go upstream.
// Its maps are keyed by app and bounded endpoint name, so they cannot grow
// beyond apps × (known endpoints + other); the refusals, keyed by request,
// are bounded by count.
type limits struct {
	cfg     Limits
	now     func() time.Time
	log     *slog.Logger
	metrics *metrics.Metrics

	mu        sync.Mutex
	buckets   map[limitKey]*rate.Limiter
	cooldowns map[limitKey]*cooldown
	// lifetimeLogged: the endpoints whose lifetime cap was logged already.
	lifetimeLogged map[limitKey]bool

	// refusals are the code requests WeChat refused with 45029.
	refusals *refusals
}

func newLimits(cfg Limits, now func() time.Time, log *slog.Logger, m *metrics.Metrics) *limits {
	return &limits{cfg: cfg, now: now, log: log, metrics: m,
		buckets: map[limitKey]*rate.Limiter{}, cooldowns: map[limitKey]*cooldown{},
		lifetimeLogged: map[limitKey]bool{}, refusals: newRefusals(maxRefusals, defaultRefusalTTL)}
}

// rememberRefusalsFor sets how long a 45029 is remembered per request:
// CACHE_TTL, as long as the image would have been kept. Call it before the
// limits are used.
func (l *limits) rememberRefusalsFor(ttl time.Duration) {
	if ttl > 0 {
		l.refusals.ttl = ttl
	}
}

func (l *limits) bucket(k limitKey) *rate.Limiter {
	b := l.buckets[k]
	if b == nil {
		rl, ok := l.cfg.Endpoints[k.endpoint]
		if !ok {
			rl = l.cfg.Default
		}
		if rl.Rate <= 0 {
			b = rate.NewLimiter(rate.Inf, 0)
		} else {
			b = rate.NewLimiter(rate.Limit(rl.Rate), max(rl.Burst, 1))
		}
		l.buckets[k] = b
	}
	return b
}

// admit returns nil once app's call to endpoint may go upstream: no quota
// cool-down is active and a rate-limit slot is free within MaxWait.
// Otherwise it returns WeChat's own quota error.
func (l *limits) admit(ctx context.Context, app, endpoint string) error {
	k := limitKey{app, endpoint}
	now := l.now()
	l.mu.Lock()
	if cd := l.cooldowns[k]; cd != nil && now.Before(cd.until) {
		l.mu.Unlock()
		return &quotaError{errcode: cd.errcode, retryAfter: cd.until.Sub(now),
			msg: quotaMessage(cd.errcode) + " (wxa-sidecar cool-down)"}
	}
	r := l.bucket(k).ReserveN(now, 1)
	l.mu.Unlock()
	delay := r.DelayFrom(now)
	if !r.OK() || delay > l.cfg.MaxWait {
		r.CancelAt(now)
		l.metrics.RateLimitRejections.WithLabelValues(endpoint).Inc()
		return &quotaError{errcode: errcodeMinuteQuota, retryAfter: max(delay, time.Second),
			msg: "api minute-quota reach limit (wxa-sidecar UPSTREAM_RPS)"}
	}
	l.metrics.RateLimitWait.WithLabelValues(endpoint).Observe(delay.Seconds())
	if delay == 0 {
		return nil
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.Cancel()
		return ctx.Err()
	}
}

// observe opens a cool-down when WeChat answered a quota errcode that
// closes the whole endpoint: 45011 and 45009. 45029 closes one request
// only (see refuseForGood).
func (l *limits) observe(app, endpoint string, errcode int) {
	if errcode != errcodeMinuteQuota && errcode != errcodeDailyQuota {
		return
	}
	k := limitKey{app, endpoint}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	prev := l.cooldowns[k]
	cd := &cooldown{errcode: errcode}
	switch errcode {
	case errcodeMinuteQuota:
		cd.until = nextMinute(now)
	case errcodeDailyQuota:
		cd.until = l.endOfDay(now)
		if endpoint == pathUnlimited {
			// Older docs used 45009 for getwxacodeunlimit's per-minute
			// limit: a minute first, the day only if it comes again
			// right after that minute.
			cd.strikes = 1
			if prev != nil && prev.errcode == errcodeDailyQuota && now.Sub(prev.until) < time.Minute {
				cd.strikes = prev.strikes + 1
			}
			if cd.strikes == 1 {
				cd.until = nextMinute(now)
			}
		}
	}
	if prev != nil && prev.timer != nil {
		prev.timer.Stop()
	}
	gauge := l.metrics.QuotaCooldown.WithLabelValues(app, endpoint)
	gauge.Set(1)
	cd.timer = time.AfterFunc(cd.until.Sub(now), func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.cooldowns[k] == cd {
			gauge.Set(0)
		}
	})
	l.cooldowns[k] = cd
	l.log.Warn("WeChat quota reached: calls answered locally until the window resets",
		"app", app, "endpoint", endpoint, "errcode", errcode, "until", cd.until)
}

// cooldownLeft is how long app's endpoint stays closed by a cool-down,
// false when none is active.
func (l *limits) cooldownLeft(app, endpoint string) (time.Duration, bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if cd := l.cooldowns[limitKey{app, endpoint}]; cd != nil && now.Before(cd.until) {
		return cd.until.Sub(now), true
	}
	return 0, false
}

// refuseForGood remembers that WeChat answered 45029 to the code request
// key: the lifetime cap of getwxacode/createwxaqrcode is reached, and WeChat
// now refuses every parameter set it has not generated before while still
// serving those it has. The endpoint stays open; this one request is
// answered locally from now on.
func (l *limits) refuseForGood(app, endpoint string, key cache.Key) {
	l.refusals.add(key, l.now())
	k := limitKey{app, endpoint}
	l.mu.Lock()
	first := !l.lifetimeLogged[k]
	l.lifetimeLogged[k] = true
	l.mu.Unlock()
	if first {
		// Once per app and endpoint: the cap never resets, and every new
		// code from now on meets it.
		l.log.Error("lifetime cap reached: WeChat refuses new codes on this endpoint (45029); "+
			"codes generated before are still served, each refused request is answered locally for CACHE_TTL",
			"app", app, "endpoint", endpoint, "errcode", errcodeLifetimeQuota)
	}
}

// refusedForGood reports whether WeChat answered 45029 to key within its
// refusal's lifetime.
func (l *limits) refusedForGood(key cache.Key) bool {
	return l.refusals.has(key, l.now())
}

// endOfDay is when a 45009 cool-down ends.
func (l *limits) endOfDay(now time.Time) time.Time {
	if l.cfg.QuotaCooldown > 0 {
		return now.Add(l.cfg.QuotaCooldown)
	}
	c := now.In(chinaTime)
	return time.Date(c.Year(), c.Month(), c.Day()+1, 0, 0, 0, 0, chinaTime)
}

func nextMinute(now time.Time) time.Time { return now.Truncate(time.Minute).Add(time.Minute) }

// stop ends the cool-down timers.
func (l *limits) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, cd := range l.cooldowns {
		if cd.timer != nil {
			cd.timer.Stop()
		}
	}
}

func quotaMessage(errcode int) string {
	switch errcode {
	case errcodeMinuteQuota:
		return "api minute-quota reach limit"
	default:
		return "reach max api daily quota limit"
	}
}

// quotaError answers a caller locally with WeChat's quota errcode.
type quotaError struct {
	errcode    int
	msg        string
	retryAfter time.Duration
}

func (e *quotaError) Error() string { return "proxy: " + e.msg }

// retryAfterSeconds is the Retry-After header value of the error.
func (e *quotaError) retryAfterSeconds() string { return retryAfterSeconds(e.retryAfter) }

// retryAfterSeconds is d as a Retry-After header value: whole seconds,
// rounded up, at least 1.
func retryAfterSeconds(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(s, 1), 10)
}

// LimitStatus is one bucket or cool-down, for /status.
type LimitStatus struct {
	App             string    `json:"app"`
	Endpoint        string    `json:"endpoint"`
	Rate            float64   `json:"rate_per_second"`
	Burst           int       `json:"burst"`
	TokensAvailable float64   `json:"slots_available"`
	Cooldown        bool      `json:"cooldown"`
	CooldownErrcode int       `json:"cooldown_errcode,omitempty"`
	CooldownUntil   time.Time `json:"cooldown_until,omitzero"`
}

func (l *limits) status() []LimitStatus {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	byKey := map[limitKey]*LimitStatus{}
	get := func(k limitKey) *LimitStatus {
		s := byKey[k]
		if s == nil {
			s = &LimitStatus{App: k.app, Endpoint: k.endpoint}
			byKey[k] = s
		}
		return s
	}
	for k, b := range l.buckets {
		s := get(k)
		s.Rate, s.Burst, s.TokensAvailable = float64(b.Limit()), b.Burst(), b.TokensAt(now)
		if b.Limit() == rate.Inf {
			s.Rate, s.TokensAvailable = 0, 0
		}
	}
	for k, cd := range l.cooldowns {
		if now.Before(cd.until) {
			s := get(k)
			s.Cooldown, s.CooldownErrcode, s.CooldownUntil = true, cd.errcode, cd.until
		}
	}
	out := make([]LimitStatus, 0, len(byKey))
	for _, s := range byKey {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].App != out[j].App {
			return out[i].App < out[j].App
		}
		return out[i].Endpoint < out[j].Endpoint
	})
	return out
}
