package fleet

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"github.com/wxa-sidecar/wxa-sidecar/token"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// A holder's failure is left for the waiters only when it is WeChat's
// answer to the code fetch itself. A quota refusal (this replica's limits)
// and the errcode of a token fetch (this replica's egress IP, its secret)
// read as a *wechat.Error too, with Status 0: the waiters load themselves.
func TestOnlyWeChatsAnswerToTheFetchIsLeftForTheWaiters(t *testing.T) {
	fake := wechattest.NewServer(wechattest.Options{})
	t.Cleanup(fake.Close)
	fake.FailNextErrcode("/cgi-bin/stable_token", 1, int(wechat.IPNotWhitelisted))
	m, err := token.New(token.Options{AppID: wechattest.DemoAppID, Secret: wechattest.DemoSecret, BaseURL: fake.URL})
	if err != nil {
		t.Fatal(err)
	}
	_, tokenErr := m.Token(context.Background())

	srv := redistest.Start(t, redistest.Options{})
	c := newTestClient(t, srv.URL, &seen{}, nil)
	f := NewFlight(c, FlightOptions{})
	for i, tc := range []struct {
		name   string
		err    error
		shared bool
	}{
		{"a token fetch's errcode", tokenErr, false},
		{"a quota refusal", quota.RateRefusal(time.Second), false},
		{"WeChat's answer to the fetch", wechat.Errorf(wechat.MinuteQuota, "api minute-quota reach limit"), true},
	} {
		var we *wechat.Error
		if !errors.As(tc.err, &we) {
			t.Fatalf("%s: %v is no *wechat.Error", tc.name, tc.err)
		}
		k := testKey(60 + i)
		keys := flightKeys{app: "wxapp", image: imageKeyOf(k), lease: "wxa:{wxapp}:lease:" + hexOf(k), failure: "wxa:{wxapp}:fail:" + hexOf(k)}
		owner := newOwner()
		expires := time.Now().Add(5 * time.Second)
		srv.Command(t, "SET", keys.lease, owner, "PX", "5000")
		f.hold(context.Background(), keys, owner, expires, func(context.Context) (*cache.Entry, error) { return nil, tc.err })
		if got := srv.Command(t, "EXISTS", keys.failure) == "1"; got != tc.shared {
			t.Errorf("%s: a failure marker left: %v, want %v", tc.name, got, tc.shared)
		}
	}
}
