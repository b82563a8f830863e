package quota

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// 18:30:15 in China, where WeChat's days begin.
var (
	base          = time.Date(2026, 11, 24, 10, 30, 15, 0, time.UTC)
	midnightChina = time.Date(2026, 11, 24, 16, 0, 0, 0, time.UTC)
	nextMinuteOf  = base.Truncate(time.Minute).Add(time.Minute)
)

func TestNextCooldown(t *testing.T) {
	dayOn := func(until time.Time, strikes int) *Cooldown {
		return &Cooldown{Code: wechat.DailyQuota, Until: until, Strikes: strikes}
	}
	tests := []struct {
		name     string
		code     wechat.Errcode
		endpoint string
		prev     *Cooldown
		now      time.Time
		daily    time.Duration
		want     Cooldown
		wantOK   bool
	}{
		{name: "45011: until the next minute", code: wechat.MinuteQuota, endpoint: wechat.PathWxacode, now: base,
			want: Cooldown{Code: wechat.MinuteQuota, Until: nextMinuteOf}, wantOK: true},
		{name: "45011 on the minute: a whole minute", code: wechat.MinuteQuota, endpoint: wechat.PathWxacode,
			now: base.Truncate(time.Minute), want: Cooldown{Code: wechat.MinuteQuota, Until: nextMinuteOf}, wantOK: true},
		{name: "45011 ignores QUOTA_COOLDOWN", code: wechat.MinuteQuota, endpoint: wechat.PathWxacode, now: base,
			daily: time.Hour, want: Cooldown{Code: wechat.MinuteQuota, Until: nextMinuteOf}, wantOK: true},
		{name: "45009: midnight China time", code: wechat.DailyQuota, endpoint: wechat.PathWxacode, now: base,
			want: Cooldown{Code: wechat.DailyQuota, Until: midnightChina}, wantOK: true},
		{name: "45009 after midnight China time: the next one", code: wechat.DailyQuota, endpoint: wechat.PathQRCode,
			now: midnightChina.Add(time.Second), want: Cooldown{Code: wechat.DailyQuota, Until: midnightChina.Add(24 * time.Hour)}, wantOK: true},
		{name: "45009 just before midnight China time", code: wechat.DailyQuota, endpoint: wechat.PathQRCode,
			now: midnightChina.Add(-time.Nanosecond), want: Cooldown{Code: wechat.DailyQuota, Until: midnightChina}, wantOK: true},
		{name: "45009 with QUOTA_COOLDOWN", code: wechat.DailyQuota, endpoint: wechat.PathWxacode, now: base,
			daily: time.Hour, want: Cooldown{Code: wechat.DailyQuota, Until: base.Add(time.Hour)}, wantOK: true},
		{name: "45009 on unlimited: a minute first", code: wechat.DailyQuota, endpoint: wechat.PathUnlimited, now: base,
			want: Cooldown{Code: wechat.DailyQuota, Until: nextMinuteOf, Strikes: 1}, wantOK: true},
		{name: "45009 on unlimited right after the minute: the day", code: wechat.DailyQuota, endpoint: wechat.PathUnlimited,
			prev: dayOn(nextMinuteOf, 1), now: nextMinuteOf.Add(time.Second),
			want: Cooldown{Code: wechat.DailyQuota, Until: midnightChina, Strikes: 2}, wantOK: true},
		{name: "45009 on unlimited during the minute: the day", code: wechat.DailyQuota, endpoint: wechat.PathUnlimited,
			prev: dayOn(nextMinuteOf, 1), now: base,
			want: Cooldown{Code: wechat.DailyQuota, Until: midnightChina, Strikes: 2}, wantOK: true},
		{name: "45009 on unlimited a second time with QUOTA_COOLDOWN", code: wechat.DailyQuota, endpoint: wechat.PathUnlimited,
			prev: dayOn(nextMinuteOf, 1), now: nextMinuteOf, daily: time.Hour,
			want: Cooldown{Code: wechat.DailyQuota, Until: nextMinuteOf.Add(time.Hour), Strikes: 2}, wantOK: true},
		{name: "45009 on unlimited a minute after the last ended: a minute again", code: wechat.DailyQuota, endpoint: wechat.PathUnlimited,
			prev: dayOn(nextMinuteOf, 1), now: nextMinuteOf.Add(time.Minute),
			want: Cooldown{Code: wechat.DailyQuota, Until: nextMinuteOf.Add(2 * time.Minute), Strikes: 1}, wantOK: true},
		{name: "45009 on unlimited after a 45011: a minute", code: wechat.DailyQuota, endpoint: wechat.PathUnlimited,
			prev: &Cooldown{Code: wechat.MinuteQuota, Until: nextMinuteOf}, now: nextMinuteOf,
			want: Cooldown{Code: wechat.DailyQuota, Until: nextMinuteOf.Add(time.Minute), Strikes: 1}, wantOK: true},
		{name: "45009 elsewhere after a minute's 45009: the day, no strikes", code: wechat.DailyQuota, endpoint: wechat.PathWxacode,
			prev: dayOn(nextMinuteOf, 1), now: nextMinuteOf,
			want: Cooldown{Code: wechat.DailyQuota, Until: midnightChina}, wantOK: true},
		{name: "45029 closes no endpoint", code: wechat.LifetimeQuota, endpoint: wechat.PathWxacode, now: base},
		{name: "45029 on unlimited closes nothing", code: wechat.LifetimeQuota, endpoint: wechat.PathUnlimited, prev: dayOn(nextMinuteOf, 1), now: base},
		{name: "success", code: wechat.OK, endpoint: wechat.PathWxacode, now: base},
		{name: "system busy", code: wechat.SystemBusy, endpoint: wechat.PathWxacode, now: base},
		{name: "dead token", code: wechat.InvalidCredential, endpoint: wechat.PathWxacode, now: base},
		{name: "no permission", code: wechat.NoPermission, endpoint: wechat.PathUnlimited, now: base},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := NextCooldown(tt.code, tt.endpoint, tt.prev, tt.now, tt.daily)
			if ok != tt.wantOK || got.Code != tt.want.Code || !got.Until.Equal(tt.want.Until) || got.Strikes != tt.want.Strikes {
				t.Errorf("NextCooldown = %+v, %v; want %+v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestNoGateAdmitsEverything(t *testing.T) {
	k := Key{"wxdemo", wechat.PathUnlimited}
	for range 3 {
		NoGate.Observe(t.Context(), k, wechat.DailyQuota)
	}
	if err := NoGate.Admit(t.Context(), k); err != nil {
		t.Errorf("NoGate.Admit = %v, want nil", err)
	}
}

func TestRefusalIsAnError(t *testing.T) {
	var err error = &Refusal{Code: wechat.MinuteQuota, Msg: "api minute-quota reach limit", RetryAfter: time.Second}
	var r *Refusal
	if !errors.As(errors.Join(context.Canceled, err), &r) || r.Code != wechat.MinuteQuota {
		t.Errorf("errors.As found %v, want the refusal", r)
	}
	if got := err.Error(); got != "quota: api minute-quota reach limit" {
		t.Errorf("Error() = %q", got)
	}
}
