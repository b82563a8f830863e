package token

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// another returns a second manager of f's app against f's fake and clock,
// as another replica of the sidecar would be.
func (f *fixture) another(t *testing.T, mutate func(*Options)) *Manager {
	t.Helper()
	opts := f.m.opts
	opts.Client, opts.OnFetch = nil, nil
	opts.Logger = slog.New(slog.DiscardHandler)
	if mutate != nil {
		mutate(&opts)
	}
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// works reports whether WeChat (the fake) accepts tok on an API call now.
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

// countingStore counts the calls that reach the store it wraps.
type countingStore struct {
	Store
	calls atomic.Int64
}

func (s *countingStore) Load(ctx context.Context, appID string) (Token, error) {
	s.calls.Add(1)
	return s.Store.Load(ctx, appID)
}

func (s *countingStore) Save(ctx context.Context, appID string, t Token) error {
	s.calls.Add(1)
	return s.Store.Save(ctx, appID, t)
}

func (s *countingStore) AllowForce(ctx context.Context, appID string, now time.Time) (bool, string, error) {
	s.calls.Add(1)
	return s.Store.AllowForce(ctx, appID, now)
}

func (s *countingStore) Lock(ctx context.Context, appID string, ttl time.Duration) (func(context.Context) error, error) {
	s.calls.Add(1)
	return s.Store.Lock(ctx, appID, ttl)
}

// downStore is a shared store that is unreachable: every call fails.
type downStore struct{ calls atomic.Int64 }

var errStoreDown = errors.New("store: dial tcp 127.0.0.1:6379: connect: connection refused")

func (s *downStore) Load(context.Context, string) (Token, error) {
	s.calls.Add(1)
	return Token{}, errStoreDown
}

func (s *downStore) Save(context.Context, string, Token) error {
	s.calls.Add(1)
	return errStoreDown
}

func (s *downStore) AllowForce(context.Context, string, time.Time) (bool, string, error) {
	s.calls.Add(1)
	return false, "", errStoreDown
}

func (s *downStore) Lock(context.Context, string, time.Duration) (func(context.Context) error, error) {
	s.calls.Add(1)
	return nil, errStoreDown
}

// saveFailingStore is a MemoryStore whose Save fails while failSave is set,
// so what it holds falls behind.
type saveFailingStore struct {
	*MemoryStore
	failSave atomic.Bool
}

func (s *saveFailingStore) Save(ctx context.Context, appID string, t Token) error {
	if s.failSave.Load() {
		return errStoreDown
	}
	return s.MemoryStore.Save(ctx, appID, t)
}

func TestManagersSharingAStoreFetchOneClassicToken(t *testing.T) {
	store := NewMemoryStore()
	f := newFixture(t, ModeClassic, func(o *Options) { o.Store = store })
	// Slow answers, so every manager asks while the first fetch is on its
	// way: only the store's lease keeps them from fetching too.
	f.fake.SetLatency(100 * time.Millisecond)
	managers := []*Manager{f.m}
	for range 4 {
		managers = append(managers, f.another(t, nil))
	}
	got := make([]string, 3*len(managers))
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() {
			tok, err := managers[i%len(managers)].Token(context.Background())
			if err != nil {
				t.Error(err)
			}
			got[i] = tok.Value
		})
	}
	wg.Wait()
	f.fake.SetLatency(0)
	if n := f.fake.Calls("/cgi-bin/token"); n != 1 {
		t.Fatalf("%d classic fetches for %d managers sharing a store, want 1", n, len(managers))
	}
	for _, v := range got {
		if v == "" || v != got[0] {
			t.Fatal("managers sharing a store serve different tokens")
		}
	}
	var adopted int64
	for _, m := range managers {
		adopted += m.Status().Adopted
		if !m.Owns(got[0]) {
			t.Error("a manager does not own the token it adopted and hands out")
		}
	}
	if adopted != int64(len(managers)-1) {
		t.Errorf("%d adoptions, want %d", adopted, len(managers)-1)
	}

	// The background refresh: the first manager due fetches, the other
	// adopts its token instead of killing it five minutes later.
	m2 := managers[1]
	old, _ := f.m.Token(context.Background())
	f.clock.Advance(old.Expiry.Sub(f.clock.Now()) - DefaultRefreshMargin + time.Second)
	f.m.refresh(context.Background())
	m2.refresh(context.Background())
	if n := f.fake.Calls("/cgi-bin/token"); n != 2 {
		t.Fatalf("%d classic fetches after both refreshed, want 2", n)
	}
	t1, _ := f.m.Token(context.Background())
	t2, _ := m2.Token(context.Background())
	if t1.Value == old.Value || t2.Value != t1.Value {
		t.Fatal("after the refresh the managers do not share the new token")
	}
	if s := m2.Status(); !s.NextRefresh.Equal(t2.Expiry.Add(-DefaultRefreshMargin)) {
		t.Errorf("the adopting manager's next refresh is %v, want the margin before its expiry %v", s.NextRefresh, t2.Expiry)
	}
	f.clock.Advance(6 * time.Minute) // past the old token's grace
	if !works(t, f.fake, t1.Value) {
		t.Error("the shared token was killed by another manager's fetch")
	}
}

