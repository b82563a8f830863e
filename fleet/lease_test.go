package fleet

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// replica is one sidecar's share of the tier: its own client, L2 and
// flight, and what it reported.
type leaseReplica struct {
	name   string
	c      *Client
	l2     *L2
	flight *Flight
	rec    *seen

	mu     sync.Mutex
	leases map[string]int
}

func newLeaseReplica(t *testing.T, name, url string, fo FlightOptions) *leaseReplica {
	t.Helper()
	r := &leaseReplica{name: name, rec: &seen{}, leases: map[string]int{}}
	h := r.rec.hooks()
	h.Lease = func(result string) { r.mu.Lock(); r.leases[result]++; r.mu.Unlock() }
	c, err := New(Options{URL: url, Hooks: h})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r.c, r.l2, r.flight = c, NewL2(c, L2Options{TTL: time.Hour}), NewFlight(c, fo)
	return r
}

func (r *leaseReplica) leaseResults() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprint(r.leases)
}

// reported reports whether the replica's client reported op with result.
func (r *leaseReplica) reported(opResult string) bool {
	return strings.Contains(","+r.rec.list()+",", ","+opResult+",")
}

// origin stands for WeChat: it counts fetches, holds each until let go
// (a slow upstream), and answers an image or err.
type origin struct {
	fetches atomic.Int64
	started chan struct{} // one value per fetch started
	letGo   chan struct{} // closed: fetches finish
	err     error
}

func newOrigin() *origin {
	return &origin{started: make(chan struct{}, 100), letGo: make(chan struct{})}
}

// load is what codes' load does, in short: L2, else fetch and store in L2
// before answering. loads counts how often it ran on this replica.
func (o *origin) load(r *leaseReplica, app string, k cache.Key, loads *atomic.Int64) func(context.Context) (*cache.Entry, error) {
	return func(ctx context.Context) (*cache.Entry, error) {
		if loads != nil {
			loads.Add(1)
		}
		if e, err := r.l2.Get(ctx, app, k); err == nil {
			return e, nil
		}
		o.fetches.Add(1)
		o.started <- struct{}{}
		<-o.letGo
		if o.err != nil {
			return nil, fmt.Errorf("test: fetch: %w", o.err)
		}
		e := testEntry("\xff\xd8\xff fetched by " + r.name + " \xff\xd9")
		r.l2.Set(ctx, app, k, e)
		return e, nil
	}
}

type runResult struct {
	e    *cache.Entry
	from codes.Source
	err  error
}

func (r *leaseReplica) runAsync(ctx context.Context, app string, k cache.Key, load func(context.Context) (*cache.Entry, error)) <-chan runResult {
	ch := make(chan runResult, 1)
	go func() {
		e, from, err := r.flight.Run(ctx, app, k, load)
		ch <- runResult{e, from, err}
	}()
	return ch
}

