package fleet

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/internal/testclock"
	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

const gateApp = "wxdemo"

var (
	wxacodeKey   = quota.Key{App: gateApp, Endpoint: wechat.PathWxacode}
	unlimitedKey = quota.Key{App: gateApp, Endpoint: wechat.PathUnlimited}
	qrcodeKey    = quota.Key{App: gateApp, Endpoint: wechat.PathQRCode}
)

// quotaSeen is a Gate's quota.Hooks: what the metrics would have seen.
type quotaSeen struct {
	mu        sync.Mutex
	rejected  int
	waited    []time.Duration
	cooldowns map[quota.Key][]bool
	onWaited  func()
}

func (s *quotaSeen) hooks() quota.Hooks {
	s.cooldowns = map[quota.Key][]bool{}
	return quota.Hooks{
		Rejected: func(quota.Key) { s.mu.Lock(); s.rejected++; s.mu.Unlock() },
		Waited: func(_ quota.Key, d time.Duration) {
			s.mu.Lock()
			s.waited = append(s.waited, d)
			f := s.onWaited
			s.mu.Unlock()
			if f != nil {
				f()
			}
		},
		Cooldown: func(k quota.Key, active bool) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.cooldowns[k] = append(s.cooldowns[k], active)
		},
	}
}

func (s *quotaSeen) rejections() int { s.mu.Lock(); defer s.mu.Unlock(); return s.rejected }
func (s *quotaSeen) waits() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.waited)
}
func (s *quotaSeen) cooldownCalls(k quota.Key) []bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.cooldowns[k])
}

// replica is one sidecar's view of the fleet: its own Redis client (and
// breaker), its gate, and what each reported.
type replica struct {
	client *Client
	gate   *Gate
	redis  *seen
	quota  *quotaSeen
}

func newReplica(t *testing.T, url string, o quota.Options, fleetSize int, clientNow func() time.Time) *replica {
	t.Helper()
	r := &replica{redis: &seen{}, quota: &quotaSeen{}}
	c, err := New(Options{URL: url, Hooks: r.redis.hooks(), Now: clientNow, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	o.Hooks = r.quota.hooks()
	r.client, r.gate = c, NewGate(c, o, fleetSize)
	t.Cleanup(r.gate.Close)
	return r
}

func refusalOf(t *testing.T, err error) *quota.Refusal {
	t.Helper()
	var r *quota.Refusal
	if !errors.As(err, &r) {
		t.Fatalf("err = %v, want a *quota.Refusal", err)
	}
	return r
}

// admitAll runs n Admits at once, spread over gates in turn, and returns
// how many were admitted and the refusals.
func admitAll(t *testing.T, n int, k quota.Key, gates ...quota.Gate) (int, []*quota.Refusal) {
	t.Helper()
	var mu sync.Mutex
	admitted, refusals := 0, []*quota.Refusal(nil)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			err := gates[i%len(gates)].Admit(context.Background(), k)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				admitted++
				return
			}
			var r *quota.Refusal
			if !errors.As(err, &r) {
				t.Errorf("Admit: %v, want nil or a *quota.Refusal", err)
				return
			}
			refusals = append(refusals, r)
		})
	}
	wg.Wait()
	return admitted, refusals
}

// A fresh bucket lets Burst calls through at once, then refuses with 45011
// and the time to the next slot, exactly as quota.Local (x/time/rate) does.
func TestGateAdmitsTheBurstAtOnceLikeLocal(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	o := quota.Options{Default: quota.Limit{Rate: 0.01, Burst: 6}} // a slot every 100 s: none refills during the test
	r := newReplica(t, srv.URL, o, 1, nil)
	local := quota.NewLocal(o)
	t.Cleanup(local.Close)
	fleetAdmitted, fleetRefusals := admitAll(t, 20, wxacodeKey, r.gate)
	localAdmitted, localRefusals := admitAll(t, 20, wxacodeKey, local)
	if fleetAdmitted != 6 || localAdmitted != 6 {
		t.Errorf("admitted %d through the fleet gate and %d through a Local, want the burst of 6 each", fleetAdmitted, localAdmitted)
	}
	for _, rf := range append(fleetRefusals, localRefusals...) {
		// The 7th slot is 100 s after the first; the 8th 200 s, and so on.
		if rf.Code != wechat.MinuteQuota || rf.Msg != "api minute-quota reach limit (wxa-sidecar UPSTREAM_RPS)" ||
			rf.RetryAfter < 50*time.Second || rf.RetryAfter > 1400*time.Second {
			t.Errorf("refusal %+v, want 45011 naming UPSTREAM_RPS with the time to a later slot", *rf)
		}
	}
	if got := r.quota.rejections(); got != 14 {
		t.Errorf("Rejected %d times, want 14", got)
	}
	if got := len(r.quota.waits()); got != 6 {
		t.Errorf("Waited %d times, want 6 (every admitted call)", got)
	}
	if got := r.redis.list(); !strings.HasPrefix(got, "ratelimit ok,") || strings.Contains(got, "cooldown") {
		t.Errorf("Redis ops %q, want one ratelimit each (the cool-down is read in the same script)", got)
	}
}

