package quota

import (
	"testing"

	"github.com/wxa-sidecar/wxa-sidecar/internal/testclock"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// 44993 is the day's 500 000 schemes and URL Links together: heard on
// either endpoint, it closes both until midnight China time, and nothing
// else.
func TestLinksDailyQuotaClosesSchemeAndURLLinkTogether(t *testing.T) {
	scheme, urllink := Key{"wxapp", wechat.PathScheme}, Key{"wxapp", wechat.PathURLLink}
	for _, observed := range []Key{scheme, urllink} {
		c, r := testclock.New(base), &recorder{}
		l := testLocal(t, Options{}, c, r, &testclock.Timers{})
		l.Observe(t.Context(), observed, wechat.LinksDailyQuota)
		for _, k := range []Key{scheme, urllink} {
			rf := asRefusal(t, l.Admit(t.Context(), k))
			if rf.Code != wechat.LinksDailyQuota || rf.RetryAfter != midnightChina.Sub(base) {
				t.Errorf("44993 on %s: %s refused %+v, want 44993 until midnight UTC+8", observed.Endpoint, k.Endpoint, *rf)
			}
			if got := r.gaugeOf(k); got != 1 {
				t.Errorf("44993 on %s: quota_cooldown_active of %s %v, want 1", observed.Endpoint, k.Endpoint, got)
			}
		}
		for _, k := range []Key{{"wxapp", wechat.PathShortLink}, {"wxapp", wechat.PathUnlimited}, {"wxother", wechat.PathScheme}} {
			if err := l.Admit(t.Context(), k); err != nil {
				t.Errorf("44993 on %s closed %v: %v", observed.Endpoint, k, err)
			}
		}
	}
	// On any other endpoint it is a code that closes nothing more.
	if got := Closes(Key{"wxapp", wechat.PathShortLink}, wechat.LinksDailyQuota); len(got) != 1 {
		t.Errorf("Closes on the short link endpoint: %v", got)
	}
}
