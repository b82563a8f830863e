// Package codes owns "one image for one key": the local cache (L1), then
// one flight for all the concurrent callers of a key (a second look in L1,
// then the shared tier L2, then one fetch from WeChat, retried once if it
// failed in a way that may pass), the check that an image is whole and
// decodes, and storing it in L2 and L1. It remembers, per key, the
// requests WeChat refused for good (45029) and answers them locally.
//
// It never speaks HTTP (no net/http, no httputil: a Fetch hands it bytes),
// never talks to Redis or any store but through its seams (cache.Shared,
// Flight, Refusals), and never
// limits rates (x/time/rate belongs to quota/): what may go upstream is
// the Fetch's business. Errors are never stored, in either tier.
package codes

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// defaultRetryBackoff is the pause before the one retry when Options says
// none: long enough for a busy WeChat, short against a client's patience.
const defaultRetryBackoff = 200 * time.Millisecond

// Image is what a fetch got from WeChat: the body, unchecked, and the
// headers worth keeping.
type Image struct {
	Body               []byte
	ContentType        string
	ContentDisposition string
	NumUsed            string // WeChat's Num-Used header, for the caller whose fetch spent it
}

// Fetcher asks WeChat for one image. Fetch errors: one that wraps
// ErrTransient (or ErrBrokenImage) is retried once; a WeChat errcode
// answer is an error errors.As finds as a *wechat.Error with Status 200
// (45029 is remembered for the key); a Fetcher returns an image only for
// an answer that is not an errcode, and Get checks it is a whole one.
type Fetcher interface {
	Fetch(ctx context.Context) (*Image, error)
}

// Request says what a Get is for, in the words of the hooks and logs: the
// key alone decides what is looked up, fetched and stored.
type Request struct {
	App      string
	Endpoint string // a bounded name (wechat.Endpoint): it labels metrics
}

// Status is how a Get obtained its image.
type Status uint8

const (
	Hit             Status = iota + 1 // from L1
	SharedHit                         // from L2, by this caller's flight
	Miss                              // this caller's flight fetched it (or failed, or was answered locally); L1 declined it
	Stored                            // this caller's flight fetched it and L1 kept it
	Collapsed                         // another caller's flight got it (or stored it just before this one looked again)
	CollapsedShared                   // another replica's flight got it: this caller's flight waited, then found it in L2
	StoreHit                          // from the durable store, by this caller's flight (L2 and L1 now hold it too)
)

// String is the status as cache_requests_total's result label names it:
// Miss and Stored are both "miss", Collapsed and CollapsedShared both
// "collapsed".
func (s Status) String() string {
	switch s {
	case Hit:
		return "hit"
	case SharedHit:
		return "shared_hit"
	case Miss, Stored:
		return "miss"
	case Collapsed, CollapsedShared:
		return "collapsed"
	case StoreHit:
		return "store_hit"
	}
	return "unknown"
}

// Result is one caller's answer. Entry is shared: never modify it.
type Result struct {
	Entry  *cache.Entry
	Status Status
	// NumUsed is WeChat's Num-Used, set only for the caller whose flight
	// fetched the image (it is this caller's quota that was spent).
	NumUsed string
}

// L1 is the local tier: cache.Memory. It never blocks and never fails.
// Get counts the lookup in the cache's figures, Peek does not (the
// flight's second look is made on behalf of a Get that counted already);
// Set reports whether a following Get will find the entry.
type L1 interface {
	Get(k cache.Key) (*cache.Entry, bool)
	Peek(k cache.Key) (*cache.Entry, bool)
	Set(k cache.Key, e *cache.Entry) bool
}

// Hooks are called as things happen, to feed the metrics; a nil func is a
// no-op. They must not block.
type Hooks struct {
	// Lookup is called exactly once per Get, with its Status's label:
	// "hit", "shared_hit", "miss" (this caller's flight fetched, or the
	// Get was answered without one, failures included) or "collapsed".
	Lookup func(result string)
	// Stored is called whenever L1 kept an image (fetched, or from L2).
	Stored func()
	// Retried is called before the one retry of a failed fetch.
	Retried func(r Request)
	// GoodImage and BrokenImage are called once per fetch that brought an
	// image, whole or not: the upstream outcomes ok and broken_image.
	GoodImage   func(r Request)
	BrokenImage func(r Request)
	// FetchFailed is called once for a flight whose fetch failed for good,
	// after its retry if it had one, with the last error. Which failures
	// deserve a log line (those a caller sees as a 502, not WeChat's own
	// errcodes or a quota refusal) is the caller's vocabulary, not codes'.
	FetchFailed func(r Request, attempts int, err error)
	// L2Error is called for a fault of the shared tier ("get" or "set"),
	// which never reaches the caller: a failed Get is a miss, a failed Set
	// is ignored.
	L2Error func(op string, err error)
}

