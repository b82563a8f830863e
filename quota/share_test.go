package quota

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/internal/testclock"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

func TestShareDividesEveryLimitAmongTheFleet(t *testing.T) {
	o := Options{Default: Limit{Rate: 2, Burst: 6}, MaxWait: time.Second,
		Endpoints: map[string]Limit{wechat.PathUnlimited: {Rate: 82.5, Burst: 50}, wechat.PathQRCode: {}, wechat.PathWxacode: {Rate: 1, Burst: 2}}}
	got := o.Share(3)
	if got.Default != (Limit{Rate: 2.0 / 3, Burst: 2}) {
		t.Errorf("Default %+v, want rate 2/3 and burst 2", got.Default)
	}
	want := map[string]Limit{wechat.PathUnlimited: {Rate: 27.5, Burst: 16}, wechat.PathQRCode: {}, wechat.PathWxacode: {Rate: 1.0 / 3, Burst: 1}}
	for e, l := range want {
		if got.Endpoints[e] != l {
			t.Errorf("%s: %+v, want %+v (burst rounded down, at least 1; unlimited stays so)", e, got.Endpoints[e], l)
		}
	}
	if got.MaxWait != time.Second {
		t.Errorf("MaxWait %v, want it kept", got.MaxWait)
	}
	if o.Endpoints[wechat.PathUnlimited].Burst != 50 {
		t.Error("Share changed the options it was called on")
	}
	if one := o.Share(1); one.Default != o.Default || one.Endpoints[wechat.PathUnlimited] != o.Endpoints[wechat.PathUnlimited] {
		t.Errorf("Share(1) = %+v, want o", one)
	}
	if got.Limit(wechat.PathWxacode) != want[wechat.PathWxacode] || got.Limit("/wxa/other") != got.Default {
		t.Error("Limit does not pick the endpoint's own limit, else Default")
	}
}

// A Local made from Share(3) of a burst of 6 lets 2 calls through at once.
func TestLocalAtItsShareAdmitsItsPartOfTheBurst(t *testing.T) {
	l := testLocal(t, Options{Default: Limit{Rate: 0.01, Burst: 6}}.Share(3), testclock.New(base), &recorder{}, &testclock.Timers{})
	admitted := 0
	for range 10 {
		if l.Admit(t.Context(), wxacodeKey) == nil {
			admitted++
		}
	}
	if admitted != 2 {
		t.Errorf("admitted %d, want 2", admitted)
	}
}

func TestAdoptedCooldownRefusesAndNeverShortens(t *testing.T) {
	c, r, ts := testclock.New(base), &recorder{}, &testclock.Timers{}
	l := testLocal(t, Options{}, c, r, ts)
	day := Cooldown{Code: wechat.DailyQuota, Until: midnightChina}
	l.Adopt(wxacodeKey, day)
	l.Adopt(wxacodeKey, day)                                                     // the same again: nothing new
	l.Adopt(wxacodeKey, Cooldown{Code: wechat.MinuteQuota, Until: nextMinuteOf}) // shorter: ignored
	l.Adopt(unlimitedKey, Cooldown{Code: wechat.MinuteQuota, Until: base})       // already over: ignored
	rf := asRefusal(t, l.Admit(context.Background(), wxacodeKey))
	if *rf != *day.Refusal(base) || rf.Msg != "reach max api daily quota limit (wxa-sidecar cool-down)" {
		t.Errorf("refusal %+v, want the adopted 45009's", *rf)
	}
	if got, ok := l.Cooldown(wxacodeKey); !ok || got != day {
		t.Errorf("Cooldown = %+v, %v; want %+v", got, ok, day)
	}
	if _, ok := l.Cooldown(unlimitedKey); ok {
		t.Error("a cool-down already over was adopted")
	}
	if want := []bool{true}; !slices.Equal(r.cooldowns[wxacodeKey], want) {
		t.Errorf("Cooldown hook calls %v, want %v (reported once)", r.cooldowns[wxacodeKey], want)
	}
	if live := ts.Live(); len(live) != 1 || live[0].D != midnightChina.Sub(base) {
		t.Errorf("timers %v, want one to the end of the adopted cool-down", live)
	}
	ts.Fire(ts.Live()[0])
	if r.gaugeOf(wxacodeKey) != 0 {
		t.Error("the adopted cool-down's end was not reported")
	}
	// A longer one replaces it.
	c.Set(nextMinuteOf)
	l.Adopt(unlimitedKey, Cooldown{Code: wechat.DailyQuota, Until: nextMinuteOf.Add(time.Minute), Strikes: 1})
	l.Adopt(unlimitedKey, Cooldown{Code: wechat.DailyQuota, Until: midnightChina, Strikes: 2})
	if got, _ := l.Cooldown(unlimitedKey); got.Strikes != 2 || !got.Until.Equal(midnightChina) {
		t.Errorf("Cooldown %+v, want the day's", got)
	}
}

func TestRefusalHelpersSpeakLikeLocal(t *testing.T) {
	if got := *RateRefusal(200 * time.Millisecond); got != (Refusal{Code: wechat.MinuteQuota, RetryAfter: time.Second,
		Msg: "api minute-quota reach limit (wxa-sidecar UPSTREAM_RPS)"}) {
		t.Errorf("RateRefusal(200ms) = %+v", got)
	}
	if got := RateRefusal(3 * time.Second).RetryAfter; got != 3*time.Second {
		t.Errorf("RateRefusal(3s).RetryAfter = %v", got)
	}
	cd := Cooldown{Code: wechat.MinuteQuota, Until: nextMinuteOf}
	if got := *cd.Refusal(base); got != (Refusal{Code: wechat.MinuteQuota, RetryAfter: 45 * time.Second,
		Msg: "api minute-quota reach limit (wxa-sidecar cool-down)"}) {
		t.Errorf("Refusal = %+v", got)
	}
}
