package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// admitScript is one Admit in one round trip: first the charge for what
// this replica's local bucket granted while Redis could not be asked (see
// Gate), then the app+endpoint's shared cool-down, then a GCRA reservation
// on Redis's own clock (TIME), so the replicas' clocks do not matter. The
// bucket is x/time/rate's, written as a theoretical arrival time (TAT,
// µs): Burst calls at once, then one every interval. A reservation whose
// wait would exceed max_wait is not taken.
//
// A charge moves TAT on by that many intervals, as if the local grants
// had been made through this bucket now; it is applied whatever else the
// script answers. TAT never goes further ahead than twice a full bucket's
// burst and queue (every replica's share of the burst and queue charged on
// top of a bucket already drained and queued): the bound a reader of TAT
// may hold it to.
//
// A request Redis runs only after its sender has given up on it (Redis
// paused, or too slow to answer within REDIS_TIMEOUT) does nothing: its
// caller was decided by the local share meanwhile, and a reservation made
// for nobody would waste a slot (or a charge be counted twice). Its expiry
// is on Redis's clock, as the sender estimates it from earlier answers.
//
// KEYS: the cool-down, the bucket's TAT. ARGV: interval µs, burst,
// max_wait µs, charge (slots, may be fractional), expiry (µs on Redis's
// clock, 0: none). Returns {3, now µs} when expired, {4} when the TAT is
// unreadable (no number, or further ahead than any script of ours sets
// it), {1, cool-down value, its PTTL ms} when closed, {2, delay µs, TAT µs,
// now µs} when refused, {0, delay µs, TAT µs, now µs} when reserved: the
// caller waits delay, then calls.
var admitScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local expires = tonumber(ARGV[5]) or 0
if expires > 0 and now > expires then
  return {3, now}
