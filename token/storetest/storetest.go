// Package storetest is the conformance suite of token.Store: every store
// (token.MemoryStore, fleet.TokenStore on Redis) runs the same tests, so
// two stores can never drift apart on a rule the Manager leans on.
//
// It holds the contract, not an implementation: it never imports a store,
// Redis or a server. Its tests drive time through the instants they pass
// and the advance function; they never sleep to let a clock run.
package storetest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/token"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// Run runs the suite. newStore returns an empty store, each call a fresh
// one, on a clock the caller owns; advance moves that clock forward by d
// and returns what it reads then (advance(0) reads it). Subtests run one
// after another.
//
// What Run does not hold, each store tests itself: that a lease whose
// holder never gives it back ends after its ttl (a MemoryStore's holders
// live in its process and always give it back), and what a store does
// with values it cannot believe.
func Run(t *testing.T, newStore func(t *testing.T) token.Store, advance func(d time.Duration) time.Time) {
	s := &suite{newStore: newStore, advance: advance}
	for _, tc := range []struct {
		name string
		test func(*testing.T)
	}{
		{"LoadOfAnAppNeverSavedIsErrNoToken", s.loadOfAnAppNeverSaved},
		{"LoadReturnsWhatSaveStored", s.loadReturnsWhatSaveStored},
		{"TheLastSaveWins", s.theLastSaveWins},
		{"ForceRefreshesAreSpacedThirtySecondsApart", s.forceRefreshesAreSpaced},
		{"TwentyForceRefreshesADay", s.twentyForceRefreshesADay},
		{"TheForceRefreshDayIsChinas", s.theForceRefreshDayIsChinas},
		{"TheForceRefreshDayIsNotARolling24Hours", s.theForceRefreshDayIsNotRolling},
		{"ForceRefreshesAreCountedPerApp", s.forceRefreshesAreCountedPerApp},
		{"OneForceRefreshForConcurrentCallers", s.oneForceRefreshForConcurrentCallers},
		{"TheLeaseIsHeldUntilGivenBack", s.theLeaseIsHeldUntilGivenBack},
		{"ASecondUnlockFreesNothing", s.aSecondUnlockFreesNothing},
		{"ALeaseWaiterTakesTheLeaseWhenItIsGivenBack", s.aLeaseWaiterTakesIt},
	} {
		t.Run(tc.name, tc.test)
	}
}

type suite struct {
	newStore func(t *testing.T) token.Store
	advance  func(d time.Duration) time.Time
}

const (
	appA = "wx00000000000storeA"
	appB = "wx00000000000storeB"
)

// until moves the clock to the first instant at or after it reads the
// wall time hh:mm:ss in wechat.ChinaTime, and returns it.
func (s *suite) until(hh, mm, ss int) time.Time {
	now := s.advance(0)
	c := now.In(wechat.ChinaTime)
	at := time.Date(c.Year(), c.Month(), c.Day(), hh, mm, ss, 0, wechat.ChinaTime)
	if at.Before(now) {
		at = at.AddDate(0, 0, 1)
	}
	return s.advance(at.Sub(now))
}

// spend makes n force refreshes for app, each allowed, ForceRefreshSpacing
// apart, the first at the clock's now; it returns the last one's instant.
func (s *suite) spend(t *testing.T, st token.Store, app string, n int) time.Time {
	t.Helper()
	now := s.advance(0)
	for i := range n {
		if i > 0 {
			now = s.advance(wechat.ForceRefreshSpacing)
		}
		allowed, reason, err := st.AllowForce(context.Background(), app, now)
		if err != nil || !allowed {
			t.Fatalf("force refresh %d of %d at %v: allowed %v (%q), %v; want allowed", i+1, n, now.In(wechat.ChinaTime), allowed, reason, err)
		}
	}
	return now
}

func allow(t *testing.T, st token.Store, app string, now time.Time) (bool, string) {
	t.Helper()
	allowed, reason, err := st.AllowForce(context.Background(), app, now)
	if err != nil {
		t.Fatalf("AllowForce at %v: %v", now, err)
	}
	if !allowed && reason == "" {
		t.Errorf("AllowForce at %v refused without a reason", now)
	}
	return allowed, reason
}

