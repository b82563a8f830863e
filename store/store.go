// Package store is the durable tier behind the caches: one sealed object
// per cache key, in a directory (file://) or an S3-compatible bucket
// (s3://), so a code fetched once is never fetched again for as long as the
// store keeps it, across restarts, evictions and Redis flushes.
//
// It owns the object format (an entry sealed with package seal, its object
// name as associated data), the two backends, the breaker, the write-behind
// queue and the store's figures. Every object is a value others can write
// (a shared volume, a bucket): one that does not open, is truncated or
// belongs to another key is a miss, counted, and left for the next write
// to replace; the store never deletes what it cannot open (a rotated key
// must not wipe it).
//
// The store is never a reason to fail a request or to slow one by more than
// its timeout: a fault is a miss, an open breaker skips it, and writes go
// through a bounded queue that drops rather than blocks. It never imports
// proxy/, codes/ or fleet/, never logs an object's contents, and never
// reports or logs a credential.
package store

import (
	"context"
	"errors"
	"fmt"
	"github.com/wxa-sidecar/wxa-sidecar/internal/breaker"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/internal/neterr"
	"github.com/wxa-sidecar/wxa-sidecar/seal"
)

// Purpose is the HKDF label of the store's keys: a value sealed for Redis
// (another purpose) never opens as an object of the store, nor the reverse.
const Purpose = "durable store v1"

// maxObject bounds what a get reads: an image WeChat sends is at most a
// few hundred KB; anything far larger is not one of ours.
const maxObject = 8 << 20

// backend is where the objects are: a directory or a bucket. name is the
// object's name, also its seal's associated data.
type backend interface {
	// get returns the object named name, errNotFound for none, at most
	// maxObject bytes (errTooLarge beyond).
	get(ctx context.Context, name string) ([]byte, error)
	put(ctx context.Context, name string, b []byte) error
	// check reports whether the store can be used: nil, an error wrapping
	// errRefused (the store answers no: a missing bucket, refused
	// credentials, a directory that cannot be written), or a fault.
	check(ctx context.Context) error
	// name is the object name of app's key k.
	name(app string, k cache.Key) string
	status(*Status)
	close()
}

// Breaker policy, as the shared tier's (internal/breaker): open after
// this many consecutive faults, let one probe through after the cool-off.
// A store back on its feet is used again within about one cool-off.
const (
	breakerThreshold = breaker.Threshold
	breakerCoolOff   = breaker.CoolOff
)

var (
	errNotFound = errors.New("store: not found")
	errTooLarge = errors.New("store: object larger than any image")
	// errRefused: the store answered, and the answer is that it cannot be
	// used as configured.
	errRefused = errors.New("store: refused")
	// errSkipped: the breaker is open, the store was not tried.
	errSkipped = errors.New("store: skipped while the store is down")
)

// Store is the durable tier (codes.Store). It is safe for concurrent use.
type Store struct {
	b        backend
	boxes    map[string]*seal.Box
	keyFrom  string
	location string
	timeout  time.Duration
	ttl      time.Duration
	log      *slog.Logger
	hooks    Hooks
	now      func() time.Time
	breaker  breaker.Breaker

	queue chan job
	// pending counts the writes queued or being made.
	pending atomic.Int64
	drops   atomic.Uint64
	// stop ends the workers and the background loops; stopped when they
	// have all returned.
	stop      context.CancelFunc
	stopCtx   context.Context
	workers   sync.WaitGroup
	closeOnce sync.Once
	closing   atomic.Bool
}