end
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local charge = tonumber(ARGV[4]) or 0
local tat = 0
local raw = redis.call('GET', KEYS[2])
if raw then
  tat = tonumber(raw)
  -- No script sets a TAT further ahead than twice burst and max_wait (a
  -- second's slack for a replica configured otherwise): such a value, or
  -- one that is no number, is unreadable, and the caller decides locally.
  if not tat or tat > now + 2 * (burst * interval + max_wait) + 1000000 then
    return {4}
  end
end
if tat < now then
  tat = now
end
if charge > 0 then
  tat = math.min(tat + charge * interval, now + 2 * (burst * interval + max_wait))
  redis.call('SET', KEYS[2], string.format('%.0f', tat), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
end
local cd = redis.call('GET', KEYS[1])
if cd then
  return {1, cd, redis.call('PTTL', KEYS[1])}
end
local new_tat = tat + interval
local delay = new_tat - burst * interval - now
if delay < 0 then
  delay = 0
end
if delay > max_wait then
  return {2, delay, tat, now}
end
-- Once TAT is past, the bucket is full again: the key is no longer needed.
redis.call('SET', KEYS[2], string.format('%.0f', new_tat), 'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
return {0, delay, new_tat, now}
`)

// giveBackScript returns a cancelled reservation's slot, as x/time/rate's
// CancelAt does: all of it if nobody reserved after it, less what later
// reservations already counted on, nothing once its time has come.
//
// KEYS: the bucket's TAT. ARGV: the reservation's TAT µs, interval µs,
// burst. Returns 1 if anything was given back.
var giveBackScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur then
  return 0
end
local tat = tonumber(cur)
if not tat then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ours = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
if ours - burst * interval <= now then
  return 0
end
local restore = interval - (tat - ours)
if restore <= 0 then
  return 0
end
tat = tat - restore
if tat <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
end
return 1
`)

// setCooldownScript shares a cool-down: the cool-down key expires at the
// window's end, the memory of it a minute later (NextCooldown's strikes
// look at a cool-down that has just ended). A cool-down in force that ends
// later is kept: a late 45011 answered to a call sent before a 45009 must
// not reopen the endpoint for the fleet; but not one that ends later than
// any window allows (a forgery).
//
// KEYS: the cool-down, its memory. ARGV: the cool-down's value, its end
// (Unix ms), the memory's end (Unix ms), the memory's value, the latest
// end a cool-down may have (Unix ms). Returns the value in force. Each
// value is "end-Unix-ms " and the cool-down sealed for its key.
var setCooldownScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then
  local until_ms = tonumber(string.match(cur, '^(%d+) '))
  if until_ms and until_ms > tonumber(ARGV[2]) and until_ms <= tonumber(ARGV[5]) then
    return cur
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
redis.call('SET', KEYS[2], ARGV[4], 'PXAT', ARGV[3])
return ARGV[1]
`)

// strikeMemory is how long a cool-down is remembered after it ends: the
// window in which NextCooldown counts a second 45009 on getwxacodeunlimit
// as the day's.
const strikeMemory = time.Minute

// Gate is a quota.Gate for a fleet sharing one Redis: the rate limits are
// the fleet's (a GCRA bucket per app and endpoint in Redis, on Redis's
// clock), and a cool-down observed by any replica closes the endpoint for
// all of them, written before Observe returns.
//
// Redis never fails a call: whenever it errs, times out or is skipped
// (breaker open, the request's budget spent), the call is decided by a
// quota.Local holding this replica's share of the limits (Options.Share of
// the fleet size) and every cool-down this replica observed or learned
// from Redis, so a replica that saw a 45009 keeps refusing through an
// outage.
//
// The two buckets hold one limit between them: over any window of W
// seconds the fleet's calls stay within rate × W + burst, with Redis up,
// slow, flapping or down, and each call is decided by exactly one of them
// (Redis's when it answered, else the local share's).
//   - A local share that takes over from Redis (this replica has had an
//     answer from Redis before) starts empty (quota.Local.AdmitInstead),
//     or in debt by its part (1/FLEET_SIZE) of the calls Redis's bucket
//     had queued when it last answered: Redis's bucket may have just been
//     drained, and a full share would add its burst on top. One used while
//     Redis has never answered (a replica started during an outage) starts
//     full, with its share of the burst, as a replica without Redis would.
//     The share stays one bucket until Redis answers again, however many
//     calls find Redis skipped or failing meanwhile.
//   - The first admission that reaches Redis afterwards carries a charge
//     (quota.Local.Settle): what the local share granted beyond what it
//     would have refilled anyway. The script moves the bucket's TAT on by
//     that many slots before deciding, so Redis's bucket, which refilled
//     meanwhile, does not give a fresh burst on top of the local grants:
//     with every replica's share starting no fuller than Redis's bucket
//     was, the shares never hold more between them than it would have, and
//     the charges bring it back to no more than they hold. A charge that
//     does not reach Redis is owed to the next admission; one whose answer
//     was lost may be charged twice (a slot wasted, never one too many).
//   - A request Redis runs only after its sender gave up (a paused Redis
//     runs its queue when it resumes) expires instead of reserving a slot
//     for a call the local share already decided.
//   - A replica whose breaker stays open after another's has closed keeps
//     its share's refill while Redis's bucket refills too; its charge
//     arrives when its breaker closes (at most the breaker's cool-off, 5 s,
//     later), so the fleet may run ahead by that replica's share for that
//     long and makes it up after.
//
// Hooks fire as a Local's would: Rejected when no slot is free within
// MaxWait (Redis's bucket or the local one), Waited for every call let
// through (the Redis bucket's delay, or the local one's); Cooldown(true)
// once per cool-down this replica holds, observed here or first found in
// Redis, Cooldown(false) when it ends.
type Gate struct {
	c        *Client
	opts     quota.Options
	local    *quota.Local
	now      func() time.Time
	log      *slog.Logger
	newTimer func(time.Duration) (<-chan time.Time, func() bool)
	// fleetSize is FLEET_SIZE: each replica's share of Redis's debt when
	// its local bucket takes over.
	fleetSize int

	// offset is Redis's clock less this replica's (µs, from the latest
	// answer that carried Redis's time), for the expiry of a request;
	// offsetKnown is false until one did.
	offset      atomic.Int64
	offsetKnown atomic.Bool

	mu sync.Mutex
	// buckets is the last state of each fleet bucket this replica saw,
	// for Status; it grows with the keys callers pass, like a Local's.
	buckets map[quota.Key]bucketSeen
}

// bucketSeen is a fleet bucket's free slots when Redis last answered.
type bucketSeen struct {
	slots float64
	at    time.Time
	// redisNow orders answers that arrive out of order: the latest on
	// Redis's clock wins.
	redisNow int64
}

var _ quota.Gate = (*Gate)(nil)

// NewGate returns a Gate enforcing o's limits across the fleet on c, whose
// replicas each fall back to 1/fleetSize of them while Redis is out of
// reach. o.Hooks, o.Logger, o.Now, o.MaxWait and o.DailyCooldown mean what
// they mean to a Local. Close it to stop its timers.
func NewGate(c *Client, o quota.Options, fleetSize int) *Gate {
	g := &Gate{c: c, opts: o.Share(1), local: quota.NewLocal(o.Share(fleetSize)), now: o.Now, log: o.Logger, fleetSize: max(fleetSize, 1),
		newTimer: func(d time.Duration) (<-chan time.Time, func() bool) {
			t := time.NewTimer(d)
			return t.C, t.Stop
		},
		buckets: map[quota.Key]bucketSeen{}}
	g.opts.MaxWait = max(g.opts.MaxWait, 0)
	if g.now == nil {
		g.now = time.Now
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	return g
}

// Close stops the local cool-downs' timers.
func (g *Gate) Close() { g.local.Close() }

// Admit returns nil once the call for k may go upstream: no cool-down is
// held here or shared in Redis, and the fleet's bucket has a slot within
// MaxWait, queueing for it if need be. Otherwise it returns the *Refusal a
// Local would: the cool-down's errcode until its end, or 45011 with the
// time to the next slot. If ctx ends while queueing, the slot is given back
// to the fleet's bucket (one more Redis call, skipped if Redis already
// failed this request) and Admit returns ctx.Err(). A Redis failure hands
// the call to the local share.
func (g *Gate) Admit(ctx context.Context, k quota.Key) error {
	now := g.now()
	if cd, ok := g.local.Cooldown(k); ok {
		return cd.Refusal(now)
	}
	lim := g.opts.Limit(k.Endpoint)
	if lim.Rate <= 0 {
		return g.admitUnlimited(ctx, k, now)
	}
	interval := intervalOf(lim.Rate)
	burst := max(lim.Burst, 1)
	var charge float64
	var res []any
	err := g.c.Do(ctx, OpRateLimit, func(ctx context.Context) error {
		// Taken only when Redis is tried: while it is skipped, the local
		// bucket's period goes on.
		charge = g.local.Settle(k)
		var err error
		res, err = admitScript.Run(ctx, g.c.Redis(), []string{g.cooldownKey(k), g.bucketKey(k)},
			interval, burst, g.opts.MaxWait.Microseconds(), strconv.FormatFloat(charge, 'f', 6, 64), g.expiry()).Slice()
		return err
	})
	if kind, _ := at[int64](res, 0); err == nil && kind == admitUnreadable {
		// A bucket no limit of ours could have left: as if Redis were
		// unreachable for this call, never a refusal.
		g.c.unsealed(UnsealedRateLimit)
		err = errUnreadable
	}
	if err != nil {
		// The charge may not have reached Redis: owe it to the next
		// admission (twice charged at worst, never forgotten).
		g.local.Owe(k, charge)
		return g.fallback(ctx, k)
	}
	kind, _ := at[int64](res, 0)
	if kind != 3 {
		// Redis's bucket decides again, charged.
		g.local.Rejoin(k)
	}
	if kind == 3 {
		// Our estimate of Redis's clock was off (the request was not
		// late, or we would not have its answer): learn it, decide here.
		if redisNow, ok := at[int64](res, 1); ok {
			g.learnClock(redisNow)
		}
		g.local.Owe(k, charge)
		return g.fallback(ctx, k)
	}
	if kind == 1 {
		value, _ := at[string](res, 1)
		pttl, _ := at[int64](res, 2)
		return g.sharedCooldown(ctx, k, value, time.Duration(pttl)*time.Millisecond, now)
	}
	delayMicros, ok1 := at[int64](res, 1)
	tat, ok2 := at[int64](res, 2)
	redisNow, ok3 := at[int64](res, 3)
	if !ok1 || !ok2 || !ok3 {
		g.log.Warn("fleet: unexpected rate-limit answer from Redis: deciding locally", "reply", fmt.Sprint(res))
		return g.fallback(ctx, k)
	}
	g.learnClock(redisNow)
	g.saw(k, float64(burst)-float64(tat-redisNow)/float64(interval), redisNow)
	delay := time.Duration(delayMicros) * time.Microsecond
	if kind == 2 {
		if g.opts.Hooks.Rejected != nil {
			g.opts.Hooks.Rejected(k)
		}
		return quota.RateRefusal(delay)
	}
	if g.opts.Hooks.Waited != nil {
		g.opts.Hooks.Waited(k, delay)
	}
	if delay == 0 {
		return nil
	}
	ch, stop := g.newTimer(delay)
	defer stop()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		// Give the slot back, so that another caller in the fleet can
		// have it rather than the bucket losing it.
		g.c.Do(ctx, OpRateLimit, func(ctx context.Context) error {
			return giveBackScript.Run(ctx, g.c.Redis(), []string{g.bucketKey(k)}, tat, interval, burst).Err()
		})
		return ctx.Err()
	}
}

// expiry is when a rate-limit request sent now is stale, on Redis's clock
// (µs), 0 before Redis has told us its time: twice the operation's
// timeout from now, past which its sender has surely given up on it
// (learnClock's estimate errs by at most the answer's travel time, itself
// within one timeout).
func (g *Gate) expiry() int64 {
	if !g.offsetKnown.Load() {
		return 0
	}
	return time.Now().UnixMicro() + g.offset.Load() + 2*g.c.timeout.Microseconds()
}

// learnClock records Redis's clock as an answer just gave it. It uses the
// wall clock, not the gate's (tests move that one): the time a request
// spends in transit is real.
func (g *Gate) learnClock(redisNow int64) {
	g.offset.Store(redisNow - time.Now().UnixMicro())
	g.offsetKnown.Store(true)
}

// fallback decides a call on the local share, Redis's bucket out of reach.
// If this replica has used Redis before, a share taking over starts empty,
// or with its part of the debt Redis's bucket had when it last answered
// (refilled since): calls Redis had already queued (see Gate).
func (g *Gate) fallback(ctx context.Context, k quota.Key) error {
	lim := g.opts.Limit(k.Endpoint)
	n := float64(g.fleetSize)
	si := quota.StandIn{Takeover: g.c.Answered(), Burst: float64(max(lim.Burst, 1)) / n}
	if si.Takeover {
		g.mu.Lock()
		if b, ok := g.buckets[k]; ok {
			si.Slots = min(b.slots+g.now().Sub(b.at).Seconds()*lim.Rate, 0) / n
		}
		g.mu.Unlock()
	}
	return g.local.AdmitInstead(ctx, k, si)
}

// admitUnlimited admits a call without a rate limit unless a cool-down
// is shared in Redis.
func (g *Gate) admitUnlimited(ctx context.Context, k quota.Key, now time.Time) error {
	var value string
	var pttl time.Duration
	err := g.c.Do(ctx, OpCooldown, func(ctx context.Context) error {
		key := g.cooldownKey(k)
		pipe := g.c.Redis().Pipeline()
		get, ttl := pipe.Get(ctx, key), pipe.PTTL(ctx, key)
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
		value, pttl = get.Val(), ttl.Val()
		return nil
	})
	switch {
	case errors.Is(err, redis.Nil):
		return nil
	case err != nil:
		return g.fallback(ctx, k)
	}
	return g.sharedCooldown(ctx, k, value, pttl, now)
}

// sharedCooldown refuses a call closed by a cool-down found in Redis, and
// holds it locally (for an outage, the gauge and CooldownLeft). One that
// does not open or is out of bounds leaves the call to the local share.
func (g *Gate) sharedCooldown(ctx context.Context, k quota.Key, value string, pttl time.Duration, now time.Time) error {
	cd, err := g.openCooldown(k.App, g.cooldownKey(k), value, now, now.Add(-cooldownSlack))
	if err != nil {
		return g.fallback(ctx, k)
	}
	g.local.Adopt(k, cd)
	r := cd.Refusal(now)
	if r.RetryAfter <= 0 {
		// Our clock is ahead of Redis's, which still holds the key.
		r.RetryAfter = min(max(pttl, time.Millisecond), cooldownSlack)
	}
	return r
}

// Observe starts a cool-down on k when code is a quota errcode that closes
// the whole endpoint (quota.NextCooldown, given the previous cool-down
// shared in Redis), shares it in Redis and holds it locally, before it
// returns: the replica answers its caller only after the fleet knows. A
// cool-down in force that ends later, here or in Redis, is kept. If Redis
// fails, the cool-down is this replica's alone (with this replica's own
// memory of the previous one).
func (g *Gate) Observe(ctx context.Context, k quota.Key, code wechat.Errcode) {
	now := g.now()
	if _, ok := quota.NextCooldown(code, k.Endpoint, nil, now, g.opts.DailyCooldown); !ok {
		return
	}
	var prev *quota.Cooldown
	err := g.c.Do(ctx, OpCooldown, func(ctx context.Context) error {
		value, err := g.c.Redis().Get(ctx, g.memoryKey(k)).Result()
		if err != nil {
			return err
		}
		if cd, err := g.openCooldown(k.App, g.memoryKey(k), value, now, now.Add(-strikeMemory-cooldownSlack)); err == nil {
			prev = &cd
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		g.local.Observe(ctx, k, code)
		return
	}
	next, _ := quota.NextCooldown(code, k.Endpoint, prev, now, g.opts.DailyCooldown)
	if held, ok := g.local.Cooldown(k); ok && held.Until.After(next.Until) {
		next = held
	}
	next.Until = ceilMilli(next.Until)
	// 44993 closes both link endpoints that share the day's quota.
	for _, closed := range quota.Closes(k, code) {
		cd := next
		cdValue, err1 := g.sealCooldown(closed.App, g.cooldownKey(closed), cd)
		memValue, err2 := g.sealCooldown(closed.App, g.memoryKey(closed), cd)
		if err1 == nil && err2 == nil {
			g.c.Do(ctx, OpCooldown, func(ctx context.Context) error {
				value, err := setCooldownScript.Run(ctx, g.c.Redis(), []string{g.cooldownKey(closed), g.memoryKey(closed)},
					cdValue, cd.Until.UnixMilli(), cd.Until.Add(strikeMemory).UnixMilli(), memValue,
					g.cooldownBound(now).UnixMilli()).Text()
				if err != nil {
					return err
				}
				if inForce, err := g.openCooldown(closed.App, g.cooldownKey(closed), value, now, now.Add(-cooldownSlack)); err == nil {
					cd = inForce
				}
				return nil
			})
		}
		g.local.Adopt(closed, cd)
		if closed == k {
			next = cd
		}
	}
	g.log.Warn("WeChat quota reached: calls answered locally until the window resets",
		"app", k.App, "endpoint", k.Endpoint, "errcode", int(code), "until", next.Until)
}

// CooldownLeft is how long k stays closed by a cool-down this replica
// holds (observed here, or found in Redis by Admit), false when none: the
// Retry-After of an answer that has just started one.
func (g *Gate) CooldownLeft(k quota.Key) (time.Duration, bool) { return g.local.CooldownLeft(k) }

// saw records a fleet bucket's free slots as Redis just answered.
func (g *Gate) saw(k quota.Key, slots float64, redisNow int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if b, ok := g.buckets[k]; !ok || b.redisNow <= redisNow {
		g.buckets[k] = bucketSeen{slots: slots, at: g.now(), redisNow: redisNow}
	}
}

func (g *Gate) bucketKey(k quota.Key) string   { return g.c.Key(k.App, "rl", k.Endpoint) }
func (g *Gate) cooldownKey(k quota.Key) string { return g.c.Key(k.App, "cd", k.Endpoint) }
func (g *Gate) memoryKey(k quota.Key) string   { return g.c.Key(k.App, "cdlast", k.Endpoint) }

// intervalOf is the GCRA's emission interval for rate, in whole µs
// (rounded up: a fleet never exceeds its rate, by at most 1 µs a slot).
func intervalOf(rate float64) int64 {
	return max(int64(math.Ceil(1e6/rate)), 1)
}

// admitUnreadable is admitScript's answer for a TAT it cannot believe.
const admitUnreadable = 4

// errUnreadable: a value of Redis's the tier does not believe; the call is
// decided as if Redis were unreachable.
var errUnreadable = errors.New("fleet: a value in Redis is out of bounds")

// at is res[i] as a T, false if it is missing or of another type.
func at[T any](res []any, i int) (T, bool) {
	var zero T
	if i >= len(res) {
		return zero, false
	}
	v, ok := res[i].(T)
	return v, ok
}