func TestInvalidateAdoptsTheReplacementAnotherManagerFetched(t *testing.T) {
	store := NewMemoryStore()
	f := newFixture(t, ModeClassic, func(o *Options) { o.Store = store })
	m2 := f.another(t, nil)
	first, err := f.m.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tok, err := m2.Token(context.Background()); err != nil || tok.Value != first.Value {
		t.Fatalf("the second manager got %q, %v; want the first's token", Prefix(tok.Value), err)
	}
	f.clock.Advance(time.Minute)
	f.fake.RevokeTokens()
	replaced, err := f.m.Invalidate(context.Background(), first.Value)
	if err != nil {
		t.Fatal(err)
	}
	// The second manager's callers hit the same dead token a moment later.
	again, err := m2.Invalidate(context.Background(), first.Value)
	if err != nil {
		t.Fatal(err)
	}
	if again.Value != replaced.Value {
		t.Errorf("the second manager replaced the dead token with %q, want the first's replacement %q", Prefix(again.Value), Prefix(replaced.Value))
	}
	if n := f.fake.Calls("/cgi-bin/token"); n != 2 {
		t.Errorf("%d classic fetches, want 2: the second Invalidate must adopt, not fetch", n)
	}
	if !m2.Owns(replaced.Value) {
		t.Error("the second manager does not own the token it adopted")
	}
	if !works(t, f.fake, replaced.Value) {
		t.Error("the replacement does not work")
	}
}

func TestAStoreBehindTheManagerIsNotAdopted(t *testing.T) {
	store := &saveFailingStore{MemoryStore: NewMemoryStore()}
	f := newFixture(t, ModeClassic, func(o *Options) { o.Store = store })
	first, _ := f.m.Token(context.Background())
	store.failSave.Store(true) // the store keeps first from now on
	f.clock.Advance(time.Minute)
	second, err := f.m.Invalidate(context.Background(), first.Value)
	if err != nil || second.Value == first.Value {
		t.Fatalf("Invalidate: %q, %v; want a new token", Prefix(second.Value), err)
	}
	f.clock.Advance(time.Minute)
	f.fake.RevokeTokens()
	third, err := f.m.Invalidate(context.Background(), second.Value)
	if err != nil {
		t.Fatal(err)
	}
	if third.Value == first.Value {
		t.Fatal("the manager went back to the older token the store still held, which its own fetch had killed")
	}
	if !works(t, f.fake, third.Value) {
		t.Error("the token after Invalidate does not work")
	}
}

