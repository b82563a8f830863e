package fleet

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/internal/testclock"
	"github.com/wxa-sidecar/wxa-sidecar/redistest"
)

// newClockedLeaseReplica is newLeaseReplica on a client whose breaker
// runs on clk, so a test skips its cool-off.
func newClockedLeaseReplica(t *testing.T, name, url string, clk *testclock.Clock, fo FlightOptions) *leaseReplica {
	t.Helper()
	r := &leaseReplica{name: name, rec: &seen{}, leases: map[string]int{}}
	h := r.rec.hooks()
	h.Lease = func(result string) { r.mu.Lock(); r.leases[result]++; r.mu.Unlock() }
	c, err := New(Options{URL: url, Hooks: h, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r.c, r.l2, r.flight = c, NewL2(c, L2Options{TTL: time.Hour}), NewFlight(c, fo)
	return r
}

// openBreaker makes c meet a Redis that does not answer until its breaker
// opens.
func openBreaker(t *testing.T, c *Client) {
	t.Helper()
	for range breakerThreshold {
		c.Do(context.Background(), OpL2Get, func(ctx context.Context) error {
			return c.Redis().Ping(ctx).Err()
		})
	}
	if s := c.Status().Breaker; s != "open" {
		t.Fatalf("breaker %q after %d timeouts, want open", s, breakerThreshold)
	}
}

// Redis stalls while a replica fetches under the lease, long enough for
// its breaker to open: the image write and the release are skipped then,
// but owed, and made as soon as Redis answers again, in that order. The
// waiter finds the image instead of sitting out the lease (a minute here)
// and fetching again.
func TestAStalledHolderStoresAndReleasesOnceRedisAnswers(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	clk := testclock.New(time.Now())
	a := newClockedLeaseReplica(t, "a", srv.URL, clk, FlightOptions{LeaseExpiry: time.Minute})
	b := newLeaseReplica(t, "b", srv.URL, FlightOptions{LeaseExpiry: time.Minute, Poll: 5 * time.Millisecond})
	o := newOrigin()
	k := testKey(40)
	fromA := holdLease(t, a, o, k)
	srv.Pause()
	t.Cleanup(srv.Resume)
	openBreaker(t, a.c)
	close(o.letGo)
	if res := receive(t, "a", fromA); res.err != nil || res.from != codes.Own {
		t.Fatalf("a: %v, %v; want its own load, whatever Redis does", res.from, res.err)
	}
	if n := a.c.Owed(); n != 2 {
		t.Fatalf("a owes %d operations, want 2 (the image, then the release)", n)
	}
	srv.Resume()
	fromB := b.runAsync(fleetScope(), "wxapp", k, o.load(b, "wxapp", k, nil))
	time.Sleep(50 * time.Millisecond)
	if a.c.Owed() != 2 {
		t.Fatal("a paid its debts while its breaker was open")
	}
	clk.Advance(breakerCoolOff) // the breaker lets a probe through
	res := receive(t, "b", fromB)
	if res.err != nil || res.from != codes.Fleet || o.fetches.Load() != 1 {
		t.Fatalf("b: %v, %v, %d fetches; want a's image from Redis and one fetch", res.from, res.err, o.fetches.Load())
	}
	waitUntil(t, "a to owe nothing", func() bool { return a.c.Owed() == 0 })
	if got := a.c.Redis().Exists(context.Background(), "wxa:{wxapp}:lease:"+hexOf(k)).Val(); got != 0 {
		t.Error("a's lease is still there")
	}
	if s := a.c.Status().Breaker; s != "closed" {
		t.Errorf("a's breaker %q after its debts were paid, want closed", s)
	}
}

// A debt is void once the lease it was for has expired: dropped without
// a call to Redis.
func TestADebtPastItsLeaseIsDropped(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a := newLeaseReplica(t, "a", srv.URL, FlightOptions{})
	var calls atomic.Int64
	a.c.owe(OpLease, time.Now().Add(-time.Millisecond), 0, func(context.Context) error {
		calls.Add(1)
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.c.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 0 {
		t.Error("a void debt was paid")
	}
}

// Redis answering an error pays a debt (trying again would get the same
// answer); not answering keeps it.
func TestADebtIsKeptUntilRedisAnswers(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a := newLeaseReplica(t, "a", srv.URL, FlightOptions{})
	var calls atomic.Int64
	answered := make(chan struct{})
	a.c.owe(OpLease, time.Now().Add(time.Minute), 0, func(ctx context.Context) error {
		if calls.Add(1) < 3 {
			return context.DeadlineExceeded // no answer
		}
		close(answered)
		return a.c.Redis().Do(ctx, "NO-SUCH-COMMAND").Err() // an answer
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.c.Settle(ctx); err != nil {
		t.Fatalf("Settle: %v after %d tries", err, calls.Load())
	}
	<-answered
	if got := calls.Load(); got != 3 {
		t.Errorf("%d tries, want 3", got)
	}
}

// Stop ends a holder's fetch: its load sees its context cancelled, the
// lease is released at once, and another replica takes it and loads
// instead of sitting out the lease. Wait returns once the flight has.
func TestStopEndsTheFlightsAndReleasesTheirLeases(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a := newLeaseReplica(t, "a", srv.URL, FlightOptions{LeaseExpiry: time.Minute})
	b := newLeaseReplica(t, "b", srv.URL, FlightOptions{LeaseExpiry: time.Minute, Poll: 5 * time.Millisecond})
	k := testKey(41)
	started := make(chan struct{})
	fromA := a.runAsync(context.Background(), "wxapp", k, func(ctx context.Context) (*cache.Entry, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	<-started
	o := newOrigin()
	close(o.letGo)
	fromB := b.runAsync(fleetScope(), "wxapp", k, o.load(b, "wxapp", k, nil))
	waitUntil(t, "b to wait for a's lease", func() bool { return b.reported("lease ok") })
	start := time.Now()
	a.flight.Stop()
	if res := receive(t, "a", fromA); !errors.Is(res.err, context.Canceled) {
		t.Errorf("a after Stop: %v, want context.Canceled", res.err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.flight.Wait(ctx); err != nil {
		t.Fatalf("Wait after Stop: %v", err)
	}
	res := receive(t, "b", fromB)
	if res.err != nil || res.from != codes.Own || o.fetches.Load() != 1 {
		t.Fatalf("b: %v, %v; want its own load once a let the lease go", res.from, res.err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("b loaded %v after a's Stop", d)
	}
	if _, _, err := a.flight.Run(context.Background(), "wxapp", testKey(42), o.load(a, "wxapp", testKey(42), nil)); !errors.Is(err, context.Canceled) {
		t.Errorf("a flight after Stop: %v, want context.Canceled", err)
	}
	if got := a.c.Redis().Exists(context.Background(), "wxa:{wxapp}:lease:"+hexOf(testKey(42))).Val(); got != 0 {
		t.Error("a flight after Stop took a lease")
	}
}