func receive(t *testing.T, what string, ch <-chan runResult) runResult {
	t.Helper()
	select {
	case res := <-ch:
		return res
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: no answer within 20s", what)
	}
	return runResult{}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// holdLease starts replica a's flight for k and returns once its fetch
// (held by o) has started: a holds the lease.
func holdLease(t *testing.T, a *leaseReplica, o *origin, k cache.Key) <-chan runResult {
	t.Helper()
	ch := a.runAsync(context.Background(), "wxapp", k, o.load(a, "wxapp", k, nil))
	select {
	case <-o.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the holder's fetch did not start")
	}
	return ch
}

// Two replicas, one slow fetch: the replica that took the lease fetches;
// the other's callers (three, one flight) wait, then find the image in
// Redis, put there before the holder answered and let the lease go.
func TestOneFetchForAKeyAcrossTheFleet(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a := newLeaseReplica(t, "a", srv.URL, FlightOptions{})
	b := newLeaseReplica(t, "b", srv.URL, FlightOptions{})
	o := newOrigin()
	k := testKey(10)
	fromA := holdLease(t, a, o, k)
	var bLoads atomic.Int64
	var fromB []<-chan runResult
	for range 3 {
		fromB = append(fromB, b.runAsync(context.Background(), "wxapp", k, o.load(b, "wxapp", k, &bLoads)))
	}
	waitUntil(t, "b to wait for a's flight", func() bool { return b.reported("lease ok") && b.reported("l2_get ok") })
	close(o.letGo)
	resA := receive(t, "a", fromA)
	if resA.err != nil || resA.from != codes.Own {
		t.Fatalf("a: %v, %v; want its own load", resA.from, resA.err)
	}
	for i, ch := range fromB {
		res := receive(t, "b", ch)
		if res.err != nil || res.from != codes.Fleet || !sameEntry(res.e, resA.e) {
			t.Errorf("b caller %d: source %v, %v; want a's entry from the fleet", i, res.from, res.err)
		}
	}
	if got := o.fetches.Load(); got != 1 {
		t.Errorf("%d fetches, want 1", got)
	}
	if got := bLoads.Load(); got != 1 {
		t.Errorf("b's load ran %d times, want once (to read L2 into L1)", got)
	}
	if a.leaseResults() != "map[acquired:1]" || b.leaseResults() != "map[waited:1]" {
		t.Errorf("leases: a %s, b %s; want acquired and waited", a.leaseResults(), b.leaseResults())
	}
	if n := a.c.Redis().Exists(context.Background(), "wxa:{wxapp}:lease:"+hexOf(k)).Val(); n != 0 {
		t.Error("the lease was not released")
	}
}

func hexOf(k cache.Key) string { return fmt.Sprintf("%x", k[:]) }

// The holder's fetch fails with an errcode: the waiting replica answers
// the same errcode without a fetch of its own.
func TestHolderErrcodeReachesTheWaitersWithoutAFetch(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a := newLeaseReplica(t, "a", srv.URL, FlightOptions{})
	b := newLeaseReplica(t, "b", srv.URL, FlightOptions{})
	o := newOrigin()
	o.err = wechat.Errorf(wechat.DailyQuota, "reach max api daily quota limit rid: 5")
	k := testKey(11)
	fromA := holdLease(t, a, o, k)
	var bLoads atomic.Int64
	fromB := b.runAsync(context.Background(), "wxapp", k, o.load(b, "wxapp", k, &bLoads))
	waitUntil(t, "b to wait for a's flight", func() bool { return b.reported("lease ok") && b.reported("l2_get ok") })
	close(o.letGo)
	if res := receive(t, "a", fromA); !errors.Is(res.err, o.err) || res.from != codes.Own {
		t.Fatalf("a: %v, %v; want its own failure", res.from, res.err)
	}
	res := receive(t, "b", fromB)
	var we *wechat.Error
	if !errors.As(res.err, &we) || we.Code != wechat.DailyQuota || we.Msg != "reach max api daily quota limit rid: 5" ||
		we.Status != 200 || res.from != codes.Fleet {
		t.Fatalf("b: %v, %v; want a's errcode from the fleet", res.from, res.err)
	}
	if got := o.fetches.Load(); got != 1 {
		t.Errorf("%d fetches, want 1", got)
	}
	if got := bLoads.Load(); got != 0 {
		t.Errorf("b's load ran %d times, want 0", got)
	}
	if b.leaseResults() != "map[waited:1]" {
		t.Errorf("b's leases %s, want waited", b.leaseResults())
	}
}

// A holder that crashed leaves its lease and no answer: the waiter waits
// it out, then takes the lease and loads itself.
func TestCrashedHolderIsWaitedOutThenTheWaiterLoads(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	b := newLeaseReplica(t, "b", srv.URL, FlightOptions{Poll: 5 * time.Millisecond})
	o := newOrigin()
	close(o.letGo)
	k := testKey(12)
	lease := "wxa:{wxapp}:lease:" + hexOf(k)
	if err := b.c.Redis().Set(context.Background(), lease, "c7a5bed0c7a5bed0c7a5bed0c7a5bed0", 300*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	// The lease's holder while b loads: b's own, so that other waiters
	// keep waiting rather than fetch too.
	var holderDuringLoad string
	load := o.load(b, "wxapp", k, nil)
	res := receive(t, "b", b.runAsync(context.Background(), "wxapp", k, func(ctx context.Context) (*cache.Entry, error) {
		holderDuringLoad = b.c.Redis().Get(ctx, lease).Val()
		return load(ctx)
	}))
	if res.err != nil || res.from != codes.Own || res.e == nil {
		t.Fatalf("b: %v, %v; want its own load", res.from, res.err)
	}
	if got := o.fetches.Load(); got != 1 {
		t.Errorf("%d fetches, want 1", got)
	}
	if b.leaseResults() != "map[timed_out:1]" {
		t.Errorf("b's leases %s, want timed_out", b.leaseResults())
	}
	if holderDuringLoad == "" || holderDuringLoad == "c7a5bed0c7a5bed0c7a5bed0c7a5bed0" {
		t.Errorf("lease held by %q while b loaded, want b's own", holderDuringLoad)
	}
	if b.c.Redis().Exists(context.Background(), lease).Val() != 0 {
		t.Error("b did not release the lease it took")
	}
}

// A lease that outlives the flight's expiry (a holder stuck past it): the
// waiter stops waiting at its own expiry and loads, leaving the lease.
func TestWaiterLoadsItselfAtTheLeaseExpiry(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	b := newLeaseReplica(t, "b", srv.URL, FlightOptions{LeaseExpiry: 300 * time.Millisecond, Poll: 5 * time.Millisecond})
	o := newOrigin()
	close(o.letGo)
	k := testKey(13)
	lease := "wxa:{wxapp}:lease:" + hexOf(k)
	b.c.Redis().Set(context.Background(), lease, "57c4b01d57c4b01d57c4b01d57c4b01d", time.Minute)
	res := receive(t, "b", b.runAsync(context.Background(), "wxapp", k, o.load(b, "wxapp", k, nil)))
	if res.err != nil || res.from != codes.Own || o.fetches.Load() != 1 {
		t.Fatalf("b: %v, %v, %d fetches; want its own load", res.from, res.err, o.fetches.Load())
	}
	if b.leaseResults() != "map[timed_out:1]" {
		t.Errorf("b's leases %s, want timed_out", b.leaseResults())
	}
	if got := b.c.Redis().Get(context.Background(), lease).Val(); got != "57c4b01d57c4b01d57c4b01d57c4b01d" {
		t.Errorf("lease now %q: the waiter touched another's lease", got)
	}
}

// Redis gone: each replica is its own flight; nobody fails.
func TestRedisDownEachReplicaLoadsAlone(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a := newLeaseReplica(t, "a", srv.URL, FlightOptions{})
	b := newLeaseReplica(t, "b", srv.URL, FlightOptions{})
	srv.Stop()
	o := newOrigin()
	close(o.letGo)
	k := testKey(14)
	for _, r := range []*leaseReplica{a, b} {
		res := receive(t, r.name, r.runAsync(fleetScope(), "wxapp", k, o.load(r, "wxapp", k, nil)))
		if res.err != nil || res.from != codes.Own || res.e == nil {
			t.Errorf("%s: %v, %v; want its own load", r.name, res.from, res.err)
		}
	}
	if got := o.fetches.Load(); got != 2 {
		t.Errorf("%d fetches, want one per replica", got)
	}
	if a.leaseResults() != "map[]" || b.leaseResults() != "map[]" {
		t.Errorf("leases a %s b %s; want none reported without Redis", a.leaseResults(), b.leaseResults())
	}
}

func fleetScope() context.Context { return Scope(context.Background()) }

// A Redis that accepts and never answers: the flight gives up on it after
// one timeout and loads alone.
func TestRedisPausedTheFlightLoadsAlone(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a := newLeaseReplica(t, "a", srv.URL, FlightOptions{})
	a.c.Redis().Ping(context.Background()) // a connection in the pool
	srv.Pause()
	t.Cleanup(srv.Resume)
	o := newOrigin()
	close(o.letGo)
	k := testKey(15)
	res := receive(t, "a", a.runAsync(fleetScope(), "wxapp", k, o.load(a, "wxapp", k, nil)))
	if res.err != nil || res.from != codes.Own || o.fetches.Load() != 1 {
		t.Fatalf("a: %v, %v, %d fetches; want its own load", res.from, res.err, o.fetches.Load())
	}
	if got := a.rec.list(); got != "lease timeout" {
		t.Errorf("reported %q, want the lease's timeout and nothing after it", got)
	}
}

// Redis stops answering while a replica waits for another's flight: the
// failed poll ends the wait, and the waiter loads alone, without waiting
// for the holder (still fetching) or the lease's expiry.
func TestFailedPollEndsTheWait(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a := newLeaseReplica(t, "a", srv.URL, FlightOptions{LeaseExpiry: time.Minute})
	b := newLeaseReplica(t, "b", srv.URL, FlightOptions{LeaseExpiry: time.Minute})
	o := newOrigin()
	k := testKey(16)
	fromA := holdLease(t, a, o, k)
	var bFetched atomic.Bool
	bLoad := func(ctx context.Context) (*cache.Entry, error) {
		bFetched.Store(true)
		return testEntry("\xff\xd8\xff fetched by b \xff\xd9"), nil
	}
	fromB := b.runAsync(fleetScope(), "wxapp", k, bLoad)
	waitUntil(t, "b to wait for a's flight", func() bool { return b.reported("lease ok") && b.reported("l2_get ok") })
	srv.Pause()
	t.Cleanup(srv.Resume)
	res := receive(t, "b", fromB)
	if res.err != nil || res.from != codes.Own || !bFetched.Load() {
		t.Fatalf("b: %v, %v; want its own load", res.from, res.err)
	}
	if b.leaseResults() != "map[timed_out:1]" {
		t.Errorf("b's leases %s, want timed_out", b.leaseResults())
	}
	close(o.letGo) // a's fetch ends only now: b did not wait for it
	if res := receive(t, "a", fromA); res.err != nil || res.from != codes.Own {
		t.Errorf("a: %v, %v; want its own load, whatever Redis does", res.from, res.err)
	}
}
