package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// Lease results, the values of fleet_leases_total's result label.
const (
	// LeaseAcquired: the flight took the key's lease at once and loaded.
	LeaseAcquired = "acquired"
	// LeaseWaited: another replica's flight answered: its image appeared
	// in the shared tier, or its errcode did.
	LeaseWaited = "waited"
	// LeaseTimedOut: the flight waited and no answer came (the holder
	// crashed, failed without an errcode, outlived its lease, or a poll
	// failed), so it loaded itself.
	LeaseTimedOut = "timed_out"
)

// LeaseResults lists every lease result, for metrics that start at zero.
var LeaseResults = []string{LeaseAcquired, LeaseWaited, LeaseTimedOut}

// FlightOptions configures NewFlight.
type FlightOptions struct {
	// LeaseExpiry is how long a lease holds without being released, and
	// the longest a flight waits for another replica's: longer than the
	// longest fetch a holder can make (2 × UPSTREAM_TIMEOUT + the retry
	// backoff + UPSTREAM_MAX_WAIT). 0 is 25s.
	LeaseExpiry time.Duration
	// Poll is the shortest pause between two looks for another replica's
	// answer; each pause is jittered up to 2.5 × Poll, so waiters do not
	// look in step. 0 is 20ms.
	Poll time.Duration
	// FailureTTL is how long a holder's errcode stays for the waiters to
	// read; 0 is 1s.
	FailureTTL time.Duration
	// Logger receives what goes wrong with a lease; nil is the client's.
	Logger *slog.Logger
}

// Flight is codes.Flight across the fleet: one flight per key in this
// replica (singleflight), and one per key across the fleet (a lease in
// Redis, taken with SET NX PX and a random owner, released with a
// compare-and-delete). The holder runs load, which looks in L2 once more
// and stores what it fetched there before the flight's callers are
// answered and before the lease is released; the others wait for the
// image to appear in L2 (or the holder's errcode), up to the lease's
// expiry, then load themselves. With Redis unreachable it is LocalFlight.
//
// A lease never outlives its holder's fetch by more than a few seconds: a
// release (and the image write before it) that Redis could not take is
// owed, made as soon as Redis answers again (owed.go); and Stop ends the
// flights still running at shutdown, whose holders then release.
type Flight struct {
	c          *Client
	expiry     time.Duration
	poll       time.Duration
	failureTTL time.Duration
	log        *slog.Logger
	g          singleflight.Group

	// life ends with Stop: every flight's context does too.
	life    context.Context
	stop    context.CancelFunc
	running running
}

var _ codes.Flight = (*Flight)(nil)

// NewFlight returns the fleet's flight on c.
func NewFlight(c *Client, o FlightOptions) *Flight {
	if o.LeaseExpiry <= 0 {
		o.LeaseExpiry = 25 * time.Second
	}
	if o.Poll <= 0 {
		o.Poll = 20 * time.Millisecond
	}
	if o.FailureTTL <= 0 {
		o.FailureTTL = time.Second
	}
	if o.Logger == nil {
		o.Logger = c.log
	}
	f := &Flight{c: c, expiry: o.LeaseExpiry, poll: o.Poll, failureTTL: o.FailureTTL, log: o.Logger}
	f.life, f.stop = context.WithCancel(context.Background())
	return f
}

// Stop ends every flight, running or to come: a load sees its context
// cancelled, a holder releases its lease (or owes the release), a waiter
// stops waiting. Flights' callers get an error. For shutdown.
func (f *Flight) Stop() { f.stop() }

// Wait returns when no flight runs (every lease this replica held is
// released or owed), or with ctx's error when ctx ends first.
func (f *Flight) Wait(ctx context.Context) error { return f.running.wait(ctx) }

// running counts the flights under way; its zero can be waited for.
type running struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed when n drops to 0
}

func (r *running) add() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 {
		r.zero = make(chan struct{})
	}
	r.n++
}

func (r *running) done() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n--
	if r.n == 0 {
		close(r.zero)
	}
}