func (s *suite) loadOfAnAppNeverSaved(t *testing.T) {
	st := s.newStore(t)
	if _, err := st.Load(context.Background(), appA); !errors.Is(err, token.ErrNoToken) {
		t.Fatalf("Load of an empty store: %v, want token.ErrNoToken", err)
	}
	now := s.advance(0)
	if err := st.Save(context.Background(), appA, token.Token{Value: "tokenA-0123456789", Expiry: now.Add(time.Hour), FetchedAt: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Load(context.Background(), appB); !errors.Is(err, token.ErrNoToken) {
		t.Errorf("Load of another app than the one saved: %v, want token.ErrNoToken", err)
	}
}

func (s *suite) loadReturnsWhatSaveStored(t *testing.T) {
	st := s.newStore(t)
	now := s.advance(0)
	want := token.Token{Value: "ACCESS_tok-en.0123456789~", Expiry: now.Add(7200 * time.Second), FetchedAt: now.Add(-time.Second)}
	if err := st.Save(context.Background(), appA, want); err != nil {
		t.Fatal(err)
	}
	got, err := st.Load(context.Background(), appA)
	if err != nil {
		t.Fatal(err)
	}
	if got.Value != want.Value || !got.Expiry.Equal(want.Expiry) || !got.FetchedAt.Equal(want.FetchedAt) {
		t.Errorf("Load = %q, expiry %v, fetched %v; want %q, %v, %v", got.Value, got.Expiry, got.FetchedAt, want.Value, want.Expiry, want.FetchedAt)
	}
}

func (s *suite) theLastSaveWins(t *testing.T) {
	st := s.newStore(t)
	now := s.advance(0)
	for i, v := range []string{"first-0123456789", "second-0123456789"} {
		if err := st.Save(context.Background(), appA, token.Token{Value: v, Expiry: now.Add(time.Duration(2-i) * time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := st.Load(context.Background(), appA); err != nil || got.Value != "second-0123456789" {
		t.Errorf("Load after two saves = %q, %v; want the second, though it expires first", got.Value, err)
	}
}

func (s *suite) forceRefreshesAreSpaced(t *testing.T) {
	st := s.newStore(t)
	first := s.until(12, 0, 0)
	if ok, reason := allow(t, st, appA, first); !ok {
		t.Fatalf("the day's first force refresh refused: %s", reason)
	}
	if ok, _ := allow(t, st, appA, s.advance(wechat.ForceRefreshSpacing-time.Second)); ok {
		t.Errorf("a force refresh %v after the last allowed, want refused", wechat.ForceRefreshSpacing-time.Second)
	}
	// The refusal spent nothing: the spacing runs from the last allowed.
	if ok, reason := allow(t, st, appA, s.advance(time.Second)); !ok {
		t.Errorf("a force refresh %v after the last allowed refused: %s", wechat.ForceRefreshSpacing, reason)
	}
}

func (s *suite) twentyForceRefreshesADay(t *testing.T) {
	st := s.newStore(t)
	s.until(9, 0, 0)
	s.spend(t, st, appA, wechat.ForceRefreshesPerDay)
	if ok, _ := allow(t, st, appA, s.advance(time.Hour)); ok {
		t.Errorf("force refresh %d of the day allowed, want refused", wechat.ForceRefreshesPerDay+1)
	}
	if ok, _ := allow(t, st, appA, s.until(23, 59, 59)); ok {
		t.Error("a force refresh before midnight (UTC+8) allowed after the day's 20, want refused")
	}
}

// WeChat's day ends at midnight in China (16:00 UTC), not at midnight UTC.
func (s *suite) theForceRefreshDayIsChinas(t *testing.T) {
	st := s.newStore(t)
	s.until(0, 0, 0)
	s.spend(t, st, appA, wechat.ForceRefreshesPerDay)
	// 08:00 in China is midnight UTC: the same day of WeChat's.
	if ok, _ := allow(t, st, appA, s.until(8, 0, 0)); ok {
		t.Error("a force refresh at midnight UTC allowed after the day's 20, want refused: the day is UTC+8's")
	}
	if ok, reason := allow(t, st, appA, s.until(0, 0, 0)); !ok {
		t.Errorf("the first force refresh of the next day (UTC+8) refused: %s", reason)
	}
}

// The count starts again at China's midnight, not 24 h after the first
// force refresh: 20 spent late in the evening leave 20 for the next day.
func (s *suite) theForceRefreshDayIsNotRolling(t *testing.T) {
	st := s.newStore(t)
	s.until(23, 40, 0)
	s.spend(t, st, appA, wechat.ForceRefreshesPerDay)
	s.until(0, 0, 0)
	// Each one allowed, or spend fails the test.
	s.spend(t, st, appA, wechat.ForceRefreshesPerDay)
}

func (s *suite) forceRefreshesAreCountedPerApp(t *testing.T) {
	st := s.newStore(t)
	s.until(10, 0, 0)
	last := s.spend(t, st, appA, wechat.ForceRefreshesPerDay)
	if ok, reason := allow(t, st, appB, last); !ok {
		t.Errorf("another app's force refresh, at the instant of the last of %d for the first app, refused: %s", wechat.ForceRefreshesPerDay, reason)
	}
}

// AllowForce checks and records in one step: of callers asking at once,
// one is allowed.
func (s *suite) oneForceRefreshForConcurrentCallers(t *testing.T) {
	st := s.newStore(t)
	now := s.until(11, 0, 0)
	var allowed atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			ok, _, err := st.AllowForce(context.Background(), appA, now)
			if err != nil {
				t.Error(err)
			}
			if ok {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != 1 {
		t.Errorf("%d of 16 callers asking at once allowed a force refresh, want 1", n)
	}
}

// lockWithin tries to take app's lease for at most d: the unlock, or nil
// with the error.
func lockWithin(st token.Store, app string, d time.Duration) (func(context.Context) error, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return st.Lock(ctx, app, time.Minute)
}

// notTaken is how long a Lock is given to show it waits.
const notTaken = 100 * time.Millisecond

func (s *suite) theLeaseIsHeldUntilGivenBack(t *testing.T) {
	st := s.newStore(t)
	unlock, err := lockWithin(st, appA, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockWithin(st, appA, notTaken); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a second Lock while the lease is held: %v, want the context's deadline", err)
	}
	other, err := lockWithin(st, appB, 10*time.Second)
	if err != nil {
		t.Fatalf("another app's lease while the first is held: %v", err)
	}
	if err := other(context.Background()); err != nil {
		t.Error(err)
	}
	if err := unlock(context.Background()); err != nil {
		t.Fatal(err)
	}
	again, err := lockWithin(st, appA, 10*time.Second)
	if err != nil {
		t.Fatalf("Lock after the lease was given back: %v", err)
	}
	again(context.Background())
}

func (s *suite) aSecondUnlockFreesNothing(t *testing.T) {
	st := s.newStore(t)
	unlock, err := lockWithin(st, appA, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	unlock(context.Background())
	next, err := lockWithin(st, appA, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer next(context.Background())
	unlock(context.Background()) // the first holder's, again
	if _, err := lockWithin(st, appA, notTaken); err == nil {
		t.Fatal("a holder's second unlock freed the lease its next holder took")
	}
}

func (s *suite) aLeaseWaiterTakesIt(t *testing.T) {
	st := s.newStore(t)
	unlock, err := lockWithin(st, appA, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		next, err := lockWithin(st, appA, 10*time.Second)
		if err == nil {
			next(context.Background())
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("a waiter took the lease while it was held (%v)", err)
	case <-time.After(notTaken):
	}
	unlock(context.Background())
	select {
	case err := <-got:
		if err != nil {
			t.Errorf("the waiter, once the lease was given back: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the waiter did not take the lease once it was given back")
	}
}
