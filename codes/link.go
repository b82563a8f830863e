package codes

import (
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// Links is "one link for one key, until it expires": the same seams as the
// code images (L1, one Flight per key, the shared tier L2), for WeChat's
// link endpoints, whose answers are JSON and die. Every entry carries its
// Until (cache.Entry.Until), computed from the request when the link was
// made, so every tier drops it in time; a link that would expire within
// the margin is handed to the callers of its flight and never kept.
// Errors are never kept: the callers of one flight share its error, and
// an ask after the flight has ended calls again.
//
// It counts its own lookups (Hooks.Lookup, Stats) and never the cache's
// figures: L1 is looked at with Peek, so the code images' hit and miss
// counts stay theirs.
type Links struct {
	l1           L1
	l2           cache.Shared
	durable      Store
	flight       Flight
	spent        Refusals
	permanentTTL time.Duration
	retryBackoff time.Duration
	now          func() time.Time
	log          *slog.Logger
	hooks        LinkHooks
	scope        func(context.Context) context.Context

	// counts are by endpoint, made once (the link endpoints and
	// wechat.EndpointOther), never written after: read without a lock.
	counts map[string]*linkCounts

	mu         sync.Mutex
	spentNoted map[string]bool // apps whose 85400 was logged
}

// LinkAnswer is WeChat's success answer to a link request, as it came.
type LinkAnswer struct {
	Body        []byte
	ContentType string
}

// LinkFetcher asks WeChat for one new link. Errors as Fetcher's: one that
// wraps ErrTransient is retried once; a WeChat errcode answer is an error
// errors.As finds as a *wechat.Error. A LinkFetcher returns an answer only
// for a success (errcode 0, the link in it).
type LinkFetcher interface {
	FetchLink(ctx context.Context) (*LinkAnswer, error)
}

// LinkRequest says what a link Get is for.
type LinkRequest struct {
	App      string
	Endpoint string // a bounded name (wechat.Endpoint): it labels metrics
	// Keep says, for a link made at an instant, until when it may be
	// handed out; false: never kept (it expires within the margin). A zero
	// instant with true is a permanent link, kept for PermanentTTL.
	Keep func(made time.Time) (time.Time, bool)
	// Capped marks a permanent short link: once WeChat answers 85400 (the
	// app's 100 000 are spent, for life), every one for the app is
	// answered locally for a day, fleet-wide with a shared Spent.
	Capped bool
}

// LinkHooks are called as things happen, for the metrics; a nil func is a
// no-op. They must not block.
type LinkHooks struct {
	// Lookup is called exactly once per Get, Refresh or Lookup, with its
	// Status's label (hit, shared_hit, miss, collapsed).
	Lookup func(endpoint, result string)
	// Retried is called before the one retry of a failed fetch.
	Retried func(r LinkRequest)
	// FetchFailed is called once for a flight whose fetch failed for good.
	FetchFailed func(r LinkRequest, attempts int, err error)
	// L2Error is called for a fault of the shared tier ("get" or "set").
	L2Error func(op string, err error)
}

// LinkOptions configures NewLinks. L1 is required; the tiers and the
// flight are meant to be the codes' own.
type LinkOptions struct {
	L1 L1
	// L2 is the shared tier; nil is cache.NoShared.
	L2 cache.Shared
	// Flight coalesces the callers of one key; nil is LocalFlight().
	Flight Flight
	// Store is the durable tier: links kept for life (permanent short
	// links, NFC schemes) are written there and looked for after L2; nil
	// is NoStore.
	Store Store
	// Spent remembers the apps whose permanent short links are spent
	// (85400), each for a day; nil is LocalRefusals(24h, Now).
	Spent Refusals
	// PermanentTTL is how long a permanent link (a permanent short link,
	// an NFC scheme) is kept; 0 is MinPermanentLinkTTL.
	PermanentTTL time.Duration
	// RetryBackoff is the pause before the one retry; 0 is 200ms.
	RetryBackoff time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// Logger receives the 85400 (once per app); nil discards.
	Logger *slog.Logger
	Hooks  LinkHooks
	// Scope, when set, gives a miss's context its shared-tier budget.
	Scope func(context.Context) context.Context
}

// MinPermanentLinkTTL is the least a permanent link is kept for: each
// costs one of the app's 100 000 for life (a forgotten NFC scheme asked
// again even gets 9800010), so it is kept at least as long as a code.
const MinPermanentLinkTTL = 30 * 24 * time.Hour

// SpentTTL is how long an 85400 closes permanent short links for an app.
const SpentTTL = 24 * time.Hour

// NewLinks returns a Links on o's tiers.
func NewLinks(o LinkOptions) *Links {
	if o.L1 == nil {
		panic("codes: LinkOptions.L1 is required")
	}
	l := &Links{l1: o.L1, l2: o.L2, flight: o.Flight, spent: o.Spent, permanentTTL: max(o.PermanentTTL, MinPermanentLinkTTL),
		retryBackoff: o.RetryBackoff, now: o.Now, log: o.Logger, hooks: o.Hooks, scope: o.Scope,
		counts: map[string]*linkCounts{}, spentNoted: map[string]bool{}}
	if l.l2 == nil {
		l.l2 = cache.NoShared
	}
	l.durable = o.Store
	if l.durable == nil {
		l.durable = NoStore
	}
	if l.flight == nil {
		l.flight = LocalFlight()
	}
	if l.retryBackoff <= 0 {
		l.retryBackoff = defaultRetryBackoff
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.spent == nil {
		l.spent = LocalRefusals(SpentTTL, l.now)
	}
	for _, endpoint := range append(wechat.LinkEndpoints(), wechat.EndpointOther) {
		l.counts[endpoint] = new(linkCounts)
	}
	return l
}

// ErrPermanentLinksSpent answers a permanent short link locally for a day
// after WeChat said the app's 100 000 are spent.
var ErrPermanentLinksSpent = wechat.Errorf(wechat.PermanentLinksQuota,
	"permanent short link quota reached (wxa-sidecar: WeChat answered 85400 for this app within the last 24 h)")

// Get returns the link for k: a kept one from L1, else from one flight
// shared by every concurrent caller of k, which looks in L1 again, then
// in L2, then calls f. A link made is kept in L2 and L1 until r.Keep
// says, before the flight's callers are answered.
func (l *Links) Get(ctx context.Context, k cache.Key, r LinkRequest, f LinkFetcher) (Result, error) {
	if e, ok := l.l1.Peek(k); ok {
		l.lookup(r.Endpoint, Hit)
		return Result{Entry: e, Status: Hit}, nil
	}
	if l.scope != nil {
		ctx = l.scope(ctx)
	}
	return l.run(ctx, k, k, r, func(ctx context.Context) (Result, error) { return l.load(ctx, k, r, f) })
}

// Refresh makes a new link for k whatever is kept (Cache-Control:
// no-cache) and keeps it in place of the old one. Its flight is its own
// (a key derived from k), so it never joins a flight that would hand back
// the kept link; concurrent refreshes of k in this process share one new
// link, and across the fleet they take turns under the lease.
func (l *Links) Refresh(ctx context.Context, k cache.Key, r LinkRequest, f LinkFetcher) (Result, error) {
	if l.scope != nil {
		ctx = l.scope(ctx)
	}
	return l.run(ctx, refreshKey(k), k, r, func(ctx context.Context) (Result, error) {
		if l.spentFor(ctx, r) {
			return Result{Status: Miss}, ErrPermanentLinksSpent
		}
		return l.make(ctx, k, r, f)
	})
}

// Lookup answers k from the tiers alone, never a flight nor a fetch
// (Cache-Control: only-if-cached): it spends no quota.
func (l *Links) Lookup(ctx context.Context, k cache.Key, r LinkRequest) (Result, bool) {
	if e, ok := l.l1.Peek(k); ok {
		l.lookup(r.Endpoint, Hit)
		return Result{Entry: e, Status: Hit}, true
	}
	if l.scope != nil {
		ctx = l.scope(ctx)
	}
	if e := l.shared(ctx, k, r); e != nil {
		l.l1.Set(k, e)
		l.lookup(r.Endpoint, SharedHit)
		return Result{Entry: e, Status: SharedHit}, true
	}
	l.lookup(r.Endpoint, Miss)
	return Result{Status: Miss}, false
}

// refreshKey is the flight key of k's refreshes: apart from k's own.
func refreshKey(k cache.Key) cache.Key {
	return sha256.Sum256(append(k[:], "\x00links: no-cache"...))
}

// run runs load in the flight for fk and maps whose work answered this
// caller, as Codes.miss does.
func (l *Links) run(ctx context.Context, fk, k cache.Key, r LinkRequest, load func(context.Context) (Result, error)) (Result, error) {
	var loaded Result
	e, from, err := l.flight.Run(ctx, r.App, fk, func(ctx context.Context) (*cache.Entry, error) {
		var err error
		loaded, err = load(ctx)
		return loaded.Entry, err
	})
	var res Result
	switch {
	case from == Joined || (from == Fleet && err != nil):
		res = Result{Entry: e, Status: Collapsed}
	case from == Fleet && (loaded.Status == Miss || loaded.Status == Stored):
		res = loaded
	case from == Fleet:
		res = Result{Entry: e, Status: CollapsedShared}
	case err != nil:
		res = Result{Status: Miss}
	default:
		res = loaded
	}
	l.lookup(r.Endpoint, res.Status)
	if err != nil {
		res.Entry = nil
		return res, err
	}
	return res, nil
}

// load is the body of a Get's flight.
func (l *Links) load(ctx context.Context, k cache.Key, r LinkRequest, f LinkFetcher) (Result, error) {
	if e, ok := l.l1.Peek(k); ok {
		return Result{Entry: e, Status: Collapsed}, nil
	}
	if e := l.shared(ctx, k, r); e != nil {
		l.l1.Set(k, e)
		return Result{Entry: e, Status: SharedHit}, nil
	}
	if l.forLife(r) {
		if e, err := l.durable.Get(ctx, r.App, k); err == nil && e != nil {
			// Kept for life: L2 and L1 hold it again for their own while.
			e = cache.NewEntryUntil(e.Body, e.ContentType, e.ContentDisposition, l.now().Add(l.permanentTTL))
			if err := l.l2.Set(ctx, r.App, k, e); err != nil && l.hooks.L2Error != nil {
				l.hooks.L2Error("set", err)
			}
			l.l1.Set(k, e)
			return Result{Entry: e, Status: StoreHit}, nil
		}
	}
	if l.spentFor(ctx, r) {
		return Result{Status: Miss}, ErrPermanentLinksSpent
	}
	return l.make(ctx, k, r, f)
}

// forLife reports a link kept for its whole life (a permanent short link,
// an NFC scheme): its request's Keep sets no end. Only these go to the
// durable store; a link that expires is never written there.
func (l *Links) forLife(r LinkRequest) bool {
	if r.Keep == nil {
		return false
	}
	until, keep := r.Keep(l.now())
	return keep && until.IsZero()
}

// shared is k's link in L2, nil when there is none still valid; a fault
// of the tier is a miss.
func (l *Links) shared(ctx context.Context, k cache.Key, r LinkRequest) *cache.Entry {
	e, err := l.l2.Get(ctx, r.App, k)
	switch {
	case err == nil && e != nil:
		if !e.Until.IsZero() && !l.now().Before(e.Until) {
			// Redis's clock and ours disagree by a little: ours decides.
			return nil
		}
		return e
	case err != nil && !errors.Is(err, cache.ErrNotFound):
		if l.hooks.L2Error != nil {
			l.hooks.L2Error("get", err)
		}
	}
	return nil
}

// make asks WeChat for a new link and keeps it, in L2 then L1, for as
// long as r.Keep says from the instant the call started (a link's life
// starts no earlier, so the reckoning errs short).
func (l *Links) make(ctx context.Context, k cache.Key, r LinkRequest, f LinkFetcher) (Result, error) {
	made := l.now()
	ans, err := l.fetch(ctx, r, f)
	if err != nil {
		var we *wechat.Error
		if r.Capped && errors.As(err, &we) && we.Code == wechat.PermanentLinksQuota {
			l.noteSpent(ctx, r)
		}
		return Result{Status: Miss}, err
	}
	until, keep := time.Time{}, false
	if r.Keep != nil {
		until, keep = r.Keep(made)
	}
	forLife := keep && until.IsZero()
	if forLife {
		until = made.Add(l.permanentTTL)
	}
	if !keep {
		// Valid, but not for long enough to hand to anyone else.
		return Result{Entry: cache.NewEntry(ans.Body, ans.ContentType, ""), Status: Miss}, nil
	}
	e := cache.NewEntryUntil(ans.Body, ans.ContentType, "", until)
	if err := l.l2.Set(ctx, r.App, k, e); err != nil && l.hooks.L2Error != nil {
		l.hooks.L2Error("set", err)
	}
	if forLife {
		// After its callers are answered: Put queues, never blocks.
		l.durable.Put(ctx, r.App, k, e)
	}
	status := Miss
	if l.l1.Set(k, e) {
		status = Stored
		l.count(r.Endpoint, func(c *linkCounts) { c.stored.Add(1) })
	}
	return Result{Entry: e, Status: status}, nil
}

// fetch calls f, once more after a jittered backoff if it failed in a way
// that may pass.
func (l *Links) fetch(ctx context.Context, r LinkRequest, f LinkFetcher) (*LinkAnswer, error) {
	for attempt := 1; ; attempt++ {
		ans, err := f.FetchLink(ctx)
		if err == nil && ans == nil {
			err = errors.New("codes: link fetch returned no answer")
		}
		if err == nil {
			return ans, nil
		}
		if attempt > 1 || !isTransient(err) {
			if l.hooks.FetchFailed != nil {
				l.hooks.FetchFailed(r, attempt, err)
			}
			return nil, err
		}
		if l.hooks.Retried != nil {
			l.hooks.Retried(r)
		}
		t := time.NewTimer(l.retryBackoff/2 + rand.N(l.retryBackoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

// spentKey stands for "the app's permanent short links" in Spent, which
// remembers refusals by key.
var spentKey = cache.Key(sha256.Sum256([]byte("links: permanent short links spent (85400)")))

func (l *Links) spentFor(ctx context.Context, r LinkRequest) bool {
	return r.Capped && l.spent.Refused(ctx, r.App, spentKey)
}

// noteSpent remembers an 85400 for the app, and logs it once per app and
// process: the cap never resets.
func (l *Links) noteSpent(ctx context.Context, r LinkRequest) {
	l.spent.Refuse(ctx, r.App, spentKey)
	l.mu.Lock()
	first := !l.spentNoted[r.App]
	l.spentNoted[r.App] = true
	l.mu.Unlock()
	if first {
		l.log.Error("permanent short links spent: WeChat refuses new ones for this app (85400); "+
			"answered locally for 24 h, temporary short links and kept links still served",
			"app", r.App, "endpoint", r.Endpoint, "errcode", int(wechat.PermanentLinksQuota))
	}
}

// linkCounts are one endpoint's lookups, as link_requests_total counts
// them, and the links L1 kept.
type linkCounts struct {
	hits, sharedHits, storeHits, misses, collapsed, stored atomic.Uint64
}

// LinkStats are one endpoint's figures, for /status: they agree with
// link_requests_total{endpoint}.
type LinkStats struct {
	Endpoint   string `json:"endpoint"`
	Hits       uint64 `json:"hits"`
	SharedHits uint64 `json:"shared_hits"`
	// StoreHits are links kept for life read back from the durable store.
	StoreHits uint64 `json:"store_hits"`
	Misses    uint64 `json:"misses"`
	Collapsed uint64 `json:"collapsed"`
	// Stored counts the links this replica made and kept.
	Stored uint64 `json:"stored"`
}

// Stats lists each link endpoint, sorted (and other, once a request
// under another name was counted).
func (l *Links) Stats() []LinkStats {
	out := make([]LinkStats, 0, len(l.counts))
	for endpoint, c := range l.counts {
		s := LinkStats{Endpoint: endpoint, Hits: c.hits.Load(), SharedHits: c.sharedHits.Load(), StoreHits: c.storeHits.Load(),
			Misses: c.misses.Load(), Collapsed: c.collapsed.Load(), Stored: c.stored.Load()}
		if endpoint == wechat.EndpointOther && s == (LinkStats{Endpoint: endpoint}) {
			continue
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b LinkStats) int { return strings.Compare(a.Endpoint, b.Endpoint) })
	return out
}

func (l *Links) count(endpoint string, f func(*linkCounts)) {
	c := l.counts[endpoint]
	if c == nil {
		c = l.counts[wechat.EndpointOther]
	}
	f(c)
}

func (l *Links) lookup(endpoint string, s Status) {
	l.count(endpoint, func(c *linkCounts) {
		switch s {
		case Hit:
			c.hits.Add(1)
		case SharedHit:
			c.sharedHits.Add(1)
		case StoreHit:
			c.storeHits.Add(1)
		case Miss, Stored:
			c.misses.Add(1)
		case Collapsed, CollapsedShared:
			c.collapsed.Add(1)
		}
	})
	if l.hooks.Lookup != nil {
		l.hooks.Lookup(endpoint, s.String())
	}
}
