package quota

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/internal/testclock"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

const demoApp = "wxdemo"

var (
	unlimitedKey = Key{demoApp, wechat.PathUnlimited}
	wxacodeKey   = Key{demoApp, wechat.PathWxacode}
	secCheckKey  = Key{demoApp, "/wxa/msg_sec_check"}
)

// recorder is a Local's Hooks: what the metrics would have seen.
type recorder struct {
	mu        sync.Mutex
	rejected  map[Key]int
	waited    []time.Duration
	cooldowns map[Key][]bool // every Hooks.Cooldown call, in order
}

func (r *recorder) hooks() Hooks {
	r.rejected, r.cooldowns = map[Key]int{}, map[Key][]bool{}
	return Hooks{
		Rejected: func(k Key) { r.mu.Lock(); r.rejected[k]++; r.mu.Unlock() },
		Waited:   func(k Key, d time.Duration) { r.mu.Lock(); r.waited = append(r.waited, d); r.mu.Unlock() },
		Cooldown: func(k Key, active bool) { r.mu.Lock(); r.cooldowns[k] = append(r.cooldowns[k], active); r.mu.Unlock() },
	}
}

// gaugeOf is what quota_cooldown_active would show for k.
func (r *recorder) gaugeOf(k Key) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ev := r.cooldowns[k]; len(ev) > 0 && ev[len(ev)-1] {
		return 1
	}
	return 0
}

// testLocal is a Local on c's clock whose cool-down timers are ts and whose
// hooks report to r.
func testLocal(t *testing.T, o Options, c *testclock.Clock, r *recorder, ts *testclock.Timers) *Local {
	t.Helper()
	o.Now = c.Now
	o.Hooks = r.hooks()
	l := NewLocal(o)
	l.afterFunc = ts.AfterFunc
	t.Cleanup(l.Close)
	return l
}

// fires is a timer that has already fired: the wait is over at once.
func fires(d time.Duration) (<-chan time.Time, func() bool) {
	ch := make(chan time.Time, 1)
	ch <- base.Add(d)
	return ch, func() bool { return false }
}

// never is a timer that never fires: only ctx ends the wait.
func never(time.Duration) (<-chan time.Time, func() bool) { return nil, func() bool { return true } }

func asRefusal(t *testing.T, err error) *Refusal {
	t.Helper()
	var r *Refusal
	if !errors.As(err, &r) {
		t.Fatalf("err = %v, want a *Refusal", err)
	}
	return r
}

func TestRateLimitBoundsUpstreamCalls(t *testing.T) {
	c, r := testclock.New(base), &recorder{}
	l := testLocal(t, Options{Default: Limit{Rate: 5, Burst: 5}}, c, r, &testclock.Timers{})
	admitted := 0
	for range 40 {
		err := l.admitAt(t.Context(), unlimitedKey, base, never)
		if err == nil {
			admitted++
			continue
		}
		if rf := asRefusal(t, err); rf.Code != wechat.MinuteQuota || rf.Msg != "api minute-quota reach limit (wxa-sidecar UPSTREAM_RPS)" {
			t.Errorf("refusal %+v, want 45011 saying UPSTREAM_RPS", rf)
		}
	}
	if admitted != 5 {
		t.Errorf("%d calls admitted at one instant, want the burst of 5", admitted)
	}
	if got := r.rejected[unlimitedKey]; got != 35 {
		t.Errorf("Rejected %d times, want 35", got)
	}
	admitted = 0
	for range 40 {
		if l.admitAt(t.Context(), unlimitedKey, base.Add(time.Second), never) == nil {
			admitted++
		}
	}
	if admitted != 5 {
		t.Errorf("%d calls admitted a second later, want the 5 slots of that second", admitted)
	}
}