// Open returns the store URL names. It does not wait for it: a store that
// cannot be reached at startup is used once it answers, and one that
// refuses (a missing bucket, refused credentials) is logged once at ERROR,
// naming STORE_URL, and skipped until it stops refusing. Open fails only on
// what no retry can mend: a URL it cannot parse, an app without a key.
func Open(o Options) (*Store, error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Queue <= 0 {
		o.Queue = DefaultQueue
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, errors.New("store: STORE_URL does not parse")
	}
	s := &Store{timeout: o.Timeout, ttl: o.TTL, log: o.Logger, hooks: o.Hooks, now: o.Now,
		queue: make(chan job, o.Queue), boxes: map[string]*seal.Box{}}
	s.breaker.Now = o.Now
	s.stopCtx, s.stop = context.WithCancel(context.Background())
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("store: STORE_URL: file://%s: want file:///ABSOLUTE/DIR", u.Host)
		}
		if !strings.HasPrefix(u.Path, "/") {
			return nil, errors.New("store: STORE_URL: want file:///ABSOLUTE/DIR")
		}
		s.b = newDir(u.Path, o.MaxBytes, o.TTL, o.Logger, o.Now)
		s.location = "file://" + u.Path
	case "s3":
		b, err := newS3(u, o)
		if err != nil {
			return nil, err
		}
		s.b = b
		s.location = "s3://" + u.Host + u.Path
	default:
		return nil, errors.New("store: STORE_URL: want file:///DIR or s3://BUCKET/PREFIX")
	}
	s.keyFrom = "app_secret"
	for app, secret := range o.Secrets {
		if !validApp(app) {
			return nil, fmt.Errorf("store: app %q: not a name the store can file objects under", app)
		}
		key := []byte(secret)
		if len(o.Key) > 0 {
			key = o.Key
			s.keyFrom = "store_key_file"
		}
		box, err := seal.New(key, app, Purpose)
		if err != nil {
			return nil, fmt.Errorf("store: app %s: %w", app, err)
		}
		s.boxes[app] = box
	}
	for range writers {
		s.workers.Go(s.work)
	}
	s.workers.Go(s.checkAtStart)
	if d, ok := s.b.(*dir); ok {
		s.workers.Go(func() { d.prune(s.stopCtx) })
	}
	return s, nil
}

// checkAtStart asks the store once whether it can be used, so a missing
// bucket or refused credentials are one clear line at startup instead of a
// count of failed operations.
func (s *Store) checkAtStart() {
	// A first TLS handshake and a region lookup may take longer than one
	// operation's budget; this check holds up no request.
	ctx, cancel := context.WithTimeout(s.stopCtx, max(s.timeout, 5*time.Second))
	defer cancel()
	err := s.b.check(ctx)
	switch {
	case err == nil:
		s.log.Info("durable store ready", "store", s.location, "key", s.keyFrom)
		return
	case s.stopCtx.Err() != nil:
		return
	case errors.Is(err, errRefused):
		s.log.Error("STORE_URL: the durable store refuses; serving without it until it answers (checked every "+
			breakerCoolOff.String()+")", "store", s.location, "error", err.Error())
	default:
		s.log.Warn("STORE_URL: the durable store does not answer yet; serving without it until it does",
			"store", s.location, "error", err.Error())
	}
	if s.breaker.Trip() && s.hooks.Up != nil {
		s.hooks.Up(false)
	}
}

// Get returns the entry stored for app's key k: cache.ErrNotFound for none
// (absent, expired, or an object that does not open), another error for a
// fault of the store, which callers treat as a miss. It takes at most the
// store's timeout.
func (s *Store) Get(ctx context.Context, app string, k cache.Key) (*cache.Entry, error) {
	box := s.boxes[app]
	if box == nil {
		return nil, cache.ErrNotFound
	}
	name := s.b.name(app, k)
	var sealed []byte
	d, err := s.do(ctx, OpGet, func(ctx context.Context) error {
		var err error
		sealed, err = s.b.get(ctx, name)
		return err
	}, func(err error) bool { return errors.Is(err, errNotFound) || errors.Is(err, errTooLarge) })
	switch {
	case errors.Is(err, errNotFound):
		s.report(OpGet, ResultMiss, d)
		return nil, cache.ErrNotFound
	case errors.Is(err, errTooLarge):
		s.corrupt(app, name, err, d)
		return nil, cache.ErrNotFound
	case err != nil:
		return nil, err
	}
	return s.open(app, name, box, sealed, d)
}

// open turns an object of app's into its entry: a miss if it does not
// open, does not decode or is older than the TTL.
func (s *Store) open(app, name string, box *seal.Box, sealed []byte, d time.Duration) (*cache.Entry, error) {
	plain, err := box.Open(sealed, name)
	if err != nil {
		s.corrupt(app, name, err, d)
		return nil, cache.ErrNotFound
	}
	written, e, err := decodeEntry(plain)
	if err != nil {
		s.corrupt(app, name, err, d)
		return nil, cache.ErrNotFound
	}
	if s.ttl > 0 && s.now().Sub(written) > s.ttl {
		// Left for the directory's pruning or the bucket's lifecycle rule.
		s.report(OpGet, ResultMiss, d)
		return nil, cache.ErrNotFound
	}
	s.report(OpGet, ResultHit, d)
	return e, nil
}

