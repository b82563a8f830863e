package quota

import (
	"context"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// Limit is a token bucket: Rate slots a second, Burst at once. A zero Rate
// means unlimited.
type Limit struct {
	Rate  float64
	Burst int
}

// Options configures a Local gate.
type Options struct {
	// Default applies to each app and endpoint separately (each WeChat API
	// has a quota of its own).
	Default Limit
	// Endpoints overrides Default for the named endpoints.
	Endpoints map[string]Limit
	// MaxWait is how long a caller may queue for a slot; 0 refuses at once.
	MaxWait time.Duration
	// DailyCooldown is how long 45009 (daily quota) closes an endpoint; 0
	// means until the next midnight China time, when WeChat resets it.
	DailyCooldown time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger gets a warning for every cool-down started; nil discards.
	Logger *slog.Logger
	Hooks  Hooks
}

// Limit is the limit for endpoint: its own in Endpoints, else Default.
func (o Options) Limit(endpoint string) Limit {
	if lim, ok := o.Endpoints[endpoint]; ok {
		return lim
	}
	return o.Default
}

// Share is o divided among n replicas, each holding 1/n of every limit: the
// rate over n and the burst over n, rounded down but at least 1 (a bucket
// must hold a call); unlimited stays unlimited. It is a replica's part of
// limits meant for a whole fleet, while the fleet cannot coordinate.
func (o Options) Share(n int) Options {
	if n <= 1 {
		o.Endpoints = maps.Clone(o.Endpoints)
		return o
	}
	share := func(l Limit) Limit {
		if l.Rate <= 0 {
			return l
		}
		return Limit{Rate: l.Rate / float64(n), Burst: max(l.Burst/n, 1)}
	}
	o.Default = share(o.Default)
	endpoints := make(map[string]Limit, len(o.Endpoints))
	for e, l := range o.Endpoints {
		endpoints[e] = share(l)
	}
	o.Endpoints = endpoints
	return o
}

// Hooks report what a Local gate does, for metrics. A nil func is not
// called. They are called synchronously, some under the gate's lock: they
// must be quick and must not call back into the gate.
type Hooks struct {
	// Rejected: a call for k was refused because no rate-limit slot was
	// free within MaxWait (not for a cool-down).
	Rejected func(k Key)
	// Waited: a call for k was granted a slot after queueing d (0 when one
	// was free), reported before the wait.
	Waited func(k Key, d time.Duration)
	// Cooldown: a cool-down on k started (active) or ended (!active).
	Cooldown func(k Key, active bool)
}

// Local is a Gate in memory, for one process: x/time/rate token buckets
// and cool-downs per Key. Its maps grow with the keys callers pass and
// nothing else (see Key).
type Local struct {
	opts Options
	now  func() time.Time
	log  *slog.Logger
	// afterFunc starts the timer that ends a cool-down's Hooks.Cooldown;
	// time.AfterFunc but in tests, which fire it themselves.
	afterFunc func(d time.Duration, f func()) (stop func() bool)

	mu        sync.Mutex
	closed    bool
	buckets   map[Key]*rate.Limiter
	cooldowns map[Key]*cooldown
	// latest is the latest instant a bucket was given (see latestAt).
	latest time.Time
	// standIns are the buckets deciding in place of a shared one (see
	// AdmitInstead); they grow with the keys callers pass, like buckets.
	standIns map[Key]*standIn
}

// standIn is a bucket's record of deciding in place of a shared bucket:
// what the shared bucket must be charged for it.
type standIn struct {
	// active: the bucket has decided since the shared one last answered.
	active bool
	// since and start: when it began to, and the slots it held then (or
	// was meant to, before rounding); burst: the most it counts refill to.
	since        time.Time
	start, burst float64
	// charged is what Settle has taken of this period's grants so far.
	charged float64
	// owed is what was taken but did not reach the shared bucket (Owe),
	// and what an ended period granted after its last Settle.
	owed float64
}

// cooldown is a Cooldown in force and the timer that reports its end.
type cooldown struct {
	Cooldown
	stop func() bool // nil once the gate is closed
}

// NewLocal returns a gate with o's limits and no cool-down. Close it to
// stop its timers.
func NewLocal(o Options) *Local {
	o.Endpoints = maps.Clone(o.Endpoints)
	o.MaxWait = max(o.MaxWait, 0)
	l := &Local{opts: o, now: o.Now, log: o.Logger,
		afterFunc: func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop },
		buckets:   map[Key]*rate.Limiter{}, cooldowns: map[Key]*cooldown{}, standIns: map[Key]*standIn{}}
	if l.now == nil {
		l.now = time.Now
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	return l
}

// bucket returns k's limiter, made on first use. l.mu must be held.
func (l *Local) bucket(k Key) *rate.Limiter {
	b := l.buckets[k]
	if b == nil {
		lim := l.opts.Limit(k.Endpoint)
		if lim.Rate <= 0 {
			b = rate.NewLimiter(rate.Inf, 0)
		} else {
			b = rate.NewLimiter(rate.Limit(lim.Rate), max(lim.Burst, 1))
		}
		l.buckets[k] = b
	}
	return b
}

// Admit returns nil once the call for k may go upstream: no cool-down is
// active and a rate-limit slot is free within MaxWait, queueing for it if
// need be. Otherwise it returns a *Refusal in WeChat's words: the
// cool-down's errcode, or 45011 with the time to the next slot. If ctx
// ends while queueing, the slot goes back to the bucket and Admit returns
// ctx.Err().
func (l *Local) Admit(ctx context.Context, k Key) error {
	return l.admitAt(ctx, k, l.now(), newTimer)
}

// StandIn says how a bucket starts to decide in place of a shared one
// (AdmitInstead) and what it stands for.
type StandIn struct {
	// Takeover: the shared bucket was in use. The bucket starts with Slots
	// (at most 0): empty, or in debt for the calls the shared bucket had
	// already queued (this replica's part of them), since the shared one
	// may have just been drained and a full local bucket would add a burst
	// on top of it. Without Takeover (the shared bucket was never reached,
	// as at a start with Redis down) it starts as it is, full when new.
	Takeover bool
	Slots    float64
	// Burst is this replica's part of the shared bucket's burst, not
	// rounded (Options.Share rounds the bucket's own down): the most the
	// shared bucket's part would have refilled to, which Settle charges
	// against. 0 means the bucket's own burst.
	Burst float64
}

// AdmitInstead is Admit for a gate whose shared bucket for k (in Redis)
// could not be asked: this bucket decides in its place, from the first
// call to Rejoin, starting as si says.
func (l *Local) AdmitInstead(ctx context.Context, k Key, si StandIn) error {
	return l.admitInsteadAt(ctx, k, si, l.now(), newTimer)
}

func (l *Local) admitInsteadAt(ctx context.Context, k Key, si StandIn, now time.Time, newTimer func(time.Duration) (<-chan time.Time, func() bool)) error {
	return l.admit(ctx, k, now, newTimer, func(now time.Time) {
		s := l.standIn(k)
		if s.active {
			return
		}
		b := l.bucket(k)
		start := b.TokensAt(now)
		if si.Takeover && b.Limit() != rate.Inf {
			start = min(si.Slots, 0)
			b = rate.NewLimiter(b.Limit(), b.Burst())
			b.AllowN(now, b.Burst()) // empty at now
			// Then in debt, rounded up: queued reservations, a burst at
			// a time.
			for debt := int(math.Ceil(-start)); debt > 0; debt -= b.Burst() {
				b.ReserveN(now, min(debt, b.Burst()))
			}
			l.buckets[k] = b
		}
		burst := si.Burst
		if burst <= 0 {
			burst = float64(b.Burst())
		}
		s.active, s.since, s.start, s.burst, s.charged = true, now, start, burst, 0
	})
}

// Settle returns what the shared bucket must be charged, in slots, before
// it decides again: what k's bucket granted in its place (AdmitInstead)
// beyond what it would have refilled anyway (the slots it would hold had
// it granted nothing, less those it holds) and not charged yet, plus what
// is owed. A gate calls it when it is about to ask the shared bucket, and
// sends the charge with the request, so that the shared bucket never offers
// again what the local one already gave. If the request fails, it gives
// the charge back with Owe; if the shared bucket answers, it calls Rejoin.
func (l *Local) Settle(k Key) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.standIns[k]
	if s == nil {
		return 0
	}
	fresh := l.unchargedAt(k, s, l.latestAt(l.now()))
	charge := s.owed + fresh
	s.charged += fresh
	s.owed = 0
	return charge
}