// The fleet's promise: 36 calls at once over two replicas with a fleet
// limit of 2/s and a burst of 6 send what one sidecar would.
func TestTwoReplicasShareOneLimit(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	o := quota.Options{Default: quota.Limit{Rate: 2, Burst: 6}}
	// FLEET_SIZE left at 1: only Redis keeps the two from 12 at once.
	a, b := newReplica(t, srv.URL, o, 1, nil), newReplica(t, srv.URL, o, 1, nil)
	start := time.Now()
	admitted, refusals := admitAll(t, 36, unlimitedKey, a.gate, b.gate)
	elapsed := time.Since(start)
	bound := 6 + int(math.Ceil(2*elapsed.Seconds())) + 1
	if admitted < 6 || admitted > bound {
		t.Errorf("admitted %d in %v, want from 6 to %d (the burst, 2/s since, one slot of slack)", admitted, elapsed, bound)
	}
	for _, rf := range refusals {
		if rf.Code != wechat.MinuteQuota {
			t.Errorf("refusal %+v, want 45011", *rf)
		}
	}
	if got := a.quota.rejections() + b.quota.rejections(); got != len(refusals) {
		t.Errorf("Rejected %d times, want %d", got, len(refusals))
	}
}

// A queued call waits for the fleet's next slot as it would for a Local's,
// and a caller that gives up returns its slot.
func TestQueueingMatchesLocalAndACancelledWaitGivesTheSlotBack(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	o := quota.Options{Default: quota.Limit{Rate: 4, Burst: 2}, MaxWait: 10 * time.Second}
	r := newReplica(t, srv.URL, o, 1, nil)
	localSeen := &quotaSeen{}
	lo := o
	lo.Hooks = localSeen.hooks()
	local := quota.NewLocal(lo)
	t.Cleanup(local.Close)
	for name, g := range map[string]quota.Gate{"fleet": r.gate, "local": local} {
		if n, _ := admitAll(t, 4, wxacodeKey, g); n != 4 {
			t.Errorf("%s: %d of 4 queued calls admitted, want all", name, n)
		}
	}
	// Two at once, then one every 250 ms: the waits are the same shape.
	for name, waits := range map[string][]time.Duration{"fleet": r.quota.waits(), "local": localSeen.waits()} {
		slices.Sort(waits)
		if len(waits) != 4 || waits[0] != 0 || waits[1] != 0 || waits[2] <= 0 || waits[2] > 250*time.Millisecond ||
			waits[3] <= 250*time.Millisecond || waits[3] > 500*time.Millisecond {
			t.Errorf("%s: waited %v, want 0, 0, up to 250ms, up to 500ms", name, waits)
		}
	}

	// One slot a second: the second caller would wait up to a second and
	// gives up; the third then waits no longer than the second would have.
	k := quota.Key{App: gateApp, Endpoint: wechat.PathQRCode}
	o = quota.Options{Default: quota.Limit{Rate: 1, Burst: 1}, MaxWait: 10 * time.Second}
	r = newReplica(t, srv.URL, o, 1, nil)
	if err := r.gate.Admit(t.Context(), k); err != nil {
		t.Fatalf("first call: %v", err)
	}
	for i := range 2 {
		ctx, cancel := context.WithCancel(t.Context())
		r.quota.mu.Lock()
		r.quota.onWaited = cancel
		r.quota.mu.Unlock()
		if err := r.gate.Admit(ctx, k); !errors.Is(err, context.Canceled) {
			t.Errorf("call %d given up while queued: %v, want context.Canceled", i+2, err)
		}
		cancel()
	}
	waits := r.quota.waits()
	if len(waits) != 3 || waits[1] <= 0 || waits[1] > time.Second || waits[2] <= 0 || waits[2] > time.Second {
		t.Errorf("waited %v, want 0 then two waits for the same slot, each up to 1s", waits)
	}
}

