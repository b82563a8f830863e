package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxa-sidecar/wxa-sidecar/internal/testclock"
	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"github.com/wxa-sidecar/wxa-sidecar/token"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// newClock is the fleet's fake time: the managers', the clients' and the
// fake WeChat's. 08:00 UTC is 16:00 in WeChat's day.
func newClock() *testclock.Clock { return testclock.New(time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)) }

// tokenReplica is one sidecar's token side: its own Redis client and store, its
// own Manager, all on the fleet's clock.
type tokenReplica struct {
	c      *Client
	store  *TokenStore
	m      *token.Manager
	timers *testclock.Waits
	wait   testclock.Wait // Run's pending wait
}

type fleetFixture struct {
	clock *testclock.Clock
	fake  *wechattest.Server
	logs  *wechattest.LogBuffer
	url   string
}

func newFleetFixture(t *testing.T, url string) *fleetFixture {
	t.Helper()
	f := &fleetFixture{clock: newClock(), logs: &wechattest.LogBuffer{}, url: url}
	f.fake = wechattest.NewServer(wechattest.Options{Now: f.clock.Now})
	t.Cleanup(f.fake.Close)
	return f
}

func (f *fleetFixture) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (f *fleetFixture) replica(t *testing.T, mode token.Mode) *tokenReplica {
	t.Helper()
	c, err := New(Options{URL: f.url, Logger: f.logger(), Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &tokenReplica{c: c, store: NewTokenStore(c), timers: testclock.NewWaits()}
	r.m, err = token.New(token.Options{AppID: wechattest.DemoAppID, Secret: wechattest.DemoSecret,
		BaseURL: f.fake.URL, Mode: mode, Now: f.clock.Now, After: r.timers.After,
		Jitter: func(d time.Duration) time.Duration { return d }, Logger: f.logger(), Store: r.store})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (f *fleetFixture) replicas(t *testing.T, n int, mode token.Mode) []*tokenReplica {
	rs := make([]*tokenReplica, n)
	for i := range rs {
		rs[i] = f.replica(t, mode)
	}
	return rs
}

// run starts r's background refresh and returns once it waits.
func (r *tokenReplica) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		r.m.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
	r.wait = r.timers.Next(t)
}

// fireAll ends every replica's pending wait at once and waits until each
// has refreshed (or found nothing due) and waits again.
func fireAll(t *testing.T, f *fleetFixture, rs []*tokenReplica) {
	t.Helper()
	for _, r := range rs {
		r.wait.Fire(f.clock.Now())
	}
	for _, r := range rs {
		r.wait = r.timers.Next(t)
	}
}

// works reports whether the fake WeChat accepts tok on an API call now.
func works(t *testing.T, fake *wechattest.Server, tok string) bool {
	t.Helper()
	resp, err := http.Get(fake.URL + "/cgi-bin/getcallbackip?access_token=" + tok)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ans struct {
		Errcode int `json:"errcode"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
		t.Fatal(err)
	}
	return ans.Errcode == 0
}

// tokensOf asks every replica for a token from several goroutines at once.
func tokensOf(t *testing.T, rs []*tokenReplica, perReplica int, get func(*token.Manager) (token.Token, error)) []string {
	t.Helper()
	got := make([]string, perReplica*len(rs))
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() {
			tok, err := get(rs[i%len(rs)].m)
			if err != nil {
				t.Error(err)
			}
			got[i] = tok.Value
		})
	}
	wg.Wait()
	return got
}

func assertOneToken(t *testing.T, got []string) string {
	t.Helper()
	for _, v := range got {
		if v == "" || v != got[0] {
			t.Fatal("the replicas serve different tokens")
		}
	}
	return got[0]
}

func TestTokenStoreKeepsTheTokenUntilItExpires(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	f := newFleetFixture(t, srv.URL)
	r := f.replica(t, token.ModeClassic)
	ctx := context.Background()
	if r.store.String() != "redis" || r.m.Status().Store != "redis" {
		t.Errorf("the store is named %q, %q; want redis", r.store.String(), r.m.Status().Store)
	}
	if _, err := r.store.Load(ctx, "wxapp"); !errors.Is(err, token.ErrNoToken) {
		t.Fatalf("Load of nothing: %v, want ErrNoToken", err)
	}
	now := f.clock.Now()
	want := token.Token{Value: "tok-one", Expiry: now.Add(7200 * time.Second), FetchedAt: now}
	if err := r.store.Save(ctx, "wxapp", want); err != nil {
		t.Fatal(err)
	}
	got, err := r.store.Load(ctx, "wxapp")
	if err != nil || got.Value != want.Value || !got.Expiry.Equal(want.Expiry) || !got.FetchedAt.Equal(want.FetchedAt) {
		t.Fatalf("Load after Save: %+v, %v; want %+v", got, err, want)
	}
	var ttl time.Duration
	r.c.Do(ctx, OpToken, func(ctx context.Context) error {
		var err error
		ttl, err = r.c.Redis().PTTL(ctx, "wxa:{wxapp}:token").Result()
		return err
	})
	if ttl <= 0 || ttl > 7200*time.Second {
		t.Errorf("the stored token's TTL is %v, want its remaining life (at most 7200s)", ttl)
	}
	// The last Save wins, as in MemoryStore.
	next := token.Token{Value: "tok-two", Expiry: now.Add(time.Hour)}
	if err := r.store.Save(ctx, "wxapp", next); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.store.Load(ctx, "wxapp"); got.Value != "tok-two" {
		t.Errorf("Load after a second Save: %q, want tok-two", got.Value)
	}
	// What does not open is no token: absent, left for the next Save.
	srv.Command(t, "SET", "wxa:{wxapp}:token", "garbage-tok-three")
	if _, err := r.store.Load(ctx, "wxapp"); !errors.Is(err, token.ErrNoToken) || strings.Contains(err.Error(), "tok-three") {
		t.Errorf("Load of garbage: %v; want ErrNoToken", err)
	}
	if got := srv.Command(t, "GET", "wxa:{wxapp}:token"); got != "garbage-tok-three" {
		t.Errorf("the value that did not open is now %q; want it left in place", got)
	}
}

func TestTokenStoreLeaseIsExclusiveAndOnlyItsHolderReleasesIt(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	f := newFleetFixture(t, srv.URL)
	a, b := f.replica(t, token.ModeClassic), f.replica(t, token.ModeClassic)
	ctx := context.Background()
	unlockA, err := a.store.Lock(ctx, "wxapp", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := b.store.Lock(short, "wxapp", time.Minute); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock while another replica holds the lease: %v, want the context's deadline", err)
	}
	if unlockOther, err := b.store.Lock(ctx, "wxother", time.Minute); err != nil {
		t.Fatalf("another app's lease: %v", err)
	} else if err := unlockOther(ctx); err != nil {
		t.Fatal(err)
	}
	if err := unlockA(ctx); err != nil {
		t.Fatal(err)
	}
	// A lease its holder never gives back ends by itself after its ttl.
	unlockStale, err := b.store.Lock(ctx, "wxapp", 50*time.Millisecond)
	if err != nil {
		t.Fatalf("Lock after the holder released: %v", err)
	}
	bounded, cancel2 := context.WithTimeout(ctx, 10*time.Second)
	defer cancel2()
	unlockNext, err := a.store.Lock(bounded, "wxapp", time.Minute)
	if err != nil {
		t.Fatalf("Lock after a lease expired: %v", err)
	}
	// The stale holder's late release must not free its successor's lease.
	if err := unlockStale(ctx); err != nil {
		t.Fatal(err)
	}
	short2, cancel3 := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel3()
	if _, err := b.store.Lock(short2, "wxapp", time.Minute); err == nil {
		t.Fatal("a stale holder's release freed the next holder's lease")
	}
	unlockNext(ctx)
}

func TestTokenStoreCountsForceRefreshesPerChinaDayAcrossTheFleet(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	f := newFleetFixture(t, srv.URL)
	rs := f.replicas(t, 2, token.ModeStable)
	ctx := context.Background()
	// 23:00 in UTC+8: the 20 a day fill before its midnight.
	f.clock.Set(time.Date(2026, 11, 24, 15, 0, 0, 0, time.UTC))
	for i := range 20 {
		now := f.clock.Now()
		if ok, reason, err := rs[i%2].store.AllowForce(ctx, "wxapp", now); !ok || err != nil {
			t.Fatalf("force refresh %d: %v, %q, %v", i+1, ok, reason, err)
		}
		// The other replica, 29 s later: within WeChat's spacing (after
		// the 20th, the day's limit is what refuses it, checked first).
		want := "under 30s ago"
		if i == 19 {
			want = "20 force refreshes"
		}
		if ok, reason, err := rs[1-i%2].store.AllowForce(ctx, "wxapp", now.Add(29*time.Second)); ok || err != nil || !strings.Contains(reason, want) {
			t.Fatalf("force refresh %d: another replica 29s later: %v, %q, %v; want refused", i+1, ok, reason, err)
		}
		f.clock.Advance(wechat.ForceRefreshSpacing)
	}
	// 23:10 in UTC+8.
	for _, r := range rs {
		if ok, reason, err := r.store.AllowForce(ctx, "wxapp", f.clock.Now()); ok || err != nil || !strings.Contains(reason, "20 force refreshes") {
			t.Errorf("force refresh 21 on the same day: %v, %q, %v; want refused", ok, reason, err)
		}
	}
	if ok, _, err := rs[0].store.AllowForce(ctx, "wxother", f.clock.Now()); !ok || err != nil {
		t.Errorf("another app's force refresh: %v, %v; want allowed", ok, err)
	}
	// 23:59:59 is still the same day; midnight in UTC+8 (16:00 UTC) starts
	// the next.
	if ok, _, _ := rs[1].store.AllowForce(ctx, "wxapp", time.Date(2026, 11, 24, 15, 59, 59, 0, time.UTC)); ok {
		t.Error("force refresh 21 at 23:59:59 UTC+8 was allowed")
	}
	if ok, reason, err := rs[1].store.AllowForce(ctx, "wxapp", time.Date(2026, 11, 24, 16, 0, 0, 0, time.UTC)); !ok || err != nil {
		t.Errorf("the first force refresh of the next UTC+8 day: %v, %q, %v; want allowed", ok, reason, err)
	}
	var ttl time.Duration
	rs[0].c.Do(ctx, OpToken, func(ctx context.Context) error {
		var err error
		ttl, err = rs[0].c.Redis().PTTL(ctx, "wxa:{wxapp}:force:20261125").Result()
		return err
	})
	if ttl <= 0 || ttl > 24*time.Hour+forceDaySlack {
		t.Errorf("the day's count lives %v, want until the next UTC+8 midnight", ttl)
	}
}

func TestClassicReplicasShareOneTokenFetch(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	f := newFleetFixture(t, srv.URL)
	rs := f.replicas(t, 3, token.ModeClassic)
	// Slow answers, so every replica asks while the first fetch is on its
	// way: only the lease in Redis keeps them from fetching too.
	f.fake.SetLatency(100 * time.Millisecond)
	shared := assertOneToken(t, tokensOf(t, rs, 5, func(m *token.Manager) (token.Token, error) { return m.Token(context.Background()) }))
	f.fake.SetLatency(0)
	if n := f.fake.Calls("/cgi-bin/token"); n != 1 {
		t.Fatalf("%d classic fetches for 3 replicas sharing Redis, want 1", n)
	}
	var adopted int64
	for _, r := range rs {
		adopted += r.m.Status().Adopted
	}
	if adopted != 2 {
		t.Errorf("%d adoptions, want 2", adopted)
	}
	// No replica ended the shared token: it outlives the fake's grace.
	f.clock.Advance(6 * time.Minute)
	if !works(t, f.fake, shared) {
		t.Fatal("the shared token was killed by another replica's fetch")
	}

	// Compare-and-refresh across the fleet: WeChat calls the token dead,
	// every replica's callers report it, one replica fetches.
	f.fake.RevokeTokens()
	f.fake.SetLatency(100 * time.Millisecond)
	replaced := assertOneToken(t, tokensOf(t, rs, 3, func(m *token.Manager) (token.Token, error) {
		return m.Invalidate(context.Background(), shared)
	}))
	f.fake.SetLatency(0)
	if n := f.fake.Calls("/cgi-bin/token"); n != 2 {
		t.Fatalf("%d classic fetches after every replica invalidated the same token, want 2", n)
	}
	if replaced == shared || !works(t, f.fake, replaced) {
		t.Fatal("the replacement is not a new working token")
	}

	// The background refresh: every replica is due at once, one fetches.
	for _, r := range rs {
		r.run(t)
	}
	fireAll(t, f, rs) // Run's first wait: nothing is due yet
	cur, _ := rs[0].m.Token(context.Background())
	f.clock.Advance(cur.Expiry.Sub(f.clock.Now()) - token.DefaultRefreshMargin + time.Second)
	fireAll(t, f, rs)
	if n := f.fake.Calls("/cgi-bin/token"); n != 3 {
		t.Fatalf("%d classic fetches after 3 replicas refreshed at once, want 3", n)
	}
	refreshed := assertOneToken(t, tokensOf(t, rs, 1, func(m *token.Manager) (token.Token, error) { return m.Token(context.Background()) }))
	if refreshed == replaced {
		t.Fatal("the background refresh did not replace the token")
	}
	f.clock.Advance(6 * time.Minute)
	if !works(t, f.fake, refreshed) {
		t.Fatal("the refreshed token was killed by another replica's fetch")
	}
	if strings.Contains(f.logs.String(), "token store failed") {
		t.Errorf("the store failed with Redis up: %s", f.logs.String())
	}
}

func TestStableReplicasSpendTwentyForceRefreshesADayBetweenThem(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	f := newFleetFixture(t, srv.URL)
	rs := f.replicas(t, 3, token.ModeStable)
	ctx := context.Background()
	assertOneToken(t, tokensOf(t, rs, 1, func(m *token.Manager) (token.Token, error) { return m.Token(ctx) }))
	for i := range 23 {
		a := rs[i%len(rs)]
		held, _ := a.m.Token(ctx)
		// WeChat keeps calling the current stable token dead: the normal
		// fetch hands it back, and only a force_refresh replaces it.
		next, err := a.m.Invalidate(ctx, held.Value)
		if i >= 20 {
			if err == nil || !strings.Contains(err.Error(), "20 force refreshes") {
				t.Fatalf("force refresh %d of the day: %v; want refused by the fleet's count", i+1, err)
			}
			f.clock.Advance(wechat.ForceRefreshSpacing + time.Second)
			continue
		}
		if err != nil || next.Value == held.Value {
			t.Fatalf("force refresh %d: %v", i+1, err)
		}
		for _, b := range rs {
			if b == a {
				continue
			}
			// b's callers still hold the replaced token: b adopts a's.
			if got, err := b.m.Invalidate(ctx, held.Value); err != nil || got.Value != next.Value {
				t.Fatalf("force refresh %d: another replica got %q, %v; want the forced token", i+1, token.Prefix(got.Value), err)
			}
			// And calls the new one dead too, within 30 s of a's force
			// (after the 20th, the day's limit refuses it first).
			want := "under 30s ago"
			if i == 19 {
				want = "20 force refreshes"
			}
			if _, err := b.m.Invalidate(ctx, next.Value); err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("force refresh %d: another replica forced within 30s: %v", i+1, err)
			}
		}
		f.clock.Advance(wechat.ForceRefreshSpacing + time.Second)
	}
	forced := 0
	for _, req := range f.fake.Requests("/cgi-bin/stable_token") {
		if strings.Contains(string(req.Body), `"force_refresh":true`) {
			forced++
		}
	}
	if forced != 20 {
		t.Errorf("WeChat saw %d force refreshes from the fleet, want 20", forced)
	}
	var fetchErrors int64
	for _, r := range rs {
		fetchErrors += r.m.Status().FetchErrors
	}
	if fetchErrors != 0 {
		t.Errorf("%d token fetches failed: the fleet went past WeChat's limit (45009/45011)", fetchErrors)
	}
}

func TestClassicReplicasKeepTheirTokenWhileRedisIsDown(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	f := newFleetFixture(t, srv.URL)
	rs := f.replicas(t, 3, token.ModeClassic)
	for _, r := range rs {
		r.run(t)
	}
	f.fake.SetLatency(50 * time.Millisecond)
	fireAll(t, f, rs) // the first refresh of all three at once
	f.fake.SetLatency(0)
	shared := assertOneToken(t, tokensOf(t, rs, 1, func(m *token.Manager) (token.Token, error) { return m.Token(context.Background()) }))
	if n := f.fake.Calls("/cgi-bin/token"); n != 1 {
		t.Fatalf("%d classic fetches at start, want 1", n)
	}
	expiry, _ := rs[0].m.Token(context.Background())

	srv.Stop()
	// Due for a refresh, and again after every back-off, until the shared
	// token has expired: no replica fetches, each serves the shared token.
	f.clock.Advance(expiry.Expiry.Sub(f.clock.Now()) - token.DefaultRefreshMargin + time.Second)
	for round := 0; f.clock.Now().Before(expiry.Expiry); round++ {
		if round > 100 {
			t.Fatal("the replicas never stopped backing off before the shared token's expiry")
		}
		fireAll(t, f, rs)
		if n := f.fake.Calls("/cgi-bin/token"); n != 1 {
			t.Fatalf("%d classic fetches with Redis down and the shared token valid (round %d), want 1", n, round)
		}
		for _, r := range rs {
			if tok, err := r.m.Token(context.Background()); err != nil || tok.Value != shared {
				t.Fatalf("Token() with Redis down: %q, %v; want the shared token", token.Prefix(tok.Value), err)
			}
		}
		if !works(t, f.fake, shared) {
			t.Fatal("the shared token stopped working during the outage")
		}
		f.clock.Advance(rs[0].wait.D)
	}
	// Expired: each replica fetches its own, as a lone sidecar would.
	fireAll(t, f, rs)
	if n := f.fake.Calls("/cgi-bin/token"); n != 4 {
		t.Fatalf("%d classic fetches after the shared token expired with Redis down, want 1 + 3", n)
	}
	for _, r := range rs {
		if tok, err := r.m.Token(context.Background()); err != nil || tok.Value == shared {
			t.Fatalf("after the expiry: %q, %v; want a token of the replica's own", token.Prefix(tok.Value), err)
		}
		if s := r.m.Status(); s.StoreErrors == 0 {
			t.Error("a replica did not record the store's failures")
		}
	}
}

func TestTokenStorePasswordWorksAndIsNeverShown(t *testing.T) {
	const password = "pw-5ecret-42xyz"
	srv := redistest.Start(t, redistest.Options{Password: password})
	f := newFleetFixture(t, srv.URL)
	// go-redis has one process-wide logger: this test's, for its length.
	redis.SetLogger(slogLogger{f.logger()})
	t.Cleanup(func() { redis.SetLogger(slogLogger{slog.New(slog.DiscardHandler)}) })
	rs := f.replicas(t, 3, token.ModeClassic)
	shared := assertOneToken(t, tokensOf(t, rs, 2, func(m *token.Manager) (token.Token, error) { return m.Token(context.Background()) }))
	if n := f.fake.Calls("/cgi-bin/token"); n != 1 {
		t.Fatalf("%d classic fetches through a password-protected Redis, want 1", n)
	}
	if got, err := rs[0].store.Load(context.Background(), wechattest.DemoAppID); err != nil || got.Value != shared {
		t.Fatalf("the token in Redis: %v", err)
	}

	// A wrong password: every call fails, and is logged without it.
	wrong := newFleetFixture(t, strings.Replace(srv.URL, password, "pw-wr0ng-77abc", 1))
	wrong.logs = f.logs
	w := wrong.replica(t, token.ModeClassic)
	if tok, err := w.m.Token(context.Background()); err != nil || !works(t, wrong.fake, tok.Value) {
		t.Fatalf("Token() with Redis refusing the password: %v", err)
	}
	if s := w.m.Status(); s.StoreErrors == 0 {
		t.Error("the wrong password was not a store fault")
	}

	shown := f.logs.String()
	for _, r := range append(rs, w) {
		for _, status := range []any{r.c.Status(), r.m.Status()} {
			b, _ := json.Marshal(status)
			shown += string(b)
		}
	}
	if !strings.Contains(shown, "token store failed") {
		t.Errorf("nothing logged the wrong password's failure: %s", shown)
	}
	for _, secret := range []string{password, "pw-wr0ng-77abc", shared} {
		if strings.Contains(shown, secret) {
			t.Errorf("a log line or a Status shows %q", secret)
		}
	}
}
