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
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/seal"
)

// Purpose is the HKDF label of the store's keys: a value sealed for Redis
// (another purpose) never opens as an object of the store, nor the reverse.
const Purpose = "durable store v1"

// Ops, the bounded values of the metrics' op label.
const (
	OpGet = "get"
	OpPut = "put"
)

// Results, the bounded values of the metrics' result label. A get is hit,
// miss (absent or expired), corrupt (an object that does not open or
// decode: swapped, truncated, forged, or sealed under another key) or a
// fault; a put is ok or a fault.
const (
	ResultHit         = "hit"
	ResultMiss        = "miss"
	ResultCorrupt     = "corrupt"
	ResultOK          = "ok"
	ResultError       = "error"
	ResultTimeout     = "timeout"
	ResultBreakerOpen = "breaker_open"
)

// Drop reasons, the values of write_drops_total's reason label.
const (
	DropFull     = "queue_full" // the queue was full: the write was never queued
	DropFailed   = "failed"     // every attempt failed
	DropShutdown = "shutdown"   // still queued when the exit bound ran out
)

// Ops, Results and DropReasons list every value, for metrics that start at
// zero.
var (
	Ops         = []string{OpGet, OpPut}
	Results     = []string{ResultHit, ResultMiss, ResultCorrupt, ResultOK, ResultError, ResultTimeout, ResultBreakerOpen}
	DropReasons = []string{DropFull, DropFailed, DropShutdown}
)

// Defaults of Options.
const (
	DefaultTimeout  = 500 * time.Millisecond
	DefaultMaxBytes = 10 << 30
	// DefaultQueue bounds the writes waiting to be made: about 25 MiB of
	// images of 50 KB at the most.
	DefaultQueue = 512
)

// maxObject bounds what a get reads: an image WeChat sends is at most a
// few hundred KB; anything far larger is not one of ours.
const maxObject = 8 << 20

// Hooks report what the store does; nil fields are no-ops. They must not
// block.
type Hooks struct {
	// Request is called once per operation tried or skipped.
	Request func(op, result string, d time.Duration)
	// Up is called when the store is found usable or not.
	Up func(up bool)
	// Dropped is called for each write given up, with its reason.
	Dropped func(reason string)
}

// Options configures Open.
type Options struct {
	// URL is STORE_URL: file:///DIR or s3://BUCKET[/PREFIX]. Required.
	URL string
	// Endpoint is the S3 endpoint (STORE_ENDPOINT), as a URL:
	// https://cos.ap-guangzhou.myqcloud.com, http://minio:9000; empty is
	// AWS.
	Endpoint string
	// Region is STORE_REGION; empty lets the client ask the bucket.
	Region string
	// AccessKey and SecretKey, when set, are the S3 credentials; else the
	// standard chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, web
	// identity, the instance's role).
	AccessKey, SecretKey string
	// Timeout bounds each operation (STORE_TIMEOUT); 0 is DefaultTimeout.
	Timeout time.Duration
	// TTL, when above 0, is how long an object counts: an older one is a
	// miss (STORE_TTL). The directory prunes it; a bucket's lifecycle rule
	// does.
	TTL time.Duration
	// MaxBytes bounds the directory store (STORE_MAX_BYTES); 0 is
	// DefaultMaxBytes. The least recently used objects go first.
	MaxBytes int64
	// Secrets are the apps' secrets (appid → secret): each app's objects
	// are sealed with a key derived from its secret, unless Key is set.
	Secrets map[string]string
	// Key, when set, is the store's own key (STORE_KEY_FILE): each app's
	// key is derived from it instead, so a rotated app secret keeps the
	// store readable.
	Key []byte
	// Queue bounds the write-behind queue; 0 is DefaultQueue.
	Queue int
	// Logger receives the store's lines; nil discards.
	Logger *slog.Logger
	Hooks  Hooks
	// Now is the clock of the breaker, the TTL and the pruning; nil is
	// time.Now.
	Now func() time.Time
}

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