// corrupt counts and logs an object that did not open; it is left in
// place for the next write of its key to replace.
func (s *Store) corrupt(app, name string, err error, d time.Duration) {
	s.report(OpGet, ResultCorrupt, d)
	s.log.Warn("durable store: an object does not open (swapped, truncated, forged, or sealed under another key); "+
		"a miss, left for the next fetch to overwrite", "app", app, "object", name, "error", err.Error())
}

// Put queues e to be written under app's key k by a background worker: it
// never blocks and never fails its caller. A full queue drops the write and
// counts it.
func (s *Store) Put(_ context.Context, app string, k cache.Key, e *cache.Entry) {
	if s.boxes[app] == nil || e == nil || len(e.Body) == 0 {
		return
	}
	if s.closing.Load() && s.stopCtx.Err() != nil {
		s.dropped(DropShutdown)
		return
	}
	s.pending.Add(1)
	select {
	case s.queue <- job{app: app, k: k, e: e, at: s.now()}:
	default:
		s.pending.Add(-1)
		s.dropped(DropFull)
	}
}

// write seals and writes one entry, now.
func (s *Store) write(ctx context.Context, j job) error {
	name := s.b.name(j.app, j.k)
	sealed := s.boxes[j.app].Seal(encodeEntry(j.at, j.e), name)
	d, err := s.do(ctx, OpPut, func(ctx context.Context) error { return s.b.put(ctx, name, sealed) }, nil)
	if err == nil {
		s.report(OpPut, ResultOK, d)
	}
	return err
}

// do runs f as one operation op: skipped while the breaker is open,
// bounded by the timeout, and recorded in the breaker. A fault is reported
// here; a success, or an error answered says is an answer of a working
// store (a miss), is the caller's to report, with the duration.
func (s *Store) do(ctx context.Context, op string, f func(context.Context) error, answered func(error) bool) (time.Duration, error) {
	if !s.breaker.Allow() {
		s.report(op, ResultBreakerOpen, 0)
		return 0, errSkipped
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	start := s.now()
	err := f(ctx)
	d := s.now().Sub(start)
	if err == nil || (answered != nil && answered(err)) {
		s.success()
		return d, err
	}
	result := ResultError
	if neterr.IsTimeout(err) {
		result = ResultTimeout
	}
	s.report(op, result, d)
	if s.breaker.Failure() {
		s.log.Warn("durable store unreachable: skipped until a probe succeeds; codes are fetched as without it",
			"store", s.location, "op", op, "error", err.Error(), "probe_after", breakerCoolOff.String())
		if s.hooks.Up != nil {
			s.hooks.Up(false)
		}
	}
	return d, fmt.Errorf("store: %s: %w", op, err)
}

func (s *Store) success() {
	if s.breaker.Success() {
		s.log.Info("durable store answers again: back in use", "store", s.location)
		if s.hooks.Up != nil {
			s.hooks.Up(true)
		}
	}
}

func (s *Store) report(op, result string, d time.Duration) {
	if s.hooks.Request != nil {
		s.hooks.Request(op, result, d)
	}
}

func (s *Store) dropped(reason string) {
	s.drops.Add(1)
	if s.hooks.Dropped != nil {
		s.hooks.Dropped(reason)
	}
}

// Close writes what is queued, until ctx ends (the sidecar's exit bound),
// then stops the workers; writes still queued are dropped and counted.
// Calls after the first return at once.
func (s *Store) Close(ctx context.Context) {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		s.flush(ctx)
		s.stop()
		s.workers.Wait()
		for {
			select {
			case <-s.queue:
				s.pending.Add(-1)
				s.dropped(DropShutdown)
				continue
			default:
			}
			break
		}
		s.b.close()
	})
}

// Check opens the store as Open does, asks it once whether it can be used
// (the bucket exists and the credentials may see it; the directory can be
// written), and closes it: `wxa-sidecar --check-config`'s question. Unlike
// Open, a store that refuses or does not answer is an error here.
func Check(ctx context.Context, o Options) error {
	o.Logger = nil
	s, err := Open(o)
	if err != nil {
		return err
	}
	defer s.Close(ctx)
	return s.b.check(ctx)
}