// A client told when to come back can pace itself.
func TestRateRefusalRetryAfterIsTheNextSlot(t *testing.T) {
	tests := []struct {
		name  string
		limit Limit
		want  time.Duration
	}{
		{"one slot per 100 s", Limit{Rate: 0.01, Burst: 1}, 100 * time.Second},
		{"the next slot in 200 ms: at least a second", Limit{Rate: 5, Burst: 1}, time.Second},
		{"the next slot in 2.5 s", Limit{Rate: 0.4, Burst: 1}, 2500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := testLocal(t, Options{Default: tt.limit}, testclock.New(base), &recorder{}, &testclock.Timers{})
			if err := l.admitAt(t.Context(), secCheckKey, base, never); err != nil {
				t.Fatalf("first call: %v", err)
			}
			rf := asRefusal(t, l.admitAt(t.Context(), secCheckKey, base, never))
			if rf.RetryAfter != tt.want || rf.Code != wechat.MinuteQuota {
				t.Errorf("refusal %+v, want 45011 with RetryAfter %v", rf, tt.want)
			}
		})
	}
}

func TestRateLimitWaitsWithinMaxWait(t *testing.T) {
	r := &recorder{}
	l := testLocal(t, Options{Default: Limit{Rate: 20, Burst: 1}, MaxWait: 2 * time.Second}, testclock.New(base), r, &testclock.Timers{})
	var asked []time.Duration
	timer := func(d time.Duration) (<-chan time.Time, func() bool) {
		asked = append(asked, d)
		return fires(d)
	}
	for i := range 3 {
		if err := l.admitAt(t.Context(), secCheckKey, base, timer); err != nil {
			t.Errorf("call %d queued within MaxWait was refused: %v", i, err)
		}
	}
	want := []time.Duration{50 * time.Millisecond, 100 * time.Millisecond}
	if !slices.Equal(asked, want) {
		t.Errorf("waited on timers of %v, want %v", asked, want)
	}
	if want := []time.Duration{0, 50 * time.Millisecond, 100 * time.Millisecond}; !slices.Equal(r.waited, want) {
		t.Errorf("Waited reported %v, want %v (every admitted call, 0 included)", r.waited, want)
	}
	if len(r.rejected) != 0 {
		t.Errorf("Rejected %v, want none", r.rejected)
	}
}

func TestZeroMaxWaitRefusesAtOnce(t *testing.T) {
	r := &recorder{}
	l := testLocal(t, Options{Default: Limit{Rate: 1000, Burst: 1}}, testclock.New(base), r, &testclock.Timers{})
	l.admitAt(t.Context(), secCheckKey, base, never)
	rf := asRefusal(t, l.admitAt(t.Context(), secCheckKey, base, never))
	if rf.RetryAfter != time.Second {
		t.Errorf("RetryAfter %v, want 1s (never less)", rf.RetryAfter)
	}
	if len(r.waited) != 1 {
		t.Errorf("Waited %v, want only the admitted call", r.waited)
	}
}