var (
	errNotFound = errors.New("store: not found")
	errTooLarge = errors.New("store: object larger than any image")
	// errRefused: the store answered, and the answer is that it cannot be
	// used as configured.
	errRefused = errors.New("store: refused")
	// errSkipped: the breaker is open, the store was not tried.
	errSkipped = errors.New("store: skipped while the store is down")
	errClosed  = errors.New("store: closed")
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
	breaker  breaker

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
	s.breaker.now = o.Now
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
	if s.breaker.trip() && s.hooks.Up != nil {
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
	if !s.breaker.allow() {
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
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		result = ResultTimeout
	}
	s.report(op, result, d)
	if s.breaker.failure() {
		s.log.Warn("durable store unreachable: skipped until a probe succeeds; codes are fetched as without it",
			"store", s.location, "op", op, "error", err.Error(), "probe_after", breakerCoolOff.String())
		if s.hooks.Up != nil {
			s.hooks.Up(false)
		}
	}
	return d, fmt.Errorf("store: %s: %w", op, err)
}

func (s *Store) success() {
	if s.breaker.success() {
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

// QueueDepth is how many writes wait in the queue or are being made.
func (s *Store) QueueDepth() int { return int(max(s.pending.Load(), 0)) }

// Status is the store for /status: where it is and how it fares, never a
// credential or a key.
type Status struct {
	URL      string `json:"url"`
	Endpoint string `json:"endpoint,omitempty"`
	Up       bool   `json:"up"`
	Breaker  string `json:"breaker"`
	// KeyFrom says what the objects are sealed with: app_secret (a key
	// derived from each app's secret) or store_key_file.
	KeyFrom    string `json:"key_from"`
	TTL        string `json:"ttl"`
	QueueDepth int    `json:"write_queue_depth"`
	Drops      uint64 `json:"write_drops"`
	// Bytes and MaxBytes: the directory store's size as of its last scan
	// and writes since, and its bound.
	Bytes    int64 `json:"bytes,omitempty"`
	MaxBytes int64 `json:"max_bytes,omitempty"`
}

// Status reports the store.
func (s *Store) Status() Status {
	state := s.breaker.state()
	st := Status{URL: s.location, Up: state == "closed", Breaker: state, KeyFrom: s.keyFrom, TTL: s.ttl.String(),
		QueueDepth: s.QueueDepth(), Drops: s.drops.Load()}
	if s.ttl <= 0 {
		st.TTL = "forever"
	}
	s.b.status(&st)
	return st
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

// objectName is PREFIX/APPID/KEYHEX, the object name of both backends
// (a directory's prefix is empty).
func objectName(prefix, app string, k cache.Key) string {
	h := hex.EncodeToString(k[:])
	if prefix == "" {
		return app + "/" + h
	}
	return prefix + "/" + app + "/" + h
}

// The plaintext of an object: a format byte, the time it was written (Unix
// seconds, uvarint), then the content type and disposition, each after its
// length as a uvarint, then the body to the end. Sealing authenticates it
// all, with the object's name.
const entryFormat = 1

func encodeEntry(at time.Time, e *cache.Entry) []byte {
	b := make([]byte, 1, 1+3*binary.MaxVarintLen64+len(e.ContentType)+len(e.ContentDisposition)+len(e.Body))
	b[0] = entryFormat
	b = binary.AppendUvarint(b, uint64(max(at.Unix(), 0)))
	b = binary.AppendUvarint(b, uint64(len(e.ContentType)))
	b = append(b, e.ContentType...)
	b = binary.AppendUvarint(b, uint64(len(e.ContentDisposition)))
	b = append(b, e.ContentDisposition...)
	return append(b, e.Body...)
}

func decodeEntry(b []byte) (time.Time, *cache.Entry, error) {
	if len(b) < 1 || b[0] != entryFormat {
		return time.Time{}, nil, errors.New("store: an object of another format")
	}
	at, n := binary.Uvarint(b[1:])
	if n <= 0 || at > 1<<62 {
		return time.Time{}, nil, errors.New("store: object framing is broken")
	}
	rest := b[1+n:]
	contentType, rest, err := readField(rest)
	if err != nil {
		return time.Time{}, nil, err
	}
	contentDisposition, body, err := readField(rest)
	if err != nil {
		return time.Time{}, nil, err
	}
	if len(body) == 0 {
		return time.Time{}, nil, errors.New("store: object without a body")
	}
	return time.Unix(int64(at), 0), cache.NewEntry(body, contentType, contentDisposition), nil
}

func readField(b []byte) (string, []byte, error) {
	n, size := binary.Uvarint(b)
	if size <= 0 || n > uint64(len(b)-size) {
		return "", nil, errors.New("store: object framing is broken")
	}
	end := size + int(n)
	return string(b[size:end]), b[end:], nil
}

// validApp reports an appid safe as one element of a path or object name.
func validApp(app string) bool {
	if app == "" || app == "." || app == ".." || len(app) > 128 {
		return false
	}
	for _, c := range app {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
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
