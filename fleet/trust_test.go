package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"github.com/wxa-sidecar/wxa-sidecar/token"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// The tests here play a Redis writer: another tenant of a shared Redis, or
// a compromised client. Whatever it writes, a replica must never serve,
// refuse or send to WeChat on its word. "Authentic" values below are
// sealed with the replicas' own key, as a replica with a bug, or a value
// replayed or moved from elsewhere, would be: even those are bounded.

// year9999 is the end the forged values below claim.
var year9999 = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// A cool-down a writer planted (errcode 0 until the year 9999, say) never
// closes the endpoint: the call is decided by the local share as with
// Redis unreachable, the value is counted and left in place.
func TestForgedCooldownNeverClosesTheEndpoint(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	// The local share that takes over from Redis starts empty (it cannot
	// know what Redis granted): the call waits for its slot, but is never
	// refused on the forged value's word.
	o := quota.Options{Default: quota.Limit{Rate: 50, Burst: 100}, MaxWait: 2 * time.Second}
	r := newReplica(t, srv.URL, o, 1, nil)
	key := r.gate.cooldownKey(wxacodeKey)
	now := time.Now()
	authentic := func(code wechat.Errcode, strikes int, until time.Time, at string) string {
		v, err := r.gate.sealCooldown(gateApp, at, quota.Cooldown{Code: code, Strikes: strikes, Until: until})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	ms := func(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }
	for _, tc := range []struct{ name, value string }{
		{"in clear, errcode 0 until 9999", "0 0 " + ms(year9999)},
		{"in clear, 45009 until 9999", "45009 1 " + ms(year9999)},
		{"an end of 9999 beside garbage", ms(year9999) + " garbage"},
		{"a clear end that is not the sealed one", ms(year9999) + " " + strings.SplitN(authentic(wechat.DailyQuota, 1, now.Add(time.Hour), key), " ", 2)[1]},
		{"sealed: errcode 0 within the window", authentic(wechat.OK, 0, now.Add(30*time.Second), key)},
		{"sealed: 45029, which closes no endpoint", authentic(wechat.LifetimeQuota, 0, now.Add(30*time.Second), key)},
		{"sealed: 45009 until 9999", authentic(wechat.DailyQuota, 2, year9999, key)},
		{"sealed: 45011 ended ten minutes ago (replayed)", authentic(wechat.MinuteQuota, 0, now.Add(-10*time.Minute), key)},
		{"sealed for another endpoint, moved here", authentic(wechat.MinuteQuota, 0, now.Add(30*time.Second), r.gate.cooldownKey(unlimitedKey))},
		{"sealed for the memory key, moved here", authentic(wechat.MinuteQuota, 0, now.Add(30*time.Second), r.gate.memoryKey(wxacodeKey))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := r.redis.unsealedOf(UnsealedCooldown)
			rset(t, r.client, key, tc.value) // no TTL: it would stay
			if err := r.gate.Admit(context.Background(), wxacodeKey); err != nil {
				t.Fatalf("Admit = %v; want the call admitted (a forged cool-down closes nothing)", err)
			}
			if _, held := r.gate.CooldownLeft(wxacodeKey); held {
				t.Error("the replica now holds the forged cool-down")
			}
			if got := r.redis.unsealedOf(UnsealedCooldown) - before; got != 1 {
				t.Errorf("counted %d unsealed cool-downs, want 1", got)
			}
			if got := rget(t, r.client, key); got != tc.value {
				t.Errorf("the forged value was changed or deleted; want it left")
			}
		})
	}
	srv.Command(t, "DEL", key)
}

