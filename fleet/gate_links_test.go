package fleet

import (
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/internal/testclock"
	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// A 44993 one replica hears on generatescheme closes generatescheme and
// generate_urllink for the whole fleet until midnight China time: they
// share the day's 500 000 at WeChat. The short link endpoint stays open.
func TestLinksDailyQuotaClosesBothLinkEndpointsFleetWide(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	now := time.Now().Truncate(time.Minute).Add(time.Minute + time.Second)
	clock := testclock.New(now)
	o := quota.Options{Default: quota.Limit{Rate: 100, Burst: 100}, Now: clock.Now}
	a, b := newReplica(t, srv.URL, o, 2, nil), newReplica(t, srv.URL, o, 2, nil)
	scheme := quota.Key{App: gateApp, Endpoint: wechat.PathScheme}
	urllink := quota.Key{App: gateApp, Endpoint: wechat.PathURLLink}
	a.gate.Observe(t.Context(), scheme, wechat.LinksDailyQuota)
	want, _ := quota.NextCooldown(wechat.LinksDailyQuota, scheme.Endpoint, nil, now, 0)
	for _, k := range []quota.Key{scheme, urllink} {
		rf := refusalOf(t, b.gate.Admit(t.Context(), k))
		if rf.Code != wechat.LinksDailyQuota || rf.RetryAfter != want.Until.Sub(now) {
			t.Errorf("the other replica on %s: %+v, want 44993 for %v", k.Endpoint, *rf, want.Until.Sub(now))
		}
		if ms := srv.Command(t, "PEXPIRETIME", a.client.Key(gateApp, "cd", k.Endpoint)); ms != itoa(int(want.Until.UnixMilli())) {
			t.Errorf("%s's cool-down expires at %s, want %d", k.Endpoint, ms, want.Until.UnixMilli())
		}
	}
	if err := b.gate.Admit(t.Context(), quota.Key{App: gateApp, Endpoint: wechat.PathShortLink}); err != nil {
		t.Errorf("the short link endpoint: %v", err)
	}
}