// Owe adds slots to what the next Settle of k returns: a charge Settle
// returned that did not reach the shared bucket.
func (l *Local) Owe(k Key, slots float64) {
	if slots <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.standIn(k).owed += slots
}

// Rejoin ends the period in which k's bucket decided in place of the
// shared one: the shared bucket has answered. What was granted since the
// last Settle is owed to the next; the next AdmitInstead starts a new
// period (from empty, on a takeover).
func (l *Local) Rejoin(k Key) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.standIns[k]
	if s == nil || !s.active {
		return
	}
	s.owed += l.unchargedAt(k, s, l.latestAt(l.now()))
	s.active = false
}

// standIn is k's record, made on first use. l.mu must be held.
func (l *Local) standIn(k Key) *standIn {
	s := l.standIns[k]
	if s == nil {
		s = &standIn{}
		l.standIns[k] = s
	}
	return s
}

// unchargedAt is what k's bucket has granted in the shared one's place,
// beyond its refill, that Settle has not taken yet. l.mu must be held.
func (l *Local) unchargedAt(k Key, s *standIn, now time.Time) float64 {
	b := l.buckets[k]
	if !s.active || b == nil || b.Limit() == rate.Inf {
		return 0
	}
	untouched := min(s.burst, s.start+float64(b.Limit())*now.Sub(s.since).Seconds())
	return max(untouched-b.TokensAt(now)-s.charged, 0)
}