// A caller that gives up while queueing hands its slot to the next one.
func TestCancelledWaitReturnsTheSlot(t *testing.T) {
	l := testLocal(t, Options{Default: Limit{Rate: 1, Burst: 1}, MaxWait: time.Second}, testclock.New(base), &recorder{}, &testclock.Timers{})
	if err := l.admitAt(t.Context(), secCheckKey, base, never); err != nil {
		t.Fatalf("first call: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	queued, done := make(chan struct{}), make(chan error, 1)
	// The second caller queues for the slot a second ahead; its timer never
	// fires, so only its ctx ends the wait.
	go func() {
		done <- l.admitAt(ctx, secCheckKey, base, func(d time.Duration) (<-chan time.Time, func() bool) {
			close(queued)
			return never(d)
		})
	}()
	select {
	case <-queued:
	case err := <-done:
		t.Fatalf("the second caller did not queue: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the second caller did not queue within 10s")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled caller got %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled caller kept waiting")
	}
	// Had the slot not come back, the next would be two seconds away,
	// beyond MaxWait.
	if err := l.admitAt(t.Context(), secCheckKey, base, fires); err != nil {
		t.Errorf("the caller after a cancelled one: %v, want the returned slot", err)
	}
}

func TestZeroRateIsUnlimited(t *testing.T) {
	r := &recorder{}
	l := testLocal(t, Options{}, testclock.New(base), r, &testclock.Timers{})
	for i := range 1000 {
		if err := l.admitAt(t.Context(), secCheckKey, base, never); err != nil {
			t.Fatalf("call %d: %v, want every call admitted", i, err)
		}
	}
	if len(r.rejected) != 0 || len(r.waited) != 1000 || slices.Max(r.waited) != 0 {
		t.Errorf("Rejected %v, %d waits up to %v; want none rejected, 1000 waits of 0", r.rejected, len(r.waited), slices.Max(r.waited))
	}
	if got := l.statusAt(base); len(got) != 1 || got[0].Rate != 0 || got[0].SlotsAvailable != 0 {
		t.Errorf("Status %+v, want one entry, rate 0 (unlimited)", got)
	}
}

func TestEndpointsOverrideTheDefault(t *testing.T) {
	endpoints := map[string]Limit{wechat.PathUnlimited: {Rate: 1, Burst: 2}, "/wxa/generatescheme": {Rate: 0}}
	l := testLocal(t, Options{Default: Limit{Rate: 1, Burst: 1}, Endpoints: endpoints}, testclock.New(base), &recorder{}, &testclock.Timers{})
	endpoints[wechat.PathUnlimited] = Limit{Rate: 1, Burst: 100} // the caller's map is not the gate's
	admitted := func(k Key, n int) int {
		ok := 0
		for range n {
			if l.admitAt(t.Context(), k, base, never) == nil {
				ok++
			}
		}
		return ok
	}
	for _, tt := range []struct {
		k    Key
		want int
	}{
		{unlimitedKey, 2},
		{Key{"wxother", wechat.PathUnlimited}, 2}, // each app its own bucket
		{wxacodeKey, 1},
		{Key{demoApp, "/wxa/generatescheme"}, 10}, // rate 0 overrides the default: unlimited
	} {
		if got := admitted(tt.k, 10); got != tt.want {
			t.Errorf("%v: %d of 10 admitted at one instant, want %d", tt.k, got, tt.want)
		}
	}
}

func TestQuotaErrcodeStopsUpstreamForThatEndpoint(t *testing.T) {
	c, r := testclock.New(base), &recorder{}
	l := testLocal(t, Options{}, c, r, &testclock.Timers{})
	l.Observe(t.Context(), wxacodeKey, wechat.DailyQuota)
	rf := asRefusal(t, l.Admit(t.Context(), wxacodeKey))
	want := Refusal{Code: wechat.DailyQuota, Msg: "reach max api daily quota limit (wxa-sidecar cool-down)",
		RetryAfter: midnightChina.Sub(base)}
	if *rf != want {
		t.Errorf("during the cool-down: %+v, want %+v", *rf, want)
	}
	if got := r.gaugeOf(wxacodeKey); got != 1 {
		t.Errorf("quota_cooldown_active %v, want 1", got)
	}
	if len(r.rejected) != 0 {
		t.Errorf("Rejected %v: a cool-down is not a rate-limit rejection", r.rejected)
	}
	// Other endpoints and other apps keep working.
	for _, k := range []Key{unlimitedKey, {"wxother", wechat.PathWxacode}} {
		if err := l.Admit(t.Context(), k); err != nil {
			t.Errorf("%v during another key's cool-down: %v", k, err)
		}
		if got := r.gaugeOf(k); got != 0 {
			t.Errorf("%v: quota_cooldown_active %v, want 0", k, got)
		}
	}
}

func TestMinuteCooldownSaysSo(t *testing.T) {
	l := testLocal(t, Options{}, testclock.New(base), &recorder{}, &testclock.Timers{})
	l.Observe(t.Context(), secCheckKey, wechat.MinuteQuota)
	rf := asRefusal(t, l.Admit(t.Context(), secCheckKey))
	want := Refusal{Code: wechat.MinuteQuota, Msg: "api minute-quota reach limit (wxa-sidecar cool-down)", RetryAfter: 45 * time.Second}
	if *rf != want {
		t.Errorf("%+v, want %+v", *rf, want)
	}
}

// Past the lifetime cap WeChat refuses only parameters it has not generated
// before: 45029 must not close the endpoint (the code path remembers it per
// request).
func TestLifetimeCapStartsNoCooldown(t *testing.T) {
	c, r, ts := testclock.New(base), &recorder{}, &testclock.Timers{}
	var logs bytes.Buffer
	l := testLocal(t, Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))}, c, r, ts)
	for _, code := range []wechat.Errcode{wechat.LifetimeQuota, wechat.OK, wechat.SystemBusy, wechat.InvalidCredential, wechat.NoPermission} {
		l.Observe(t.Context(), wxacodeKey, code)
	}
	if err := l.Admit(t.Context(), wxacodeKey); err != nil {
		t.Errorf("Admit after 45029: %v, want nil", err)
	}
	if _, ok := l.CooldownLeft(wxacodeKey); ok || len(r.cooldowns) != 0 || len(ts.Live()) != 0 {
		t.Errorf("a cool-down started: CooldownLeft %v, hooks %v, %d timers", ok, r.cooldowns, len(ts.Live()))
	}
	for _, s := range l.Status() {
		if s.Cooldown {
			t.Errorf("Status shows a cool-down: %+v", s)
		}
	}
	if logs.Len() != 0 {
		t.Errorf("logged %s, want nothing", logs.String())
	}
}