// A cool-down observed by one replica closes the endpoint for the other,
// which answers it exactly as the first would, until the window's end.
func TestCooldownObservedByOneReplicaClosesTheOther(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	// The replicas' clock: a whole second, just after a minute starts a
	// little ahead of Redis's, so the window's end is exact and lies ahead
	// of Redis's clock (it expires the keys).
	now := time.Now().Truncate(time.Minute).Add(time.Minute + time.Second)
	clock := testclock.New(now)
	tests := []struct {
		name string
		k    quota.Key
		code wechat.Errcode
		msg  string
	}{
		{"45009: until midnight China time", wxacodeKey, wechat.DailyQuota, "reach max api daily quota limit (wxa-sidecar cool-down)"},
		{"45011: until the next minute", qrcodeKey, wechat.MinuteQuota, "api minute-quota reach limit (wxa-sidecar cool-down)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := quota.Options{Default: quota.Limit{Rate: 100, Burst: 100}, Now: clock.Now}
			a, b := newReplica(t, srv.URL, o, 2, nil), newReplica(t, srv.URL, o, 2, nil)
			if err := b.gate.Admit(t.Context(), tt.k); err != nil {
				t.Fatalf("before the cool-down: %v", err)
			}
			a.gate.Observe(t.Context(), tt.k, tt.code)
			want, _ := quota.NextCooldown(tt.code, tt.k.Endpoint, nil, now, 0)
			if left, ok := a.gate.CooldownLeft(tt.k); !ok || left != want.Until.Sub(now) {
				t.Errorf("observer's CooldownLeft %v, %v; want %v", left, ok, want.Until.Sub(now))
			}
			rf := refusalOf(t, b.gate.Admit(t.Context(), tt.k))
			if *rf != (quota.Refusal{Code: tt.code, Msg: tt.msg, RetryAfter: want.Until.Sub(now)}) {
				t.Errorf("the other replica: %+v, want %d %q with RetryAfter %v (NextCooldown's end)", *rf, tt.code, tt.msg, want.Until.Sub(now))
			}
			if left, ok := b.gate.CooldownLeft(tt.k); !ok || left != want.Until.Sub(now) {
				t.Errorf("the other replica's CooldownLeft %v, %v; want the shared cool-down's", left, ok)
			}
			if got := b.quota.cooldownCalls(tt.k); !slices.Equal(got, []bool{true}) {
				t.Errorf("the other replica's Cooldown hook %v, want [true]", got)
			}
			if got := b.quota.rejections(); got != 0 {
				t.Errorf("Rejected %d, want 0: a cool-down is not a rate-limit rejection", got)
			}
			if got := a.redis.list(); got != "cooldown miss,cooldown ok" {
				t.Errorf("observer's Redis ops %q, want the memory read and the write", got)
			}
			key := a.client.Key(tt.k.App, "cd", tt.k.Endpoint)
			if ms := srv.Command(t, "PEXPIRETIME", key); ms != itoa(int(want.Until.UnixMilli())) {
				t.Errorf("%s expires at %s, want %d (PXAT the window's end)", key, ms, want.Until.UnixMilli())
			}
			// Other endpoints stay open.
			if err := b.gate.Admit(t.Context(), quota.Key{App: gateApp, Endpoint: "/wxa/other"}); err != nil {
				t.Errorf("another endpoint: %v", err)
			}
		})
	}
}

// A 45011 answered to a call sent before the fleet learned of a 45009
// must not reopen the endpoint at the next minute.
func TestALaterShorterCooldownKeepsTheLongerOne(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	now := time.Now().Truncate(time.Minute).Add(time.Minute + time.Second)
	clock := testclock.New(now)
	o := quota.Options{Default: quota.Limit{Rate: 100, Burst: 100}, Now: clock.Now}
	a, b, c := newReplica(t, srv.URL, o, 3, nil), newReplica(t, srv.URL, o, 3, nil), newReplica(t, srv.URL, o, 3, nil)
	a.gate.Observe(t.Context(), wxacodeKey, wechat.DailyQuota)
	b.gate.Observe(t.Context(), wxacodeKey, wechat.MinuteQuota)
	day, _ := quota.NextCooldown(wechat.DailyQuota, wechat.PathWxacode, nil, now, 0)
	for name, r := range map[string]*replica{"the late observer": b, "a third replica": c} {
		if rf := refusalOf(t, r.gate.Admit(t.Context(), wxacodeKey)); rf.Code != wechat.DailyQuota || rf.RetryAfter != day.Until.Sub(now) {
			t.Errorf("%s: %+v, want 45009 until %v", name, *rf, day.Until)
		}
	}
}