func newTimer(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}

// admitAt is Admit at the instant now, queueing on timers from newTimer.
//
// Everything that touches a bucket happens under l.mu, at an instant that
// never goes back (see latestAt): x/time/rate reads an instant older than
// its last as "no time passed" and then counts the time since that older
// instant again at the next call, so out-of-order instants would admit
// more than the limit. A refused reservation is cancelled before l.mu is
// released, while it is still the bucket's latest: x/time/rate gives a
// slot back only if no reservation was made after it, so a cancel after
// the unlock lost the slot whenever another caller came in between, and
// under contention the bucket sank (9 calls in 3 s at 10/s, burst 9).
func (l *Local) admitAt(ctx context.Context, k Key, now time.Time, newTimer func(time.Duration) (<-chan time.Time, func() bool)) error {
	return l.admit(ctx, k, now, newTimer, nil)
}

// admit is admitAt, running prepare (when not nil) under l.mu before the
// bucket is asked, at the instant it is asked.
func (l *Local) admit(ctx context.Context, k Key, now time.Time, newTimer func(time.Duration) (<-chan time.Time, func() bool), prepare func(now time.Time)) error {
	l.mu.Lock()
	now = l.latestAt(now)
	if cd := l.cooldowns[k]; cd != nil && now.Before(cd.Until) {
		l.mu.Unlock()
		return cd.Refusal(now)
	}
	if prepare != nil {
		prepare(now)
	}
	r := l.bucket(k).ReserveN(now, 1)
	delay := r.DelayFrom(now)
	refused := !r.OK() || delay > l.opts.MaxWait
	if refused {
		r.CancelAt(now)
	}
	l.mu.Unlock()
	if refused {
		if l.opts.Hooks.Rejected != nil {
			l.opts.Hooks.Rejected(k)
		}
		return RateRefusal(delay)
	}
	if l.opts.Hooks.Waited != nil {
		l.opts.Hooks.Waited(k, delay)
	}
	if delay == 0 {
		return nil
	}
	ch, stop := newTimer(delay)
	defer stop()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		// Give the slot back, so the next caller need not wait for it.
		l.mu.Lock()
		r.CancelAt(l.latestAt(l.now()))
		l.mu.Unlock()
		return ctx.Err()
	}
}

// latestAt is now, or the latest instant the buckets have been given if
// now is older: an instant read before another caller's may reach l.mu
// after it. l.mu must be held.
func (l *Local) latestAt(now time.Time) time.Time {
	if now.Before(l.latest) {
		return l.latest
	}
	l.latest = now
	return now
}

// Observe starts a cool-down on k when code is a quota errcode that closes
// the whole endpoint (see NextCooldown); any other code changes nothing.
func (l *Local) Observe(_ context.Context, k Key, code wechat.Errcode) {
	l.observeAt(k, code, l.now())
}

// observeAt is Observe at the instant now.
func (l *Local) observeAt(k Key, code wechat.Errcode, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	prev := l.cooldowns[k]
	var prevCooldown *Cooldown
	if prev != nil {
		prevCooldown = &prev.Cooldown
	}
	next, ok := NextCooldown(code, k.Endpoint, prevCooldown, now, l.opts.DailyCooldown)
	if !ok {
		return
	}
	for _, closed := range Closes(k, code) {
		if closed == k {
			l.hold(k, next, now)
		} else if cur := l.cooldowns[closed]; cur == nil || !now.Before(cur.Until) || cur.Until.Before(next.Until) {
			l.hold(closed, next, now)
		}
	}
	l.log.Warn("WeChat quota reached: calls answered locally until the window resets",
		"app", k.App, "endpoint", k.Endpoint, "errcode", int(code), "until", next.Until)
}