// A forged cool-down with a far end does not keep the fleet from sharing a
// real one: the real 45011 replaces it, and another replica is refused for
// the minute only.
func TestForgedCooldownDoesNotOutliveARealOne(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	o := quota.Options{Default: quota.Limit{Rate: 10, Burst: 100}}
	a, b := newReplica(t, srv.URL, o, 1, nil), newReplica(t, srv.URL, o, 1, nil)
	key := a.gate.cooldownKey(wxacodeKey)
	srv.Command(t, "SET", key, strconv.FormatInt(year9999.UnixMilli(), 10)+" forged")
	a.gate.Observe(context.Background(), wxacodeKey, wechat.MinuteQuota)
	r := refusalOf(t, b.gate.Admit(context.Background(), wxacodeKey))
	if r.Code != wechat.MinuteQuota || r.RetryAfter <= 0 || r.RetryAfter > 61*time.Second {
		t.Errorf("b refused with %+v, want 45011 until the next minute", *r)
	}
	if got := srv.Command(t, "PTTL", key); len(got) == 0 || got[0] == '-' {
		t.Errorf("PTTL of the shared cool-down %s, want the real one's", got)
	}
}

// The GCRA instant a writer set further ahead than the limit allows (or
// not a number) is unreadable: the call is decided locally, never refused
// on its word.
func TestForgedRateLimitInstantIsDecidedLocally(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	// As with Redis unreachable: the local share, empty as it takes over,
	// admits the call after its slot's wait.
	o := quota.Options{Default: quota.Limit{Rate: 50, Burst: 100}, MaxWait: 2 * time.Second}
	r := newReplica(t, srv.URL, o, 1, nil)
	key := r.gate.bucketKey(wxacodeKey)
	for i, value := range []string{"99999999999999999", "not-a-number"} {
		srv.Command(t, "SET", key, value)
		if err := r.gate.Admit(context.Background(), wxacodeKey); err != nil {
			t.Errorf("Admit with the bucket at %q = %v; want admitted by the local share", value, err)
		}
		if got := r.redis.unsealedOf(UnsealedRateLimit); got != i+1 {
			t.Errorf("counted %d unreadable buckets, want %d", got, i+1)
		}
		if got := srv.Command(t, "GET", key); got != value {
			t.Errorf("the bucket became %q; want the value left", got)
		}
	}
	// A bucket the limit could have left is the fleet's as before.
	srv.Command(t, "DEL", key)
	if err := r.gate.Admit(context.Background(), wxacodeKey); err != nil {
		t.Fatal(err)
	}
	if got := srv.Command(t, "EXISTS", key); got != "1" {
		t.Error("an admitted call left no bucket in Redis")
	}
}

// A failure marker is believed only sealed for its key, from the lease's
// holder, with a status the sidecar answers a failed fetch with and an
// errcode wechat names: a status of 999999 would make the handler panic.
func TestFailureMarkerIsBelievedOnlySealedAndBounded(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rec := &seen{}
	c := newTestClient(t, srv.URL, rec, nil)
	f := NewFlight(c, FlightOptions{})
	k := testKey(40)
	keys := flightKeys{app: "wxapp", image: imageKeyOf(k), lease: "wxa:{wxapp}:lease:" + hexOf(k), failure: "wxa:{wxapp}:fail:" + hexOf(k)}
	holder := newOwner()
	sealed := func(m failure, at string) string {
		b, _ := json.Marshal(m)
		v, err := c.seal("wxapp", b, at)
		if err != nil {
			t.Fatal(err)
		}
		return string(v)
	}
	clear, _ := json.Marshal(failure{Owner: holder, Status: 999999, Code: -1, Msg: "forged"})
	for _, tc := range []struct{ name, marker string }{
		{"in clear, status 999999", string(clear)},
		{"sealed, status 999999", sealed(failure{Owner: holder, Status: 999999, Code: -1}, keys.failure)},
		{"sealed, status 418", sealed(failure{Owner: holder, Status: 418, Code: 45011}, keys.failure)},
		{"sealed, errcode 0", sealed(failure{Owner: holder, Status: 200, Code: 0}, keys.failure)},
		{"sealed, an errcode wechat does not name", sealed(failure{Owner: holder, Status: 200, Code: 12345}, keys.failure)},
		{"sealed, an errmsg of a megabyte", sealed(failure{Owner: holder, Status: 200, Code: 45011, Msg: strings.Repeat("x", 1<<20)}, keys.failure)},
		{"sealed for another key, moved here", sealed(failure{Owner: holder, Status: 200, Code: 45011}, "wxa:{wxapp}:fail:00")},
	} {
		if err := f.decodeFailure(keys, tc.marker, holder); err != nil {
			t.Errorf("%s: believed as %v", tc.name, err)
		}
	}
	if got := rec.unsealedOf(UnsealedFailure); got != 7 {
		t.Errorf("counted %d unbelieved markers, want 7", got)
	}
	// What a holder writes is read back; what it would not share, it
	// does not write.
	good := f.encodeFailure(keys, holder, &wechat.Error{Status: 502, Code: wechat.SystemBusy, Msg: "busy"})
	var we *wechat.Error
	if err := f.decodeFailure(keys, string(good), holder); !errors.As(err, &we) || we.Status != 502 || we.Code != wechat.SystemBusy {
		t.Errorf("a holder's own marker read back as %v, want 502/-1", err)
	}
	if strings.Contains(string(good), "busy") || strings.Contains(string(good), holder) {
		t.Error("the marker is in clear")
	}
	if m := f.encodeFailure(keys, holder, &wechat.Error{Status: 403, Code: wechat.Unauthorized}); m != nil {
		t.Error("a marker with status 403 was written; waiters would not believe it")
	}
}

