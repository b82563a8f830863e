package codes_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/internal/testclock"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// linkFetcher makes a new link per call, as WeChat does, or answers err.
type linkFetcher struct {
	calls atomic.Int64
	err   error
	gate  chan struct{} // when set, each call waits for it
}

func (f *linkFetcher) FetchLink(ctx context.Context) (*codes.LinkAnswer, error) {
	n := f.calls.Add(1)
	if f.gate != nil {
		<-f.gate
	}
	if f.err != nil {
		return nil, f.err
	}
	return &codes.LinkAnswer{Body: fmt.Appendf(nil, `{"errcode":0,"errmsg":"ok","openlink":"weixin://dl/business/?t=%d"}`, n),
		ContentType: "application/json; encoding=utf-8"}, nil
}

type linkFixture struct {
	clock   *testclock.Clock
	l1      *cache.Memory
	l2      *sharedTier
	links   *codes.Links
	lookups *counts
}

func newLinkFixture(t *testing.T) *linkFixture {
	t.Helper()
	clock := testclock.New(time.Now())
	l1, err := cache.NewMemory(cache.Options{MaxBytes: 64 << 20, TTL: time.Hour, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l1.Close)
	f := &linkFixture{clock: clock, l1: l1, l2: newSharedTier(), lookups: &counts{n: map[string]int{}}}
	f.links = codes.NewLinks(codes.LinkOptions{L1: l1, L2: f.l2, Now: clock.Now, RetryBackoff: time.Millisecond,
		Hooks: codes.LinkHooks{Lookup: func(endpoint, result string) { f.lookups.inc(endpoint + " " + result) }}})
	return f
}

// keepFor is a LinkRequest.Keep handing a link out for d after it is made.
func keepFor(d time.Duration) func(time.Time) (time.Time, bool) {
	return func(made time.Time) (time.Time, bool) { return made.Add(d), d > 0 }
}

var scheme = codes.LinkRequest{App: "wxapp", Endpoint: wechat.PathScheme, Keep: keepFor(time.Hour)}

func body(t *testing.T, res codes.Result) string {
	t.Helper()
	if res.Entry == nil {
		t.Fatal("no entry")
	}
	return string(res.Entry.Body)
}

func TestLinkIsMadeOnceAndHandedOutUntilItsUntil(t *testing.T) {
	f := newLinkFixture(t)
	fetch := &linkFetcher{}
	first, err := f.links.Get(t.Context(), key(1), scheme, fetch)
	if err != nil || first.Status != codes.Stored {
		t.Fatalf("first Get: %v, %v; want stored", first.Status, err)
	}
	for range 10 {
		res, err := f.links.Get(t.Context(), key(1), scheme, fetch)
		if err != nil || res.Status != codes.Hit || body(t, res) != body(t, first) {
			t.Fatalf("Get: %v %v %v; want a hit on the same link", res.Status, err, res.Entry)
		}
	}
	if l2, ok := f.l2.m[key(1)]; !ok || !l2.Until.Equal(first.Entry.Until) || first.Entry.Until.IsZero() {
		t.Errorf("L2 holds %v, want the link until %v", l2, first.Entry.Until)
	}
	f.clock.Advance(time.Hour)
	res, err := f.links.Get(t.Context(), key(1), scheme, fetch)
	if err != nil || res.Status != codes.Stored || body(t, res) == body(t, first) {
		t.Errorf("at its Until: %v %v %s; want a new link", res.Status, err, res.Entry.Body)
	}
	if n := fetch.calls.Load(); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}
	if got := f.lookups.get(wechat.PathScheme + " hit"); got != 10 {
		t.Errorf("%d hits counted, want 10", got)
	}
	// Links never count in the code images' figures.
	if s := f.l1.Stats(); s.Hits != 0 || s.Misses != 0 {
		t.Errorf("cache Stats %+v: link lookups counted as code lookups", s)
	}
	stats := f.links.Stats()
	for _, s := range stats {
		if s.Endpoint == wechat.PathScheme && (s.Hits != 10 || s.Misses != 2 || s.Stored != 2) {
			t.Errorf("Stats %+v, want 10 hits, 2 misses, 2 stored", s)
		}
	}
	if len(stats) != 4 {
		t.Errorf("Stats lists %d endpoints, want the 4 link endpoints", len(stats))
	}
}

func TestLinkExpiringWithinTheMarginIsNeverKept(t *testing.T) {
	f := newLinkFixture(t)
	fetch := &linkFetcher{}
	r := scheme
	r.Keep = keepFor(0)
	for range 2 {
		if res, err := f.links.Get(t.Context(), key(1), r, fetch); err != nil || res.Status != codes.Miss || res.Entry == nil {
			t.Fatalf("Get: %v %v; want a link, not kept", res.Status, err)
		}
	}
	if n := fetch.calls.Load(); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}
	if l1, l2 := (&fixture{l1: f.l1, l2: f.l2}).stored(key(1)); l1 || l2 {
		t.Errorf("kept in L1 %v, L2 %v", l1, l2)
	}
}

func TestLinkErrorsAreSharedByTheFlightButNeverKept(t *testing.T) {
	f := newLinkFixture(t)
	unknownPage := &wechat.Error{Status: 200, Code: wechat.InvalidLinkPath, Msg: "invalid path"}
	fetch := &linkFetcher{err: unknownPage, gate: make(chan struct{})}
	const callers = 5
	errs := make(chan error, callers)
	for range callers {
		go func() {
			_, err := f.links.Get(context.Background(), key(1), scheme, fetch)
			errs <- err
		}()
	}
	waitFor(t, "the flight's fetch", func() bool { return fetch.calls.Load() == 1 })
	time.Sleep(20 * time.Millisecond) // the others join
	close(fetch.gate)
	for range callers {
		if err := <-errs; !errors.Is(err, unknownPage) {
			t.Errorf("caller got %v, want the flight's 40165", err)
		}
	}
	if _, err := f.links.Get(t.Context(), key(1), scheme, fetch); !errors.Is(err, unknownPage) {
		t.Errorf("after the flight: %v", err)
	}
	if n := fetch.calls.Load(); n != 2 {
		t.Errorf("%d fetches, want one for the flight and one for the ask after it", n)
	}
	if f.l2.held(key(1)) {
		t.Error("an error was kept")
	}
}