// hold makes next k's cool-down, replacing any other. l.mu must be held.
func (l *Local) hold(k Key, next Cooldown, now time.Time) {
	if prev := l.cooldowns[k]; prev != nil && prev.stop != nil {
		prev.stop()
	}
	cd := &cooldown{Cooldown: next}
	if l.opts.Hooks.Cooldown != nil {
		l.opts.Hooks.Cooldown(k, true)
		if !l.closed {
			cd.stop = l.afterFunc(next.Until.Sub(now), func() { l.ended(k, cd) })
		}
	}
	l.cooldowns[k] = cd
}

// Adopt holds cd on k as if this gate had observed it: a cool-down another
// replica observed, learned from a shared store, so that this one keeps
// refusing (and shows it in Hooks.Cooldown and Status) even once the store
// is out of reach. It never shortens the cool-down in force, and a
// cool-down already held until the same instant changes nothing, so
// adopting the same one again and again reports it once. It logs nothing:
// the replica that observed it did.
func (l *Local) Adopt(k Key, cd Cooldown) {
	l.adoptAt(k, cd, l.now())
}

func (l *Local) adoptAt(k Key, cd Cooldown, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !now.Before(cd.Until) {
		return
	}
	if cur := l.cooldowns[k]; cur != nil && now.Before(cur.Until) && !cur.Until.Before(cd.Until) {
		return
	}
	l.hold(k, cd, now)
}

// Cooldown is k's cool-down in force, false when none is: what Admit
// would refuse k with.
func (l *Local) Cooldown(k Key) (Cooldown, bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if cd := l.cooldowns[k]; cd != nil && now.Before(cd.Until) {
		return cd.Cooldown, true
	}
	return Cooldown{}, false
}

// ended reports the end of cd, unless a later cool-down replaced it.
func (l *Local) ended(k Key, cd *cooldown) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cooldowns[k] == cd {
		l.opts.Hooks.Cooldown(k, false)
	}
}

// CooldownLeft is how long k stays closed by a cool-down, false when none
// is active: the Retry-After of an answer that has just started one.
func (l *Local) CooldownLeft(k Key) (time.Duration, bool) {
	return l.cooldownLeftAt(k, l.now())
}

func (l *Local) cooldownLeftAt(k Key, now time.Time) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cd := l.cooldowns[k]; cd != nil && now.Before(cd.Until) {
		return cd.Until.Sub(now), true
	}
	return 0, false
}

// Status is one Key's bucket or cool-down, for /status.
type Status struct {
	App      string  `json:"app"`
	Endpoint string  `json:"endpoint"`
	Rate     float64 `json:"rate_per_second"` // 0: unlimited
	Burst    int     `json:"burst"`
	// SlotsAvailable is how many calls may go upstream now without
	// queueing; 0 when unlimited.
	SlotsAvailable  float64        `json:"slots_available"`
	Cooldown        bool           `json:"cooldown"`
	CooldownErrcode wechat.Errcode `json:"cooldown_errcode,omitempty"`
	CooldownUntil   time.Time      `json:"cooldown_until,omitzero"`
}

// Status lists every bucket in use and every active cool-down, one entry
// per Key, sorted by app and endpoint.
func (l *Local) Status() []Status { return l.statusAt(l.now()) }

func (l *Local) statusAt(now time.Time) []Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	byKey := map[Key]*Status{}
	get := func(k Key) *Status {
		s := byKey[k]
		if s == nil {
			s = &Status{App: k.App, Endpoint: k.Endpoint}
			byKey[k] = s
		}
		return s
	}
	for k, b := range l.buckets {
		s := get(k)
		if b.Limit() != rate.Inf {
			s.Rate, s.SlotsAvailable = float64(b.Limit()), b.TokensAt(now)
		}
		s.Burst = b.Burst()
	}
	for k, cd := range l.cooldowns {
		if now.Before(cd.Until) {
			s := get(k)
			s.Cooldown, s.CooldownErrcode, s.CooldownUntil = true, cd.Code, cd.Until
		}
	}
	out := make([]Status, 0, len(byKey))
	for _, s := range byKey {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b Status) int {
		if c := strings.Compare(a.App, b.App); c != 0 {
			return c
		}
		return strings.Compare(a.Endpoint, b.Endpoint)
	})
	return out
}

// Close stops the cool-down timers. The gate still answers afterwards, but
// no longer reports a cool-down's end.
func (l *Local) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for _, cd := range l.cooldowns {
		if cd.stop != nil {
			cd.stop()
			cd.stop = nil
		}
	}
}