// A forged marker, end to end: a waiter whose holder "left"
// status 999999 does not answer it; it loads itself once the lease goes.
func TestWaiterIgnoresAForgedFailureMarker(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	b := newLeaseReplica(t, "b", srv.URL, FlightOptions{LeaseExpiry: 5 * time.Second, Poll: 5 * time.Millisecond})
	o := newOrigin()
	close(o.letGo)
	k := testKey(41)
	holder := newOwner()
	ctx := context.Background()
	b.c.Redis().Set(ctx, "wxa:{wxapp}:lease:"+hexOf(k), holder, 300*time.Millisecond)
	forged, _ := json.Marshal(failure{Owner: holder, Status: 999999, Code: -1, Msg: "forged"})
	b.c.Redis().Set(ctx, "wxa:{wxapp}:fail:"+hexOf(k), forged, time.Minute)
	res := receive(t, "b", b.runAsync(ctx, "wxapp", k, o.load(b, "wxapp", k, nil)))
	if res.err != nil || res.from != codes.Own || o.fetches.Load() != 1 {
		t.Fatalf("b: %v, %v, %d fetches; want its own load, not the forged failure", res.from, res.err, o.fetches.Load())
	}
	if b.rec.unsealedOf(UnsealedFailure) == 0 {
		t.Error("the forged marker was not counted")
	}
}

// A lease held by no owner the sidecar draws is Redis unreachable for the
// flight: it loads at once rather than wait out a lease a writer may have
// set with no end.
func TestLeaseOfNoOwnerIsLoadedAlone(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	b := newLeaseReplica(t, "b", srv.URL, FlightOptions{LeaseExpiry: time.Minute, Poll: 5 * time.Millisecond})
	o := newOrigin()
	close(o.letGo)
	k := testKey(42)
	lease := "wxa:{wxapp}:lease:" + hexOf(k)
	srv.Command(t, "SET", lease, "FORGED&touser=attacker")
	res := receive(t, "b", b.runAsync(context.Background(), "wxapp", k, o.load(b, "wxapp", k, nil)))
	if res.err != nil || res.e == nil || o.fetches.Load() != 1 {
		t.Fatalf("b: %v, %d fetches; want its own load", res.err, o.fetches.Load())
	}
	if b.rec.unsealedOf(UnsealedLease) != 1 {
		t.Error("the unreadable lease was not counted")
	}
	if got := srv.Command(t, "GET", lease); got != "FORGED&touser=attacker" {
		t.Errorf("the lease became %q; want it left", got)
	}
}

