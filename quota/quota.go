// Package quota decides whether a call may go upstream to WeChat: it owns
// the per-app, per-endpoint rate limits (UPSTREAM_RPS, UPSTREAM_LIMITS,
// UPSTREAM_MAX_WAIT) and the cool-downs WeChat's own quota errcodes start
// (45011, 45009; QUOTA_COOLDOWN). A refused call is answered locally, in
// WeChat's words, with how long until asking again can succeed.
//
// It decides, it never sends: it never imports net/http nor prometheus.
// Metrics reach it through Hooks, as they reach token/ and cache/, and the
// HTTP surfaces render a *Refusal, which unwraps to a *wechat.Error, as
// they see fit. 45029 (the lifetime cap)
// is not its business: it refuses one parameter set, never an endpoint, and
// the code path remembers it per request.
//
// Time is a parameter, in x/time/rate's style: the exported methods read the
// clock (Options.Now), the logic takes the instant, so every policy here is
// tested by driving time, without sleeping.
package quota

import (
	"context"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// Key is what a limit and a cool-down belong to: one app's calls to one
// endpoint, each WeChat API having a quota of its own. Callers pass a
// configured app ID and a bounded endpoint name (wechat.Endpoint), never a
// raw request path: a Gate keeps state per Key, so the keys callers pass
// are what bounds its memory.
type Key struct {
	App      string
	Endpoint string
}

// Refusal is a call not let upstream: WeChat's quota errcode and errmsg to
// answer the caller with locally, and how long until asking again can
// succeed (the end of the cool-down, or the next free rate-limit slot).
//
// It unwraps to the same answer as a *wechat.Error, the one error type the
// renderers read. It stays a type of its own because it says one thing a
// *wechat.Error cannot: nothing went upstream. WeChat's own quota answers
// are *wechat.Error too, with the same errcodes, and callers branch on the
// difference: the public port gives a client's slot back only for a
// refusal, and the fleet's failure marker never hands a refusal (this
// replica's limits, or one caller's) to another replica's callers.
type Refusal struct {
	Code       wechat.Errcode
	Msg        string
	RetryAfter time.Duration
}

func (r *Refusal) Error() string { return "quota: " + r.Msg }

// Unwrap is the refusal in WeChat's words. Its Status is 0: an answer the
// sidecar gives instead of WeChat's, sent with 200 as WeChat's would be
// and never shared as another call's answer (see wechat.Error.Status).
func (r *Refusal) Unwrap() error {
	return &wechat.Error{Code: r.Code, Msg: r.Msg, RetryAfter: r.RetryAfter}
}

// RateRefusal is the refusal of a call that found no rate-limit slot free
// within the maximum wait, delay being how long it would have queued: 45011
// in WeChat's words, naming UPSTREAM_RPS, and at least a second to wait.
func RateRefusal(delay time.Duration) *Refusal {
	return &Refusal{Code: wechat.MinuteQuota, RetryAfter: max(delay, time.Second),
		Msg: "api minute-quota reach limit (wxa-sidecar UPSTREAM_RPS)"}
}

// Refusal is what a call refused at now by cd is answered: cd's errcode,
// WeChat's errmsg for it, and the time left until cd ends.
func (cd Cooldown) Refusal(now time.Time) *Refusal {
	return &Refusal{Code: cd.Code, RetryAfter: cd.Until.Sub(now),
		Msg: quotaMessage(cd.Code) + " (wxa-sidecar cool-down)"}
}

// A Gate decides whether a call may go upstream and learns from WeChat's
// answers. It is safe for concurrent use. Admit returns nil (go ahead), a
// *Refusal (no later than the configured maximum wait), or ctx.Err() if ctx
// ends first; Observe never blocks for long and never fails the call: a
// gate that cannot record an answer forgets it.
type Gate interface {
	// Admit returns once the call for k may go upstream, or why not.
	Admit(ctx context.Context, k Key) error
	// Observe tells the gate that WeChat answered code (0: success) to a
	// call for k that Admit let through.
	Observe(ctx context.Context, k Key, code wechat.Errcode)
}

// NoGate admits every call at once and learns nothing: no limits, no
// cool-downs.
var NoGate Gate = noGate{}

type noGate struct{}

func (noGate) Admit(context.Context, Key) error             { return nil }
func (noGate) Observe(context.Context, Key, wechat.Errcode) {}

// Cooldown closes one Key until a WeChat quota window can have reset.
type Cooldown struct {
	// Code is the quota errcode WeChat answered, and the one every call is
	// answered with until Until.
	Code  wechat.Errcode
	Until time.Time
	// Strikes counts consecutive 45009 on getwxacodeunlimit, where the
	// first may be the per-minute limit of older docs and only the second
	// in a row is the day's.
	Strikes int
}

// NextCooldown is the cool-down policy: the cool-down WeChat's answer code
// for endpoint at now starts, given the endpoint's previous cool-down (nil
// if none), or false when code starts none.
//
//   - 45011 (minute quota) closes the endpoint until the next minute.
//   - 45009 (daily quota) closes it until midnight China time, when WeChat
//     resets it, or for daily when daily > 0 (QUOTA_COOLDOWN).
//   - On getwxacodeunlimit, older docs used 45009 for the per-minute limit:
//     the first 45009 closes it for the minute only, and a second one
//     within a minute after the previous cool-down ended for the day.
//   - 44993 (the day's 500 000 schemes and URL Links) closes it until
//     midnight China time, as 45009 does; Closes says it closes the
//     other link endpoint of the pair too.
//   - Anything else starts none: 45029 refuses one parameter set, not the
//     endpoint.
func NextCooldown(code wechat.Errcode, endpoint string, prev *Cooldown, now time.Time, daily time.Duration) (Cooldown, bool) {
	switch code {
	case wechat.MinuteQuota:
		return Cooldown{Code: code, Until: nextMinute(now)}, true
	case wechat.LinksDailyQuota:
		return Cooldown{Code: code, Until: endOfDay(now, daily)}, true
	case wechat.DailyQuota:
		cd := Cooldown{Code: code, Until: endOfDay(now, daily)}
		if endpoint == wechat.PathUnlimited {
			cd.Strikes = 1
			if prev != nil && prev.Code == wechat.DailyQuota && now.Sub(prev.Until) < time.Minute {
				cd.Strikes = prev.Strikes + 1
			}
			if cd.Strikes == 1 {
				cd.Until = nextMinute(now)
			}
		}
		return cd, true
	}
	return Cooldown{}, false
}

// Closes lists the keys a cool-down that code starts on k closes: k, and
// for 44993 on generatescheme or generate_urllink both of them, which
// share the day's 500 000 at WeChat.
func Closes(k Key, code wechat.Errcode) []Key {
	if code == wechat.LinksDailyQuota && (k.Endpoint == wechat.PathScheme || k.Endpoint == wechat.PathURLLink) {
		return []Key{{App: k.App, Endpoint: wechat.PathScheme}, {App: k.App, Endpoint: wechat.PathURLLink}}
	}
	return []Key{k}
}

// endOfDay is when a 45009 cool-down ends.
func endOfDay(now time.Time, daily time.Duration) time.Time {
	if daily > 0 {
		return now.Add(daily)
	}
	return wechat.NextMidnight(now)
}

func nextMinute(now time.Time) time.Time { return now.Truncate(time.Minute).Add(time.Minute) }

// quotaMessage is WeChat's own errmsg for a quota errcode.
func quotaMessage(code wechat.Errcode) string {
	switch code {
	case wechat.MinuteQuota:
		return "api minute-quota reach limit"
	case wechat.LinksDailyQuota:
		return "reach max daily quota of schemes and url links"
	}
	return "reach max api daily quota limit"
}