func TestQuotaCooldownWindows(t *testing.T) {
	tests := []struct {
		name      string
		endpoint  string
		errcodes  []wechat.Errcode
		cooldown  time.Duration
		wantUntil time.Time
	}{
		{"45011 until the next minute", wechat.PathWxacode, []wechat.Errcode{45011}, 0, nextMinuteOf},
		{"45009 until midnight China time", wechat.PathWxacode, []wechat.Errcode{45009}, 0, midnightChina},
		{"45009 with QUOTA_COOLDOWN", wechat.PathWxacode, []wechat.Errcode{45009}, time.Hour, base.Add(time.Hour)},
		{"45009 on unlimited: a minute first", wechat.PathUnlimited, []wechat.Errcode{45009}, 0, nextMinuteOf},
		{"45009 on unlimited twice: the day", wechat.PathUnlimited, []wechat.Errcode{45009, 45009}, 0, midnightChina},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, r, ts := testclock.New(base), &recorder{}, &testclock.Timers{}
			l := testLocal(t, Options{DailyCooldown: tt.cooldown}, c, r, ts)
			k := Key{demoApp, tt.endpoint}
			for i, code := range tt.errcodes {
				if i > 0 {
					// "Right after": the first cool-down has just ended.
					left, _ := l.CooldownLeft(k)
					c.Set(c.Now().Add(left + time.Second))
				}
				l.Observe(t.Context(), k, code)
			}
			left, ok := l.CooldownLeft(k)
			if !ok || !c.Now().Add(left).Equal(tt.wantUntil) {
				t.Errorf("cool-down until %v (active %v), want %v", c.Now().Add(left), ok, tt.wantUntil)
			}
			rf := asRefusal(t, l.Admit(t.Context(), k))
			if rf.Code != tt.errcodes[len(tt.errcodes)-1] || rf.RetryAfter != left {
				t.Errorf("Admit during the cool-down: %+v, want errcode %d and RetryAfter %v, what CooldownLeft says",
					rf, tt.errcodes[len(tt.errcodes)-1], left)
			}
			c.Set(tt.wantUntil.Add(-time.Nanosecond))
			if err := l.Admit(t.Context(), k); err == nil {
				t.Error("admitted a nanosecond before the window ends")
			}
			c.Set(tt.wantUntil)
			if err := l.Admit(t.Context(), k); err != nil {
				t.Errorf("Admit after the window: %v, want nil", err)
			}
			if left, ok := l.CooldownLeft(k); ok {
				t.Errorf("CooldownLeft after the window: %v, want none", left)
			}
		})
	}
}