// getwxacodeunlimit's first 45009 closes it for a minute; a second one
// right after, seen by another replica, closes it for the day: the memory
// of the first is shared.
func TestUnlimitedStrikesAreCountedAcrossTheFleet(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	now := time.Now().Truncate(time.Minute).Add(time.Minute + time.Second)
	clock := testclock.New(now)
	o := quota.Options{Default: quota.Limit{Rate: 100, Burst: 100}, Now: clock.Now}
	a, b := newReplica(t, srv.URL, o, 2, nil), newReplica(t, srv.URL, o, 2, nil)
	a.gate.Observe(t.Context(), unlimitedKey, wechat.DailyQuota)
	first, _ := quota.NextCooldown(wechat.DailyQuota, wechat.PathUnlimited, nil, now, 0)
	clock.Set(first.Until.Add(time.Second))
	b.gate.Observe(t.Context(), unlimitedKey, wechat.DailyQuota)
	want, _ := quota.NextCooldown(wechat.DailyQuota, wechat.PathUnlimited, &first, clock.Now(), 0)
	if want.Strikes != 2 {
		t.Fatalf("NextCooldown gave %+v; the test expects the day's", want)
	}
	rf := refusalOf(t, a.gate.Admit(t.Context(), unlimitedKey))
	if rf.Code != wechat.DailyQuota || rf.RetryAfter != want.Until.Sub(clock.Now()) {
		t.Errorf("refusal %+v, want 45009 until %v (the day's, the second strike)", *rf, want.Until)
	}
}

// Redis stopped: each replica decides alone at its share of the fleet's
// limits, keeping what it observed; Redis back: one bucket again.
func TestRedisDownFallsBackToTheLocalShareAndSharingResumes(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	breakerClock := testclock.New(time.Now())
	o := quota.Options{Default: quota.Limit{Rate: 0.01, Burst: 6}}
	a, b := newReplica(t, srv.URL, o, 3, breakerClock.Now), newReplica(t, srv.URL, o, 3, breakerClock.Now)
	srv.Stop()
	if n, _ := admitAll(t, 10, wxacodeKey, a.gate); n != 2 {
		t.Errorf("Redis down: %d of 10 admitted, want 2 (a burst of 6 over FLEET_SIZE 3)", n)
	}
	if got := a.quota.rejections(); got != 8 {
		t.Errorf("Rejected %d times, want 8: the local share's hooks fire", got)
	}
	a.gate.Observe(t.Context(), unlimitedKey, wechat.MinuteQuota)
	if rf := refusalOf(t, a.gate.Admit(t.Context(), unlimitedKey)); rf.Code != wechat.MinuteQuota {
		t.Errorf("after a 45011 during the outage: %+v, want 45011", *rf)
	}
	if got := a.redis.list(); !strings.Contains(got, "breaker_open") {
		t.Errorf("Redis ops %q, want the breaker to open", got)
	}

	srv.Restart(t)
	breakerClock.Advance(breakerCoolOff + time.Second)
	// The first call after the cool-off is the breaker's probe (the
	// others meanwhile decide locally); its success closes the breaker.
	if err := a.gate.Admit(t.Context(), quota.Key{App: "wxprobe", Endpoint: wechat.PathWxacode}); err != nil {
		t.Fatalf("the probe: %v", err)
	}
	// The restarted server holds nothing: a fresh bucket of 6 for the
	// fleet, 2 of which are no longer this replica's alone.
	if n, _ := admitAll(t, 10, qrcodeKey, a.gate); n != 6 {
		t.Errorf("Redis back: %d of 10 admitted, want the fleet's burst of 6", n)
	}
	if n, _ := admitAll(t, 5, qrcodeKey, b.gate); n != 0 {
		t.Errorf("Redis back: the other replica admitted %d, want 0 (one bucket)", n)
	}
	if st := a.client.Status(); st.Breaker != "closed" {
		t.Errorf("breaker %q, want closed", st.Breaker)
	}
	if rf := refusalOf(t, a.gate.Admit(t.Context(), unlimitedKey)); rf.Code != wechat.MinuteQuota {
		t.Errorf("Redis back: %+v, want the 45011 observed during the outage still refused", *rf)
	}
}