// Options configures New. L1 is required.
type Options struct {
	L1 L1
	// L2 is the shared tier; nil is cache.NoShared.
	L2 cache.Shared
	// Store is the durable tier behind L2; nil is NoStore.
	Store Store
	// Flight coalesces the callers of one key; nil is LocalFlight().
	Flight Flight
	// Refusals remembers the keys WeChat refused with 45029; nil is
	// LocalRefusals(RefusalTTL, Now).
	Refusals Refusals
	// RetryBackoff is the pause before the one retry of a transient
	// failure, jittered between half of it and all of it; 0 is 200ms.
	RetryBackoff time.Duration
	// RefusalTTL is how long the default Refusals remember a 45029 for its
	// key (CACHE_TTL: as long as the image would have been kept); 0 is 24h.
	RefusalTTL time.Duration
	// Now is the clock of the default Refusals; nil is time.Now.
	Now func() time.Time
	// Logger receives the lifetime cap (once per app and endpoint); nil
	// discards.
	Logger *slog.Logger
	Hooks  Hooks
	// Scope, when set, gives a miss's context what the shared tier keeps
	// per request (its Redis budget); a hit never calls it.
	Scope func(context.Context) context.Context
}

// Codes answers code images by key. It is safe for concurrent use.
type Codes struct {
	l1           L1
	scope        func(context.Context) context.Context
	l2           cache.Shared
	durable      Store
	flight       Flight
	retryBackoff time.Duration
	now          func() time.Time
	log          *slog.Logger
	hooks        Hooks

	refusals Refusals

	mu sync.Mutex
	// capLogged: the apps and endpoints whose lifetime cap was logged
	// already (bounded: apps × endpoint names).
	capLogged map[Request]bool
}