func TestRefreshMakesANewLinkThatReplacesTheKeptOne(t *testing.T) {
	f := newLinkFixture(t)
	fetch := &linkFetcher{}
	old, _ := f.links.Get(t.Context(), key(1), scheme, fetch)
	fresh, err := f.links.Refresh(t.Context(), key(1), scheme, fetch)
	if err != nil || fresh.Status != codes.Stored || body(t, fresh) == body(t, old) {
		t.Fatalf("Refresh: %v %v; want a new link, stored", fresh.Status, err)
	}
	res, _ := f.links.Get(t.Context(), key(1), scheme, fetch)
	if res.Status != codes.Hit || body(t, res) != body(t, fresh) {
		t.Errorf("after Refresh: %v %s; want a hit on the new link", res.Status, res.Entry.Body)
	}
	if got := string(f.l2.m[key(1)].Body); got != body(t, fresh) {
		t.Errorf("L2 holds %s, want the new link", got)
	}
}

func TestLookupNeverFetches(t *testing.T) {
	f := newLinkFixture(t)
	fetch := &linkFetcher{}
	if _, found := f.links.Lookup(t.Context(), key(1), scheme); found {
		t.Fatal("Lookup found a link never made")
	}
	f.links.Get(t.Context(), key(1), scheme, fetch)
	if res, found := f.links.Lookup(t.Context(), key(1), scheme); !found || res.Status != codes.Hit {
		t.Errorf("Lookup of a kept link: %v %v", res.Status, found)
	}
	if n := fetch.calls.Load(); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
	if got := f.lookups.get(wechat.PathScheme + " miss"); got != 2 {
		t.Errorf("%d misses counted, want the Lookup's and the Get's", got)
	}
}

// A link another replica made is found in L2 and kept in L1 until the
// same Until.
func TestLinkFromTheSharedTierKeepsItsUntil(t *testing.T) {
	f := newLinkFixture(t)
	until := f.clock.Now().Add(time.Minute)
	f.l2.m[key(1)] = cache.NewEntryUntil([]byte(`{"errcode":0,"openlink":"weixin://x"}`), "application/json", "", until)
	res, err := f.links.Get(t.Context(), key(1), scheme, &linkFetcher{err: errors.New("must not fetch")})
	if err != nil || res.Status != codes.SharedHit {
		t.Fatalf("Get: %v %v; want a shared hit", res.Status, err)
	}
	f.clock.Advance(time.Minute)
	if _, ok := f.l1.Peek(key(1)); ok {
		t.Error("L1 kept the shared link past its Until")
	}
	// One past its Until on our clock is no hit, even while Redis holds it.
	fetch := &linkFetcher{}
	if res, _ := f.links.Get(t.Context(), key(1), scheme, fetch); res.Status != codes.Stored || fetch.calls.Load() != 1 {
		t.Errorf("past its Until: %v after %d fetches; want a new link", res.Status, fetch.calls.Load())
	}
}

func TestPermanentLinksSpentCloseOnlyPermanentShortLinksForADay(t *testing.T) {
	f := newLinkFixture(t)
	permanent := codes.LinkRequest{App: "wxapp", Endpoint: wechat.PathShortLink, Keep: keepFor(time.Hour), Capped: true}
	spent := &linkFetcher{err: &wechat.Error{Status: 200, Code: wechat.PermanentLinksQuota, Msg: "reach limit"}}
	if _, err := f.links.Get(t.Context(), key(1), permanent, spent); err == nil {
		t.Fatal("no error for 85400")
	}
	for i := 2; i < 5; i++ {
		if _, err := f.links.Get(t.Context(), key(i), permanent, spent); !errors.Is(err, codes.ErrPermanentLinksSpent) {
			t.Errorf("another permanent link: %v, want 85400 answered locally", err)
		}
	}
	if n := spent.calls.Load(); n != 1 {
		t.Errorf("%d calls, want 1: the others answered locally", n)
	}
	temporary := permanent
	temporary.Capped = false
	if _, err := f.links.Get(t.Context(), key(9), temporary, &linkFetcher{}); err != nil {
		t.Errorf("a temporary short link: %v", err)
	}
	f.clock.Advance(codes.SpentTTL)
	ok := &linkFetcher{}
	if _, err := f.links.Get(t.Context(), key(10), permanent, ok); err != nil || ok.calls.Load() != 1 {
		t.Errorf("a day later: %v after %d calls; want WeChat asked again", err, ok.calls.Load())
	}
}

// A permanent link (Keep's zero instant) is kept for at least 30 days in
// the shared tier.
func TestPermanentLinkIsKeptForThirtyDays(t *testing.T) {
	f := newLinkFixture(t)
	r := codes.LinkRequest{App: "wxapp", Endpoint: wechat.PathNFCScheme,
		Keep: func(time.Time) (time.Time, bool) { return time.Time{}, true }}
	res, err := f.links.Get(t.Context(), key(1), r, &linkFetcher{})
	if err != nil {
		t.Fatal(err)
	}
	if left := res.Entry.Until.Sub(f.clock.Now()); left < codes.MinPermanentLinkTTL {
		t.Errorf("kept for %v, want at least %v", left, codes.MinPermanentLinkTTL)
	}
}