// A forged token (FORGED&touser=attacker, expiry 9999) is no
// token, in clear or sealed; another app's token moved here is none
// either; an authentic expiry beyond 7200 s is clamped; and the token
// Redis holds is never in clear.
func TestForgedTokenIsNoToken(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rec := &seen{}
	c := newTestClient(t, srv.URL, rec, nil)
	s := NewTokenStore(c)
	ctx := context.Background()
	key := c.Key("wxapp", "token")
	asStored := func(v string, expiry time.Time) []byte {
		b, _ := json.Marshal(storedToken{Value: v, Expiry: expiry})
		return b
	}
	sealedAt := func(b []byte, app, at string) string {
		v, err := c.seal(app, b, at)
		if err != nil {
			t.Fatal(err)
		}
		return string(v)
	}
	for i, tc := range []struct{ name, value string }{
		{"in clear", string(asStored("FORGED&touser=attacker", year9999))},
		{"in clear, a valid-looking token", string(asStored("ValidLooking_Token-0123456789", year9999))},
		{"sealed, with a '&'", sealedAt(asStored("FORGED&touser=attacker", year9999), "wxapp", key)},
		{"sealed, empty", sealedAt(asStored("", year9999), "wxapp", key)},
		{"sealed, 513 characters", sealedAt(asStored(strings.Repeat("A", 513), year9999), "wxapp", key)},
		{"another app's, moved here", sealedAt(asStored("OtherAppsToken", year9999), "wxother", c.Key("wxother", "token"))},
	} {
		rset(t, c, key, tc.value)
		if got, err := s.Load(ctx, "wxapp"); !errors.Is(err, token.ErrNoToken) {
			t.Errorf("%s: Load = %q, %v; want ErrNoToken", tc.name, got.Value, err)
		}
		if got := rec.unsealedOf(UnsealedToken); got != i+1 {
			t.Errorf("%s: counted %d unsealed tokens, want %d", tc.name, got, i+1)
		}
		if got := rget(t, c, key); got != tc.value {
			t.Errorf("%s: the value was changed or deleted; want it left for the next Save", tc.name)
		}
	}
	rset(t, c, key, sealedAt(asStored("Authentic_Token-0123456789", year9999), "wxapp", key))
	got, err := s.Load(ctx, "wxapp")
	if err != nil || got.Value != "Authentic_Token-0123456789" || got.Expiry.After(time.Now().Add(7201*time.Second)) {
		t.Errorf("Load of an authentic token ending in 9999 = %q until %v, %v; want it clamped to 7200 s", got.Value, got.Expiry, err)
	}
	if err := s.Save(ctx, "wxapp", token.Token{Value: "SavedToken_0123456789", Expiry: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if raw := rget(t, c, key); strings.Contains(raw, "SavedToken") {
		t.Error("Redis holds the token in clear")
	}
	if got, err := s.Load(ctx, "wxapp"); err != nil || got.Value != "SavedToken_0123456789" {
		t.Errorf("Load after Save = %q, %v", got.Value, err)
	}
}

// A 45029 memory in clear, moved from another request's key, or replayed
// after its TTL, refuses nothing.
func TestForgedRefusalRefusesNothing(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rec := &seen{}
	c := newTestClient(t, srv.URL, rec, nil)
	r := NewRefusals(c, RefusalsOptions{TTL: time.Hour, Local: codes.LocalRefusals(time.Hour, nil)})
	ctx := context.Background()
	k := testKey(43)
	key := r.key("wxapp", k)
	sealedAt := func(plain, at string) string {
		v, err := c.seal("wxapp", []byte(plain), at)
		if err != nil {
			t.Fatal(err)
		}
		return string(v)
	}
	inAnHour := strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10)
	for i, tc := range []struct{ name, value string }{
		{"in clear", "45029"},
		{"another request's, moved here", sealedAt("45029 "+inAnHour, r.key("wxapp", testKey(44)))},
		{"replayed after its TTL", sealedAt("45029 "+strconv.FormatInt(time.Now().Add(-time.Minute).UnixMilli(), 10), key)},
		{"sealed until 9999", sealedAt("45029 "+strconv.FormatInt(year9999.UnixMilli(), 10), key)},
	} {
		rset(t, c, key, tc.value)
		if r.Refused(ctx, "wxapp", k) {
			t.Errorf("%s: refused", tc.name)
		}
		if got := rec.unsealedOf(UnsealedRefusal); got != i+1 {
			t.Errorf("%s: counted %d, want %d", tc.name, got, i+1)
		}
	}
	// Another replica's real one is believed.
	other := NewRefusals(newTestClient(t, srv.URL, &seen{}, nil), RefusalsOptions{TTL: time.Hour})
	other.Refuse(ctx, "wxapp", k)
	if !r.Refused(ctx, "wxapp", k) {
		t.Error("another replica's 45029 was not believed")
	}
}

// A force_refresh count above the day's limit, or a last force_refresh
// further ahead than the spacing, is no replica's: AllowForce faults (the
// manager decides from its own memory) instead of refusing for the day.
func TestForgedForceRefreshStateIsAFault(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rec := &seen{}
	c := newTestClient(t, srv.URL, rec, nil)
	s := NewTokenStore(c)
	ctx := context.Background()
	now := time.Now()
	countKey := c.Key("wxapp", "force", now.In(wechat.ChinaTime).Format("20060102"))
	lastKey := c.Key("wxapp", "force-last")
	srv.Command(t, "SET", countKey, "999")
	if _, _, err := s.AllowForce(ctx, "wxapp", now); err == nil {
		t.Error("a count of 999 was believed")
	}
	srv.Command(t, "DEL", countKey)
	srv.Command(t, "SET", lastKey, strconv.FormatInt(year9999.UnixMilli(), 10))
	if _, _, err := s.AllowForce(ctx, "wxapp", now); err == nil {
		t.Error("a last force_refresh in 9999 was believed")
	}
	if got := rec.unsealedOf(UnsealedForce); got != 2 {
		t.Errorf("counted %d, want 2", got)
	}
	srv.Command(t, "DEL", lastKey)
	if ok, reason, err := s.AllowForce(ctx, "wxapp", now); !ok || err != nil {
		t.Errorf("AllowForce on a clean slate = %v %q %v", ok, reason, err)
	}
}

// Values sealed under one app's secret do not open under another secret
// for the same app (a rotated secret, another deployment sharing the
// prefix): absent, counted, left.
func TestValuesOfAnotherSecretAreMisses(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	recA, recB := &seen{}, &seen{}
	a := keyedClient(t, srv.URL, recA, map[string]string{"wxapp": "secret-before"})
	b := keyedClient(t, srv.URL, recB, map[string]string{"wxapp": "secret-after"})
	ctx := context.Background()
	e := testEntry("\xff\xd8\xff an image \xff\xd9")
	if err := NewL2(a, L2Options{}).Set(ctx, "wxapp", testKey(45), e); err != nil {
		t.Fatal(err)
	}
	if got, err := NewL2(b, L2Options{}).Get(ctx, "wxapp", testKey(45)); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("another secret's entry read as %v, %v", got, err)
	}
	if got, err := NewL2(a, L2Options{}).Get(ctx, "wxapp", testKey(45)); err != nil || !sameEntry(got, e) {
		t.Errorf("its own secret's entry: %v, %v", got, err)
	}
	if recB.unsealedOf(UnsealedImage) != 1 || recA.unsealedOf(UnsealedImage) != 0 {
		t.Errorf("counted %d (b) and %d (a), want 1 and 0", recB.unsealedOf(UnsealedImage), recA.unsealedOf(UnsealedImage))
	}
	// An app the keyring does not hold is never written.
	if err := NewL2(a, L2Options{}).Set(ctx, "wxunknown", testKey(46), e); err == nil {
		t.Error("an image of an app without a key was written")
	}
}

// rset and rget write and read a value byte for byte (redis-cli takes no
// NUL in an argument).
func rset(t *testing.T, c *Client, key, value string) {
	t.Helper()
	if err := c.Redis().Set(context.Background(), key, value, 0).Err(); err != nil {
		t.Fatal(err)
	}
}

func rget(t *testing.T, c *Client, key string) string {
	t.Helper()
	v, err := c.Redis().Get(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	return v
}