// quota_cooldown_active goes back to 0 when a cool-down ends, and only
// then: a cool-down replaced by a later one does not end it early.
func TestCooldownHookReportsTheEnd(t *testing.T) {
	c, r, ts := testclock.New(base), &recorder{}, &testclock.Timers{}
	l := testLocal(t, Options{}, c, r, ts)
	l.Observe(t.Context(), unlimitedKey, wechat.DailyQuota) // a minute
	first := ts.Live()
	if len(first) != 1 || first[0].D != 45*time.Second {
		t.Fatalf("timers %v, want one for the 45 s to the next minute", first)
	}
	c.Set(nextMinuteOf.Add(time.Second))
	l.Observe(t.Context(), unlimitedKey, wechat.DailyQuota) // the day
	if live := ts.Live(); len(live) != 1 || live[0] == first[0] || live[0].D != midnightChina.Sub(c.Now()) {
		t.Fatalf("timers %v, want the first stopped and one to midnight China time", live)
	}
	// The replaced cool-down's timer may fire anyway (it raced its Stop).
	ts.Fire(first[0])
	if got := r.gaugeOf(unlimitedKey); got != 1 {
		t.Errorf("quota_cooldown_active %v after the replaced cool-down's timer, want 1", got)
	}
	ts.Fire(ts.Live()[0])
	if got := r.gaugeOf(unlimitedKey); got != 0 {
		t.Errorf("quota_cooldown_active %v after the cool-down ended, want 0", got)
	}
	if want := []bool{true, true, false}; !slices.Equal(r.cooldowns[unlimitedKey], want) {
		t.Errorf("Cooldown hook calls %v, want %v", r.cooldowns[unlimitedKey], want)
	}
}

func TestCloseStopsTheTimers(t *testing.T) {
	c, r, ts := testclock.New(base), &recorder{}, &testclock.Timers{}
	l := testLocal(t, Options{}, c, r, ts)
	l.Observe(t.Context(), wxacodeKey, wechat.DailyQuota)
	l.Observe(t.Context(), unlimitedKey, wechat.MinuteQuota)
	l.Close()
	if live := ts.Live(); len(live) != 0 {
		t.Errorf("%d timers left after Close", len(live))
	}
	l.Observe(t.Context(), secCheckKey, wechat.MinuteQuota)
	if live := ts.Live(); len(live) != 0 {
		t.Errorf("a timer started after Close")
	}
	if err := l.Admit(t.Context(), secCheckKey); err == nil {
		t.Error("a closed gate forgot the cool-down it was told of")
	}
}

func TestCooldownIsLogged(t *testing.T) {
	var logs bytes.Buffer
	l := testLocal(t, Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))}, testclock.New(base), &recorder{}, &testclock.Timers{})
	l.Observe(t.Context(), wxacodeKey, wechat.DailyQuota)
	var line map[string]any
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatalf("log %q: %v", logs.String(), err)
	}
	want := map[string]any{"level": "WARN", "msg": "WeChat quota reached: calls answered locally until the window resets",
		"app": demoApp, "endpoint": wechat.PathWxacode, "errcode": float64(45009)}
	delete(line, "time")
	until, _ := line["until"].(string)
	if at, err := time.Parse(time.RFC3339Nano, until); err != nil || !at.Equal(midnightChina) {
		t.Errorf("logged until %q, want %v", until, midnightChina)
	}
	delete(line, "until")
	if !maps.Equal(line, want) {
		t.Errorf("logged %v, want %v", line, want)
	}
}