func (r *running) wait(ctx context.Context) error {
	r.mu.Lock()
	if r.n == 0 {
		r.mu.Unlock()
		return nil
	}
	zero := r.zero
	r.mu.Unlock()
	select {
	case <-zero:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// flightResult is what this replica's flight for a key answers every
// caller: the entry, and whether another replica's flight produced it.
type flightResult struct {
	e     *cache.Entry
	fleet bool
}

// Run implements codes.Flight.
func (f *Flight) Run(ctx context.Context, app string, k cache.Key, load func(context.Context) (*cache.Entry, error)) (*cache.Entry, codes.Source, error) {
	r, leading, err := codes.Collapse(ctx, &f.g, string(k[:]), func(detached context.Context) (flightResult, error) {
		f.running.add()
		defer f.running.done()
		// Only Stop ends a flight its callers have left.
		detached, cancel := context.WithCancel(detached)
		defer cancel()
		defer context.AfterFunc(f.life, cancel)()
		if f.life.Err() != nil {
			cancel() // now, not in AfterFunc's goroutine
		}
		e, fleet, err := f.lead(detached, app, k, load)
		return flightResult{e: e, fleet: fleet}, err
	})
	switch {
	case r.fleet:
		return r.e, codes.Fleet, err
	case leading:
		return r.e, codes.Own, err
	}
	return r.e, codes.Joined, err
}

// flightKeys are one key's names in Redis, and the app whose key seals
// what is kept there.
type flightKeys struct{ app, image, lease, failure string }

// lead is this replica's flight for k: take the lease and load, or wait
// for the holder's answer. fleet reports that the answer is another
// replica's (its entry, read from L2 by load; or its errcode).
func (f *Flight) lead(ctx context.Context, app string, k cache.Key, load func(context.Context) (*cache.Entry, error)) (e *cache.Entry, fleet bool, err error) {
	hexKey := hex.EncodeToString(k[:])
	keys := flightKeys{app: app, image: imageKey(f.c, app, k), lease: f.c.Key(app, "lease", hexKey),
		failure: f.c.Key(app, "fail", hexKey)}
	owner := newOwner()
	deadline := time.Now().Add(f.expiry)
	waited := false
	for {
		if err := ctx.Err(); err != nil {
			// Stopped: no lease to take for a load that cannot run.
			return nil, false, err
		}
		acquiredBy := time.Now().Add(f.expiry)
		holder, err := f.acquire(ctx, keys, owner)
		if holder == imageHeld && err == nil {
			// Another replica's flight finished before this one began:
			// load reads the image from L2 (a shared hit), no lease.
			e, err := load(ctx)
			return e, false, err
		}
		if err != nil {
			// Redis unreachable: this replica's flight alone.
			if waited {
				f.c.Lease(LeaseTimedOut)
			}
			e, err := load(ctx)
			return e, false, err
		}
		if holder == owner {
			if waited {
				f.c.Lease(LeaseTimedOut)
			} else {
				f.c.Lease(LeaseAcquired)
			}
			e, err := f.hold(ctx, keys, owner, acquiredBy, load)
			return e, false, err
		}
		waited = true
		switch answer, holderErr := f.wait(ctx, keys, holder, deadline); answer {
		case imageAppeared:
			f.c.Lease(LeaseWaited)
			// load reads it from L2 (checked) and fills L1.
			e, err := load(ctx)
			if err != nil {
				return nil, false, err
			}
			return e, true, nil
		case holderFailed:
			f.c.Lease(LeaseWaited)
			return nil, true, holderErr
		case leaseReleased:
			// The holder left no answer: take the lease ourselves.
			continue
		default: // gaveUp
			if err := ctx.Err(); err != nil {
				return nil, false, err
			}
			f.c.Lease(LeaseTimedOut)
			e, err := load(ctx)
			return e, false, err
		}
	}
}

// acquireScript answers imageHeld when the image KEYS[2] is there already
// (no lease is needed to read it); else it takes the lease KEYS[1] for
// ARGV[1] for ARGV[2] ms unless another holds it, and answers the holder.
// One round trip either way: the two keys share the app's hash tag.
var acquireScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 1 then
  return ARGV[3]
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return ARGV[1]
end
return redis.call('GET', KEYS[1])
`)

// imageHeld is acquire's answer when L2 holds the image: never an owner
// (those are hex).
const imageHeld = "image"

// acquire returns the lease's holder: owner when this flight took it, or
// imageHeld when the image is in L2 already and no lease was taken.
func (f *Flight) acquire(ctx context.Context, keys flightKeys, owner string) (string, error) {
	var holder string
	err := f.c.Do(ctx, OpLease, func(ctx context.Context) error {
		var err error
		holder, err = acquireScript.Run(ctx, f.c.rdb, []string{keys.lease, keys.image}, owner,
			f.expiry.Milliseconds(), imageHeld).Text()
		return err
	})
	if err == nil && holder != imageHeld && !isOwner(holder) {
		// No owner the sidecar draws: a lease it cannot read is Redis
		// unreachable for this flight, which loads alone.
		f.c.unsealed(UnsealedLease)
		err = errors.New("fleet: the lease is held by no owner the sidecar draws")
	}
	return holder, err
}

// hold runs load under the lease, which ends by itself at expires, then
// releases it, leaving the errcode of a failed load for the waiters.
func (f *Flight) hold(ctx context.Context, keys flightKeys, owner string, expires time.Time, load func(context.Context) (*cache.Entry, error)) (e *cache.Entry, err error) {
	var marker []byte
	// Deferred: a load that panics releases the lease too.
	defer func() { f.release(ctx, keys, owner, expires, marker) }()
	e, err = load(underLease(ctx, expires))
	var we *wechat.Error
	if err != nil && errors.As(err, &we) {
		marker = f.encodeFailure(keys, owner, we)
	}
	return e, err
}

// releaseScript leaves the failure marker ARGV[2] (if any) for ARGV[3] ms
// and deletes the lease KEYS[1], only while ARGV[1] still holds it: a
// holder that outlived its lease touches neither the next holder's lease
// nor its waiters.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
end
return redis.call('DEL', KEYS[1])
`)

func (f *Flight) release(ctx context.Context, keys flightKeys, owner string, expires time.Time, marker []byte) {
	release := func(ctx context.Context) error {
		return releaseScript.Run(ctx, f.c.rdb, []string{keys.lease, keys.failure},
			owner, marker, f.failureTTL.Milliseconds()).Err()
	}
	// The release is the fleet's, not this request's: a request whose
	// budget one failed L2 call spent still lets the waiters go, rather
	// than have them wait out the lease. This is at most its second
	// Redis failure: the lease was taken, so the first call succeeded.
	err := f.c.Do(withoutBudget(ctx), OpLease, release)
	if !unreachable(err) {
		return
	}
	// Owed, not skipped: made once Redis answers again, after the image
	// write owed before it, so the waiters find the image rather than sit
	// out the lease (the compare-and-delete leaves a later holder's lease
	// alone).
	if f.c.owe(OpLease, expires, len(marker), release) {
		f.log.Debug("fleet: lease release owed until Redis answers", "key", keys.lease, "error", err.Error())
	}
}

type leaseKey struct{}

// underLease is ctx of a load holding a lease that ends by itself at
// expires: an image write it cannot make while Redis is out of reach is
// owed until then (L2.Set), for the waiters the release will let go.
func underLease(ctx context.Context, expires time.Time) context.Context {
	return context.WithValue(ctx, leaseKey{}, expires)
}

// leaseExpiry is when the lease ctx's load holds ends; ok is false for a
// load under no lease.
func leaseExpiry(ctx context.Context) (expires time.Time, ok bool) {
	expires, ok = ctx.Value(leaseKey{}).(time.Time)
	return expires, ok
}

// newOwner is a lease owner value no other flight will draw.
func newOwner() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// isOwner reports whether s is a value newOwner draws.
func isOwner(s string) bool {
	if len(s) != 32 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// withoutBudget is ctx without its request's budget (its values and
// deadline otherwise kept).
func withoutBudget(ctx context.Context) context.Context {
	return context.WithValue(ctx, budgetKey{}, (*budget)(nil))
}