// New returns a Codes on o's tiers.
func New(o Options) *Codes {
	if o.L1 == nil {
		panic("codes: Options.L1 is required")
	}
	c := &Codes{l1: o.L1, scope: o.Scope, l2: o.L2, flight: o.Flight, refusals: o.Refusals, retryBackoff: o.RetryBackoff,
		now: o.Now, log: o.Logger, hooks: o.Hooks, capLogged: map[Request]bool{}}
	if c.l2 == nil {
		c.l2 = cache.NoShared
	}
	c.durable = o.Store
	if c.durable == nil {
		c.durable = NoStore
	}
	if c.flight == nil {
		c.flight = LocalFlight()
	}
	if c.retryBackoff <= 0 {
		c.retryBackoff = defaultRetryBackoff
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.refusals == nil {
		c.refusals = LocalRefusals(o.RefusalTTL, c.now)
	}
	return c
}

// ErrRefusedBefore answers, without asking WeChat again, a code request
// WeChat refused with 45029 within RefusalTTL.
var ErrRefusedBefore = wechat.Errorf(wechat.LifetimeQuota,
	"max code count reached (wxa-sidecar: WeChat answered 45029 to this request before)")

// Get returns the image for k: from L1, else from one flight shared by all
// concurrent callers of k, which looks in L1 again, then in L2, then calls
// f (this caller's, if this caller's flight is the one that runs). r names
// the request in hooks and logs, and r.App is the app the tiers file k
// under. On an error, Result.Status still says whether this caller's
// flight failed (Miss) or another's, here or in the fleet (Collapsed).
func (c *Codes) Get(ctx context.Context, k cache.Key, r Request, f Fetcher) (Result, error) {
	if e, ok := c.l1.Get(k); ok {
		c.lookup(Hit)
		return Result{Entry: e, Status: Hit}, nil
	}
	return c.miss(ctx, k, r, f)
}

// miss answers a Get whose L1 lookup missed.
func (c *Codes) miss(ctx context.Context, k cache.Key, r Request, f Fetcher) (Result, error) {
	if c.scope != nil {
		ctx = c.scope(ctx)
	}
	if c.refusals.Refused(ctx, r.App, k) {
		c.lookup(Miss)
		return Result{Status: Miss}, ErrRefusedBefore
	}
	// Written by this caller's load only, read only when Run has returned
	// a result, not ctx.Err() (then a load of this caller's that ran has
	// returned).
	var loaded Result
	e, from, err := c.flight.Run(ctx, r.App, k, func(ctx context.Context) (*cache.Entry, error) {
		var err error
		loaded, err = c.load(ctx, k, r, f)
		return loaded.Entry, err
	})
	var res Result
	switch {
	case from == Joined || (from == Fleet && err != nil):
		res = Result{Entry: e, Status: Collapsed}
	case from == Fleet && (loaded.Status == Miss || loaded.Status == Stored || loaded.Status == StoreHit):
		// This caller's load went to take the fleet's entry from L2 and
		// had to fetch after all: its own miss, its own quota.
		res = loaded
	case from == Fleet:
		res = Result{Entry: e, Status: CollapsedShared}
	case err != nil:
		res = Result{Status: Miss}
	default:
		res = loaded
	}
	c.lookup(res.Status)
	if err != nil {
		res.Entry = nil
		return res, err
	}
	return res, nil
}

// load is the body of a flight.
func (c *Codes) load(ctx context.Context, k cache.Key, r Request, f Fetcher) (Result, error) {
	// A flight that finished between our L1 miss and this flight's start
	// has stored the image already (groupcache's load() has the same
	// look). A Peek: the caller's Get counted this request already.
	if e, ok := c.l1.Peek(k); ok {
		return Result{Entry: e, Status: Collapsed}, nil
	}
	e, err := c.l2.Get(ctx, r.App, k)
	switch {
	case err == nil && e != nil:
		c.store(k, e)
		return Result{Entry: e, Status: SharedHit}, nil
	case err != nil && !errors.Is(err, cache.ErrNotFound):
		// The shared tier failing is a miss, never the caller's error.
		c.l2Error("get", err)
	}
	// Then the durable tier: what was fetched once, ever, is not fetched
	// again (it holds images only, so a hit says not refused either).
	if e, ok := c.fromStore(ctx, k, r); ok {
		return Result{Entry: e, Status: StoreHit}, nil
	}
	// A flight that finished just before may have heard 45029 for k. (An
	// image in L2 says it was not refused: that look comes first, so a
	// shared hit costs no look at the refusals.)
	if c.refusals.Refused(ctx, r.App, k) {
		return Result{Status: Miss}, ErrRefusedBefore
	}
	img, err := c.fetch(ctx, r, f)
	if err != nil {
		var we *wechat.Error
		if errors.As(err, &we) && we.Code == wechat.LifetimeQuota {
			c.refuseForGood(ctx, k, r)
		}
		return Result{Status: Miss}, err
	}
	e = cache.NewEntry(img.Body, img.ContentType, img.ContentDisposition)
	// Before the flight's callers are answered (and, in a fleet, before
	// its lease is released): whoever asks next, anywhere, finds it.
	if err := c.l2.Set(ctx, r.App, k, e); err != nil {
		c.l2Error("set", err)
	}
	status := Miss
	if c.store(k, e) {
		status = Stored
	}
	// Queued, never waited for: the store writes it behind the flight's
	// callers' backs.
	c.durable.Put(ctx, r.App, k, e)
	return Result{Entry: e, Status: status, NumUsed: img.NumUsed}, nil
}

// fetch calls f, once more after a jittered backoff if it failed in a way
// that may pass, and accepts only a whole image that decodes.
func (c *Codes) fetch(ctx context.Context, r Request, f Fetcher) (*Image, error) {
	for attempt := 1; ; attempt++ {
		img, err := c.fetchOnce(ctx, r, f)
		if err == nil {
			return img, nil
		}
		if attempt > 1 || !isTransient(err) {
			if c.hooks.FetchFailed != nil {
				c.hooks.FetchFailed(r, attempt, err)
			}
			return nil, err
		}
		if c.hooks.Retried != nil {
			c.hooks.Retried(r)
		}
		backoff := c.retryBackoff/2 + rand.N(c.retryBackoff/2+1)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

// fetchOnce makes one fetch and counts the image it brought, if any, as
// good or broken.
func (c *Codes) fetchOnce(ctx context.Context, r Request, f Fetcher) (*Image, error) {
	img, err := f.Fetch(ctx)
	if err == nil {
		if img == nil {
			err = BrokenImage(errors.New("codes: fetch returned no image"))
		} else if cerr := checkImage(img.Body); cerr != nil {
			err = BrokenImage(cerr)
		}
	}
	switch {
	case err == nil:
		if c.hooks.GoodImage != nil {
			c.hooks.GoodImage(r)
		}
		return img, nil
	case errors.Is(err, ErrBrokenImage):
		if c.hooks.BrokenImage != nil {
			c.hooks.BrokenImage(r)
		}
	}
	return nil, err
}

// isTransient reports failures worth one retry. A cancelled fetch is not:
// nobody is left to want the answer.
func isTransient(err error) bool {
	return (errors.Is(err, ErrTransient) || errors.Is(err, ErrBrokenImage)) && !errors.Is(err, context.Canceled)
}

// refuseForGood remembers that WeChat answered 45029 to k: the lifetime
// cap of the endpoint is reached, and WeChat now refuses every parameter
// set it has not generated before while still serving those it has. The
// endpoint stays open; this one request is answered locally from now on.
func (c *Codes) refuseForGood(ctx context.Context, k cache.Key, r Request) {
	c.refusals.Refuse(ctx, r.App, k)
	c.mu.Lock()
	first := !c.capLogged[r]
	c.capLogged[r] = true
	c.mu.Unlock()
	if first {
		// Once per app and endpoint: the cap never resets, and every new
		// code from now on meets it.
		c.log.Error("lifetime cap reached: WeChat refuses new codes on this endpoint (45029); "+
			"codes generated before are still served, each refused request is answered locally for CACHE_TTL",
			"app", r.App, "endpoint", r.Endpoint, "errcode", int(wechat.LifetimeQuota))
	}
}

// store puts e in L1 and reports whether L1 kept it.
func (c *Codes) store(k cache.Key, e *cache.Entry) bool {
	if !c.l1.Set(k, e) {
		return false
	}
	if c.hooks.Stored != nil {
		c.hooks.Stored()
	}
	return true
}

func (c *Codes) lookup(s Status) {
	if c.hooks.Lookup != nil {
		c.hooks.Lookup(s.String())
	}
}

func (c *Codes) l2Error(op string, err error) {
	if c.hooks.L2Error != nil {
		c.hooks.L2Error(op, err)
	}
}
