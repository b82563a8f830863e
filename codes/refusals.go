package codes

import (
	"container/list"
	"context"
	"sync"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
)

// Refusals remembers, per key, the code requests WeChat refused with 45029
// (the lifetime cap reached: WeChat refuses new parameter sets for good),
// each for as long as an image would be kept. Implementations are safe
// for concurrent use, forget on their own, and never fail their caller: a
// store that cannot answer says "not refused" (asking WeChat again costs
// a rate slot, never a wrong answer). app is the app k was made for.
type Refusals interface {
	// Refused reports whether k was refused and the refusal still holds.
	Refused(ctx context.Context, app string, k cache.Key) bool
	// Refuse remembers that WeChat refused k; it returns once callers
	// asking Refused can see it, or the store has given up.
	Refuse(ctx context.Context, app string, k cache.Key)
}

// LocalRefusals returns the Refusals of this process alone: at most 10,000
// keys, least recently used dropped first, each for ttl (0 is 24h, CACHE_TTL's
// default) on the clock now (nil is time.Now).
func LocalRefusals(ttl time.Duration, now func() time.Time) Refusals {
	if ttl <= 0 {
		ttl = defaultRefusalTTL
	}
	if now == nil {
		now = time.Now
	}
	return localRefusals{r: newRefusals(maxRefusals, ttl), now: now}
}

type localRefusals struct {
	r   *refusals
	now func() time.Time
}

func (l localRefusals) Refused(_ context.Context, _ string, k cache.Key) bool {
	return l.r.has(k, l.now())
}

func (l localRefusals) Refuse(_ context.Context, _ string, k cache.Key) { l.r.add(k, l.now()) }

// refusals remembers the code requests WeChat refused with 45029. Past the
// lifetime cap WeChat still serves every code it generated before and
// refuses only new parameters, so the refusal belongs to the request (its
// cache key), never to the endpoint. Asking again would only spend a rate
// slot to hear the same answer; the set is bounded (least recently used
// dropped first) and each entry expires, like a cached image, so a
// refusal WeChat lifts (a raised cap) is heard again.
type refusals struct {
	mu    sync.Mutex
	ttl   time.Duration
	max   int
	order *list.List // of *refusal, most recently used first
	byKey map[cache.Key]*list.Element
}

type refusal struct {
	key   cache.Key
	until time.Time
}

const (
	// maxRefusals bounds the set: 10,000 keys weigh under 2 MB.
	maxRefusals = 10_000
	// defaultRefusalTTL is CACHE_TTL's default.
	defaultRefusalTTL = 24 * time.Hour
)

func newRefusals(max int, ttl time.Duration) *refusals {
	return &refusals{ttl: ttl, max: max, order: list.New(), byKey: make(map[cache.Key]*list.Element)}
}

// add remembers k as refused from now for the set's ttl.
func (r *refusals) add(k cache.Key, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	until := now.Add(r.ttl)
	if el := r.byKey[k]; el != nil {
		el.Value.(*refusal).until = until
		r.order.MoveToFront(el)
		return
	}
	r.byKey[k] = r.order.PushFront(&refusal{key: k, until: until})
	for r.order.Len() > r.max {
		oldest := r.order.Back()
		r.order.Remove(oldest)
		delete(r.byKey, oldest.Value.(*refusal).key)
	}
}

// has reports whether k was refused and the refusal has not expired; a
// refusal asked about counts as used.
func (r *refusals) has(k cache.Key, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	el := r.byKey[k]
	if el == nil {
		return false
	}
	if !now.Before(el.Value.(*refusal).until) {
		r.order.Remove(el)
		delete(r.byKey, k)
		return false
	}
	r.order.MoveToFront(el)
	return true
}

// len is the number of refusals held, expired ones included until asked.
func (r *refusals) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.order.Len()
}