func TestAnOlderTokenOfAnotherManagerIsNotAdopted(t *testing.T) {
	store := &switchableStore{Store: NewMemoryStore()}
	f := newFixture(t, ModeClassic, func(o *Options) { o.Store = store })
	other := f.another(t, nil)
	theirs, _ := other.Token(context.Background())
	f.clock.Advance(time.Minute)
	store.down.Store(true) // f.m fetches its own, and cannot save it
	ours, _ := f.m.Token(context.Background())
	store.down.Store(false)
	if ours.Value == theirs.Value {
		t.Fatal("the manager adopted a token through a store that was down")
	}
	f.clock.Advance(time.Minute)
	f.fake.RevokeTokens()
	next, err := f.m.Invalidate(context.Background(), ours.Value)
	if err != nil {
		t.Fatal(err)
	}
	if next.Value == theirs.Value {
		t.Fatal("the manager replaced its token with an older one its own fetch had killed")
	}
	if !works(t, f.fake, next.Value) {
		t.Error("the token after Invalidate does not work")
	}
}

func TestForceRefreshLimitIsCountedAcrossManagersSharingAStore(t *testing.T) {
	fs := &forceServer{}
	srv := httptest.NewServer(fs)
	defer srv.Close()
	store := NewMemoryStore()
	f := newFixture(t, ModeStable, func(o *Options) { o.BaseURL, o.Store = srv.URL, store })
	managers := [2]*Manager{f.m, f.another(t, nil)}
	for _, m := range managers {
		if _, err := m.Token(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for i := range wechat.ForceRefreshesPerDay {
		a, b := managers[i%2], managers[1-i%2]
		tok, _ := a.Token(context.Background())
		next, err := a.Invalidate(context.Background(), tok.Value)
		if err != nil || next.Value == tok.Value {
			t.Fatalf("force refresh %d: %v", i+1, err)
		}
		// b's callers still hold the token a replaced: b adopts a's.
		held, _ := b.Token(context.Background())
		if adopted, err := b.Invalidate(context.Background(), held.Value); err != nil || adopted.Value != next.Value {
			t.Fatalf("force refresh %d: the other manager got %q, %v; want the forced token", i+1, Prefix(adopted.Value), err)
		}
		// WeChat calls the new token dead too, within 30 s of a's force
		// refresh: the other manager must not force another.
		want := "under 30s ago"
		if i == wechat.ForceRefreshesPerDay-1 {
			want = "20 force refreshes" // checked first
		}
		if _, err := b.Invalidate(context.Background(), next.Value); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("force refresh %d: a second manager forced within 30s of the first: %v", i+1, err)
		}
		f.clock.Advance(wechat.ForceRefreshSpacing + time.Second)
	}
	for _, m := range managers {
		tok, _ := m.Token(context.Background())
		if _, err := m.Invalidate(context.Background(), tok.Value); err == nil || !strings.Contains(err.Error(), "20 force refreshes") {
			t.Errorf("force refresh 21 within a day: %v, want refused", err)
		}
	}
	if fs.forced != wechat.ForceRefreshesPerDay {
		t.Errorf("WeChat saw %d force refreshes from two managers, want %d", fs.forced, wechat.ForceRefreshesPerDay)
	}
	if n := managers[0].Status().ForceRefreshesToday + managers[1].Status().ForceRefreshesToday; n != wechat.ForceRefreshesPerDay {
		t.Errorf("the managers' Status counts %d force refreshes, want %d", n, wechat.ForceRefreshesPerDay)
	}
}

func TestAStoreThatIsDownLeavesTheManagerAsWithoutOne(t *testing.T) {
	t.Run("tokens", func(t *testing.T) {
		for _, mode := range []Mode{ModeStable, ModeClassic} {
			t.Run(string(mode), func(t *testing.T) {
				store := &downStore{}
				f := newFixture(t, mode, func(o *Options) { o.Store = store })
				path := map[Mode]string{ModeStable: "/cgi-bin/stable_token", ModeClassic: "/cgi-bin/token"}[mode]
				tok, err := f.m.Token(context.Background())
				if err != nil || !works(t, f.fake, tok.Value) {
					t.Fatalf("Token() with the store down: %v", err)
				}
				if again, _ := f.m.Token(context.Background()); again.Value != tok.Value || f.fake.Calls(path) != 1 {
					t.Error("a valid token was not served from memory")
				}
				f.fake.RevokeTokens()
				next, err := f.m.Invalidate(context.Background(), tok.Value)
				if err != nil || next.Value == tok.Value || !works(t, f.fake, next.Value) {
					t.Fatalf("Invalidate with the store down: %q, %v", Prefix(next.Value), err)
				}
				if !f.m.Owns(tok.Value) || !f.m.Owns(next.Value) {
					t.Error("Owns lost a token with the store down")
				}
				s := f.m.Status()
				if s.Fetches != 2 || s.StoreErrors != 2 || s.Adopted != 0 {
					t.Errorf("Status fetches %d, store errors %d, adopted %d; want 2, 2 (one per fill: the rest skip the store), 0",
						s.Fetches, s.StoreErrors, s.Adopted)
				}
				if n := store.calls.Load(); n != 2 {
					t.Errorf("%d calls to a store that is down for two fills, want 2", n)
				}
				logs := f.logs.String()
				if !strings.Contains(logs, "token store failed") || !strings.Contains(logs, `"level":"WARN"`) {
					t.Errorf("the store's failure was not logged as a warning: %s", logs)
				}
				if strings.Contains(logs, tok.Value) || strings.Contains(logs, next.Value) {
					t.Error("the logs carry a whole token")
				}
			})
		}
	})
	stores := map[string]func() Store{
		"down":                    func() Store { return &downStore{} },
		"only AllowForce failing": func() Store { return &forceFailingStore{Store: NewMemoryStore()} },
	}
	for name, newStore := range stores {
		t.Run("force refresh limit/"+name, func(t *testing.T) {
			testForceLimitKeptLocally(t, newStore())
		})
	}
	t.Run("force refresh limit after the store fails", func(t *testing.T) {
		// What this manager spent through the store still counts once the
		// store is gone: the fallback does not start from zero.
		fs := &forceServer{}
		srv := httptest.NewServer(fs)
		defer srv.Close()
		flaky := &switchableStore{Store: NewMemoryStore()}
		f := newFixture(t, ModeStable, func(o *Options) { o.BaseURL, o.Store = srv.URL, flaky })
		tok, _ := f.m.Token(context.Background())
		next, err := f.m.Invalidate(context.Background(), tok.Value)
		if err != nil || next.Value == tok.Value {
			t.Fatalf("force refresh through the store: %v", err)
		}
		flaky.down.Store(true)
		if _, err := f.m.Invalidate(context.Background(), next.Value); err == nil || !strings.Contains(err.Error(), "under 30s ago") {
			t.Errorf("a force refresh within 30s of one made through the store, now down: %v, want refused", err)
		}
		if fs.forced != 1 {
			t.Errorf("WeChat saw %d force refreshes, want 1", fs.forced)
		}
	})
}

// testForceLimitKeptLocally checks WeChat's force_refresh limit is kept by
// a manager whose store fails to count.
func testForceLimitKeptLocally(t *testing.T, store Store) {
	fs := &forceServer{}
	srv := httptest.NewServer(fs)
	defer srv.Close()
	f := newFixture(t, ModeStable, func(o *Options) { o.BaseURL, o.Store = srv.URL, store })
	tok, _ := f.m.Token(context.Background())
	for i := range wechat.ForceRefreshesPerDay {
		next, err := f.m.Invalidate(context.Background(), tok.Value)
		if err != nil || next.Value == tok.Value {
			t.Fatalf("force refresh %d with the store down: %v", i+1, err)
		}
		if _, err := f.m.Invalidate(context.Background(), next.Value); err == nil {
			t.Fatal("with the store down, a second force refresh within 30s was allowed")
		}
		tok = next
		f.clock.Advance(wechat.ForceRefreshSpacing + time.Second)
	}
	if _, err := f.m.Invalidate(context.Background(), tok.Value); err == nil || !strings.Contains(err.Error(), "20 force refreshes") {
		t.Errorf("force refresh 21 with the store down: %v, want refused", err)
	}
	if fs.forced != wechat.ForceRefreshesPerDay {
		t.Errorf("WeChat saw %d force refreshes, want %d", fs.forced, wechat.ForceRefreshesPerDay)
	}
}

// forceFailingStore is a store that keeps tokens but fails to count force
// refreshes.
type forceFailingStore struct{ Store }

func (forceFailingStore) AllowForce(context.Context, string, time.Time) (bool, string, error) {
	return false, "", errStoreDown
}

// switchableStore wraps a Store and fails every call while down is set.
type switchableStore struct {
	Store
	down atomic.Bool
}

func (s *switchableStore) Load(ctx context.Context, appID string) (Token, error) {
	if s.down.Load() {
		return Token{}, errStoreDown
	}
	return s.Store.Load(ctx, appID)
}

func (s *switchableStore) Save(ctx context.Context, appID string, t Token) error {
	if s.down.Load() {
		return errStoreDown
	}
	return s.Store.Save(ctx, appID, t)
}

func (s *switchableStore) AllowForce(ctx context.Context, appID string, now time.Time) (bool, string, error) {
	if s.down.Load() {
		return false, "", errStoreDown
	}
	return s.Store.AllowForce(ctx, appID, now)
}

func (s *switchableStore) Lock(ctx context.Context, appID string, ttl time.Duration) (func(context.Context) error, error) {
	if s.down.Load() {
		return nil, errStoreDown
	}
	return s.Store.Lock(ctx, appID, ttl)
}

func TestTheHotPathNeverCallsTheStore(t *testing.T) {
	for _, mode := range []Mode{ModeStable, ModeClassic} {
		t.Run(string(mode), func(t *testing.T) {
			store := &countingStore{Store: NewMemoryStore()}
			f := newFixture(t, mode, func(o *Options) { o.Store = store })
			tok, err := f.m.Token(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if store.calls.Load() == 0 {
				t.Fatal("the first fetch did not go through the store")
			}
			before := store.calls.Load()
			for range 100 {
				if got, err := f.m.Token(context.Background()); err != nil || got.Value != tok.Value {
					t.Fatalf("Token() = %q, %v", Prefix(got.Value), err)
				}
				// A stale Invalidate is answered from memory too.
				if got, _ := f.m.Invalidate(context.Background(), "an-older-token"); got.Value != tok.Value {
					t.Fatal("a stale Invalidate replaced the current token")
				}
			}
			if n := store.calls.Load() - before; n != 0 {
				t.Errorf("%d store calls for 200 calls with a valid token, want 0", n)
			}
		})
	}
}

func TestStatusNamesTheStore(t *testing.T) {
	f := newFixture(t, ModeStable, nil)
	if s := f.m.Status(); s.Store != "memory" {
		t.Errorf("Status.Store %q for the default, want memory", s.Store)
	}
	m := f.another(t, func(o *Options) { o.Store = &downStore{} })
	if s := m.Status(); s.Store != "*token.downStore" {
		t.Errorf("Status.Store %q, want the store's type", s.Store)
	}
}

func TestClassicManagersKeepTheFleetsTokenWhileTheStoreIsDown(t *testing.T) {
	store := &switchableStore{Store: NewMemoryStore()}
	f := newFixture(t, ModeClassic, func(o *Options) { o.Store = store })
	fetcher, adopter := f.m, f.another(t, nil)
	shared, err := fetcher.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tok, err := adopter.Token(context.Background()); err != nil || tok.Value != shared.Value {
		t.Fatalf("the second manager got %q, %v; want the shared token", Prefix(tok.Value), err)
	}
	fetcher.refresh(context.Background()) // schedules the next refresh
	adopter.refresh(context.Background())

	store.down.Store(true)
	// Inside the refresh margin: without the store, a fetch by either
	// manager would end the token the other serves.
	f.clock.Advance(shared.Expiry.Sub(f.clock.Now()) - DefaultRefreshMargin + time.Second)
	for range 3 {
		for _, m := range []*Manager{fetcher, adopter} {
			m.refresh(context.Background())
			if tok, err := m.Token(context.Background()); err != nil || tok.Value != shared.Value {
				t.Fatalf("Token() during the outage: %q, %v; want the shared token", Prefix(tok.Value), err)
			}
			if next := m.Status().NextRefresh; !next.After(f.clock.Now()) || !next.Before(shared.Expiry) {
				t.Errorf("next refresh %v; want a retry before the shared token's expiry %v", next, shared.Expiry)
			}
		}
		f.clock.Advance(30 * time.Second)
	}
	if n := f.fake.Calls("/cgi-bin/token"); n != 1 {
		t.Fatalf("%d classic fetches while the store was down and the shared token valid, want 1", n)
	}
	if !works(t, f.fake, shared.Value) {
		t.Fatal("the shared token stopped working during the outage")
	}
	if !strings.Contains(f.logs.String(), "keeping the fleet's token until it expires") {
		t.Error("the hold was not logged")
	}

	// A manager without a valid token still fetches at once.
	newcomer := f.another(t, nil)
	if tok, err := newcomer.Token(context.Background()); err != nil || !works(t, f.fake, tok.Value) {
		t.Fatalf("a manager without a token during the outage: %q, %v", Prefix(tok.Value), err)
	}
	if n := f.fake.Calls("/cgi-bin/token"); n != 2 {
		t.Fatalf("%d classic fetches, want 2: the newcomer fetches its own", n)
	}

	// Once the shared token has expired, the refresh fetches.
	f.clock.Advance(shared.Expiry.Sub(f.clock.Now()))
	adopter.refresh(context.Background())
	if n := f.fake.Calls("/cgi-bin/token"); n != 3 {
		t.Fatalf("%d classic fetches after the shared token expired, want 3", n)
	}
	if tok, err := adopter.Token(context.Background()); err != nil || tok.Value == shared.Value || !works(t, f.fake, tok.Value) {
		t.Fatalf("after the expiry: %q, %v; want a new working token", Prefix(tok.Value), err)
	}
}

func TestTheOutageHoldDoesNotStopInvalidateOrStableMode(t *testing.T) {
	t.Run("invalidate", func(t *testing.T) {
		store := &switchableStore{Store: NewMemoryStore()}
		f := newFixture(t, ModeClassic, func(o *Options) { o.Store = store })
		shared, _ := f.m.Token(context.Background())
		store.down.Store(true)
		f.fake.RevokeTokens()
		next, err := f.m.Invalidate(context.Background(), shared.Value)
		if err != nil || next.Value == shared.Value || !works(t, f.fake, next.Value) {
			t.Fatalf("Invalidate of a dead shared token during the outage: %q, %v", Prefix(next.Value), err)
		}
	})
	t.Run("stable", func(t *testing.T) {
		store := &switchableStore{Store: NewMemoryStore()}
		f := newFixture(t, ModeStable, func(o *Options) { o.Store = store })
		other := f.another(t, nil)
		shared, _ := f.m.Token(context.Background())
		if tok, _ := other.Token(context.Background()); tok.Value != shared.Value {
			t.Fatal("stable managers do not share the token")
		}
		store.down.Store(true)
		f.clock.Advance(shared.Expiry.Sub(f.clock.Now()) - DefaultRefreshMargin + time.Second)
		other.refresh(context.Background())
		if n := f.fake.Calls("/cgi-bin/stable_token"); n != 2 {
			t.Errorf("%d stable fetches, want 2: stable tokens are not at war, the refresh goes ahead", n)
		}
	})
}