// A Redis that accepts and never answers costs each call at most its
// timeout, then the breaker skips it: every call is decided locally.
func TestSilentRedisIsDecidedLocally(t *testing.T) {
	url := redistest.Silent(t)
	o := quota.Options{Default: quota.Limit{Rate: 0.01, Burst: 6}}
	r := newReplica(t, url, o, 3, nil)
	done := make(chan int, 1)
	go func() {
		admitted := 0
		for range 6 {
			if r.gate.Admit(context.Background(), wxacodeKey) == nil {
				admitted++
			}
		}
		r.gate.Observe(context.Background(), unlimitedKey, wechat.DailyQuota)
		done <- admitted
	}()
	select {
	case admitted := <-done:
		if admitted != 2 {
			t.Errorf("%d of 6 admitted, want the local share of 2", admitted)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Admit or Observe did not return against a silent Redis")
	}
	if rf := refusalOf(t, r.gate.Admit(t.Context(), unlimitedKey)); rf.Code != wechat.DailyQuota {
		t.Errorf("after a 45009: %+v, want 45009", *rf)
	}
	if got := r.redis.list(); !strings.HasPrefix(got, "ratelimit timeout,") || !strings.Contains(got, "breaker_open") {
		t.Errorf("Redis ops %q, want timeouts then the breaker open", got)
	}
}

// An unlimited endpoint has no bucket in Redis, but a shared cool-down
// still closes it.
func TestUnlimitedEndpointHasNoBucketButHonoursSharedCooldowns(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	o := quota.Options{Default: quota.Limit{Rate: 0.01, Burst: 1}, Endpoints: map[string]quota.Limit{wechat.PathQRCode: {}}}
	a, b := newReplica(t, srv.URL, o, 2, nil), newReplica(t, srv.URL, o, 2, nil)
	if n, _ := admitAll(t, 30, qrcodeKey, a.gate); n != 30 {
		t.Errorf("%d of 30 admitted, want all", n)
	}
	if got := srv.Command(t, "EXISTS", a.client.Key(gateApp, "rl", wechat.PathQRCode)); got != "0" {
		t.Errorf("EXISTS bucket = %s, want no bucket for an unlimited endpoint", got)
	}
	if got := a.redis.list(); strings.Contains(got, "ratelimit") {
		t.Errorf("Redis ops %q, want no rate-limit call", got)
	}
	b.gate.Observe(t.Context(), qrcodeKey, wechat.MinuteQuota)
	if rf := refusalOf(t, a.gate.Admit(t.Context(), qrcodeKey)); rf.Code != wechat.MinuteQuota || rf.RetryAfter <= 0 {
		t.Errorf("after another replica's 45011: %+v, want 45011", *rf)
	}
}

func TestStatusShowsTheFleetsLimitsAndCooldowns(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	o := quota.Options{Default: quota.Limit{Rate: 0.01, Burst: 6}, Endpoints: map[string]quota.Limit{wechat.PathQRCode: {}}}
	r := newReplica(t, srv.URL, o, 3, nil)
	admitAll(t, 2, wxacodeKey, r.gate)
	r.gate.Observe(t.Context(), unlimitedKey, wechat.DailyQuota)
	got := r.gate.Status()
	if len(got) != 2 {
		t.Fatalf("Status %+v, want two keys", got)
	}
	if s := got[1]; s.Endpoint != wechat.PathUnlimited || !s.Cooldown || s.CooldownErrcode != wechat.DailyQuota || s.Rate != 0.01 || s.Burst != 6 {
		t.Errorf("%+v, want the cool-down and the fleet's limit", s)
	}
	if s := got[0]; s.Endpoint != wechat.PathWxacode || s.Rate != 0.01 || s.Burst != 6 || s.SlotsAvailable < 3.99 || s.SlotsAvailable > 4.01 {
		t.Errorf("%+v, want the fleet's limit (not the local share) and 4 slots left", s)
	}
}

// Many goroutines on two replicas: run under -race.
func TestGateIsSafeForConcurrentUse(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	o := quota.Options{Default: quota.Limit{Rate: 1e4, Burst: 1000}, MaxWait: time.Second}
	a, b := newReplica(t, srv.URL, o, 2, nil), newReplica(t, srv.URL, o, 2, nil)
	var wg sync.WaitGroup
	for i := range 8 {
		g := []*Gate{a.gate, b.gate}[i%2]
		wg.Go(func() {
			for range 50 {
				g.Admit(t.Context(), wxacodeKey)
				g.Observe(t.Context(), wxacodeKey, wechat.OK)
				g.CooldownLeft(wxacodeKey)
				g.Status()
			}
			g.Observe(t.Context(), quota.Key{App: "wxother", Endpoint: wechat.PathWxacode}, wechat.MinuteQuota)
		})
	}
	wg.Wait()
	for _, g := range []*Gate{a.gate, b.gate} {
		if err := g.Admit(t.Context(), quota.Key{App: "wxother", Endpoint: wechat.PathWxacode}); err == nil {
			t.Error("the cool-down observed is not in force")
		}
	}
}
