package token

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// heldLease takes store's fetch lease for the demo app, as another replica
// stuck in its fetch would, until the test ends.
func heldLease(t *testing.T, store Store) {
	t.Helper()
	unlock, err := store.Lock(context.Background(), wechattest.DemoAppID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unlock(context.Background()) })
}

// A classic fill waiting for a lease another replica holds (up to twice
// the lease's life) ends at Stop, and so does its caller's wait: SIGTERM
// must not wait for it.
func TestStopEndsAFillWaitingForTheLease(t *testing.T) {
	store := NewMemoryStore()
	heldLease(t, store)
	f := newFixture(t, ModeClassic, func(o *Options) { o.Store = store })
	got := make(chan error, 1)
	go func() {
		_, err := f.m.Token(context.Background())
		got <- err
	}()
	time.Sleep(100 * time.Millisecond) // the fill waits for the lease
	select {
	case err := <-got:
		t.Fatalf("Token returned %v while another replica held the lease", err)
	default:
	}
	f.m.Stop()
	select {
	case err := <-got:
		if err == nil {
			t.Error("Token after Stop: a token, want an error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Token still waits 5 s after Stop")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.m.Wait(ctx); err != nil {
		t.Fatalf("Wait after Stop: %v", err)
	}
	if _, err := f.m.Token(context.Background()); !errors.Is(err, ErrStopped) {
		t.Errorf("Token after Stop without a token: %v, want ErrStopped", err)
	}
	if n := f.fake.Calls("/cgi-bin/token"); n != 0 {
		t.Errorf("%d token fetches: the fill fetched after Stop or without the lease", n)
	}
}

// The caller that starts a fill waits for it only as long as its own
// context lets it; the fill goes on for the others.
func TestTheCallerStartingAFillLeavesWhenItsContextEnds(t *testing.T) {
	store := NewMemoryStore()
	unlock, err := store.Lock(context.Background(), wechattest.DemoAppID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, ModeClassic, func(o *Options) { o.Store = store })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := f.m.Token(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Token: %v, want its context's deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Token returned %v after its context ended", d)
	}
	unlock(context.Background())
	tok, err := f.m.Token(context.Background())
	if err != nil || !works(t, f.fake, tok.Value) {
		t.Fatalf("the fill that went on: %v", err)
	}
	if n := f.fake.Calls("/cgi-bin/token"); n != 1 {
		t.Errorf("%d token fetches, want the one fill's", n)
	}
}

// WeChat hands out a token it calls dead until someone forces a refresh.
// Three managers sharing a store are told so at once: one forces, the
// others wait for its token under the store's lease and adopt it, instead
// of failing because the app's force_refresh was just spent.
func TestManagersToldAtOnceAdoptTheOneForcedToken(t *testing.T) {
	store := NewMemoryStore()
	f := newFixtureWithFake(t, ModeStable, wechattest.Options{StaleStableToken: true}, func(o *Options) { o.Store = store })
	managers := []*Manager{f.m, f.another(t, nil), f.another(t, nil)}
	dead, err := f.m.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range managers[1:] {
		if tok, err := m.Token(context.Background()); err != nil || tok.Value != dead.Value {
			t.Fatalf("another manager: %v, want the stored token", err)
		}
	}
	f.fake.RevokeTokens()
	var wg sync.WaitGroup
	got := make([]Token, 3*len(managers))
	errs := make([]error, len(got))
	for i := range got {
		wg.Go(func() { got[i], errs[i] = managers[i%len(managers)].Invalidate(context.Background(), dead.Value) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Invalidate %d (manager %d): %v", i, i%len(managers), err)
		}
		if got[i].Value != got[0].Value || got[i].Value == dead.Value {
			t.Fatalf("Invalidate %d: the managers serve different tokens, or the dead one", i)
		}
	}
	if !works(t, f.fake, got[0].Value) {
		t.Error("the adopted token does not work")
	}
	forced := 0
	for _, req := range f.fake.Requests("/cgi-bin/stable_token") {
		if strings.Contains(string(req.Body), `"force_refresh":true`) {
			forced++
		}
	}
	if forced != 1 {
		t.Errorf("WeChat saw %d force refreshes, want 1", forced)
	}
}