func TestStatusShowsBucketsAndCooldowns(t *testing.T) {
	c := testclock.New(base)
	l := testLocal(t, Options{Default: Limit{Rate: 2, Burst: 4}, Endpoints: map[string]Limit{wechat.PathQRCode: {}}}, c, &recorder{}, &testclock.Timers{})
	l.Admit(t.Context(), wxacodeKey)
	l.Admit(t.Context(), Key{demoApp, wechat.PathQRCode})
	l.Admit(t.Context(), Key{"wxa", wechat.PathWxacode})
	l.Observe(t.Context(), unlimitedKey, wechat.MinuteQuota) // a cool-down without a bucket
	l.Observe(t.Context(), wxacodeKey, wechat.DailyQuota)
	c.Set(base.Add(500 * time.Millisecond))
	want := []Status{
		{App: "wxa", Endpoint: wechat.PathWxacode, Rate: 2, Burst: 4, SlotsAvailable: 4},
		{App: demoApp, Endpoint: wechat.PathQRCode},
		{App: demoApp, Endpoint: wechat.PathWxacode, Rate: 2, Burst: 4, SlotsAvailable: 4, Cooldown: true,
			CooldownErrcode: wechat.DailyQuota, CooldownUntil: midnightChina},
		{App: demoApp, Endpoint: wechat.PathUnlimited, Cooldown: true, CooldownErrcode: wechat.MinuteQuota, CooldownUntil: nextMinuteOf},
	}
	sameStatus := func(a, b Status) bool {
		eq := a.CooldownUntil.Equal(b.CooldownUntil)
		a.CooldownUntil, b.CooldownUntil = time.Time{}, time.Time{}
		return eq && a == b
	}
	if got := l.Status(); !slices.EqualFunc(got, want, sameStatus) {
		t.Errorf("Status\n got %+v\nwant %+v", got, want)
	}
	c.Set(nextMinuteOf)
	if got := l.Status(); len(got) != 3 {
		t.Errorf("Status after the minute's cool-down ended: %+v, want it gone", got)
	}
	// /status keeps today's field names.
	b, err := json.Marshal(l.Status()[2])
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	json.Unmarshal(b, &fields)
	keys := slices.Sorted(maps.Keys(fields))
	wantKeys := []string{"app", "burst", "cooldown", "cooldown_errcode", "cooldown_until", "endpoint", "rate_per_second", "slots_available"}
	if !slices.Equal(keys, wantKeys) {
		t.Errorf("JSON fields %v, want %v", keys, wantKeys)
	}
	if b, _ := json.Marshal(l.Status()[0]); strings.Contains(string(b), "cooldown_") {
		t.Errorf("%s: a key without a cool-down shows its fields", b)
	}
}

// A Local holds state only for the keys callers pass it, and only once
// they admit a call or a quota errcode: asking about a key, or an answer
// that starts no cool-down, grows nothing.
func TestStateIsBoundedByTheKeysPassed(t *testing.T) {
	l := testLocal(t, Options{Default: Limit{Rate: 1, Burst: 1}}, testclock.New(base), &recorder{}, &testclock.Timers{})
	for i := range 100 {
		k := Key{demoApp, strings.Repeat("x", i)}
		l.CooldownLeft(k)
		l.Observe(t.Context(), k, wechat.LifetimeQuota)
		l.Observe(t.Context(), k, wechat.OK)
	}
	if got := l.Status(); len(got) != 0 {
		t.Errorf("Status %+v, want nothing held", got)
	}
	for range 10 {
		for _, endpoint := range []string{wechat.PathUnlimited, wechat.Endpoint("/wxa/unknown"), wechat.Endpoint("/wxa/other-unknown")} {
			l.Admit(t.Context(), Key{demoApp, endpoint})
		}
	}
	if got := len(l.Status()); got != 2 {
		t.Errorf("%d keys held, want 2 (unknown paths share wechat.EndpointOther)", got)
	}
}

// Many goroutines on one gate: run under -race.
func TestLocalIsSafeForConcurrentUse(t *testing.T) {
	l := NewLocal(Options{Default: Limit{Rate: 1e6, Burst: 1000}, MaxWait: time.Second,
		Hooks: Hooks{Cooldown: func(Key, bool) {}, Waited: func(Key, time.Duration) {}}})
	defer l.Close()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			k := Key{demoApp, []string{wechat.PathUnlimited, wechat.PathWxacode}[i%2]}
			for range 200 {
				l.Admit(t.Context(), k)
				l.Observe(t.Context(), k, wechat.OK)
				l.CooldownLeft(k)
				l.Status()
			}
			l.Observe(t.Context(), Key{"wxother", k.Endpoint}, wechat.MinuteQuota)
		})
	}
	wg.Wait()
	if _, ok := l.CooldownLeft(Key{"wxother", wechat.PathWxacode}); !ok {
		t.Error("the cool-down observed is not active")
	}
}
