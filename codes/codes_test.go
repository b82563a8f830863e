package codes_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// The seams are faked here and nowhere else: a Fetcher (fetcher), a
// cache.Shared (sharedTier) and, once, a Flight. L1 is a real cache.Memory.

var unlimited = codes.Request{App: "wxapp", Endpoint: wechat.PathUnlimited}

// fetcher answers Fetch with answer, counting the calls.
type fetcher struct {
	calls  atomic.Int64
	answer func(ctx context.Context, call int) (*codes.Image, error)
}

func (f *fetcher) Fetch(ctx context.Context) (*codes.Image, error) {
	return f.answer(ctx, int(f.calls.Add(1)))
}

func answering(img []byte) *fetcher {
	return &fetcher{answer: func(context.Context, int) (*codes.Image, error) {
		return &codes.Image{Body: img, ContentType: "image/jpeg", ContentDisposition: `attachment; filename="code.jpeg"`, NumUsed: "1"}, nil
	}}
}

func failing(err error) *fetcher {
	return &fetcher{answer: func(context.Context, int) (*codes.Image, error) { return nil, err }}
}

// sharedTier is an in-memory cache.Shared whose Get and Set can be made to
// fail.
type sharedTier struct {
	mu             sync.Mutex
	m              map[cache.Key]*cache.Entry
	getErr, setErr error
	gets, sets     int
	apps           []string // the app of every Get and Set
}

func newSharedTier() *sharedTier { return &sharedTier{m: map[cache.Key]*cache.Entry{}} }

func (s *sharedTier) Get(_ context.Context, app string, k cache.Key) (*cache.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gets++
	s.apps = append(s.apps, app)
	if s.getErr != nil {
		return nil, s.getErr
	}
	if e, ok := s.m[k]; ok {
		return e, nil
	}
	return nil, cache.ErrNotFound
}

func (s *sharedTier) Set(_ context.Context, app string, k cache.Key, e *cache.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sets++
	s.apps = append(s.apps, app)
	if s.setErr != nil {
		return s.setErr
	}
	s.m[k] = e
	return nil
}

func (s *sharedTier) held(k cache.Key) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[k]
	return ok
}

// counts records how often each hook was called.
type counts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counts) inc(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[name]++
}

func (c *counts) get(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[name]
}

// records keeps the log records at or above a level.
type records struct {
	mu   sync.Mutex
	msgs []string
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", rec.Level, rec.Message)
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, b.String())
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

func (r *records) matching(prefix string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.msgs {
		if strings.HasPrefix(m, prefix) {
			out = append(out, m)
		}
	}
	return out
}

type fixture struct {
	l1     *cache.Memory
	l2     *sharedTier
	codes  *codes.Codes
	hooks  *counts
	logs   *records
	failed []string // FetchFailed calls, guarded by hooks.mu
}

func (f *fixture) failures() []string {
	f.hooks.mu.Lock()
	defer f.hooks.mu.Unlock()
	return append([]string(nil), f.failed...)
}

func newFixture(t *testing.T, configure func(*codes.Options)) *fixture {
	t.Helper()
	l1, err := cache.NewMemory(cache.Options{MaxBytes: 64 << 20, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l1.Close)
	f := &fixture{l1: l1, l2: newSharedTier(), hooks: &counts{n: map[string]int{}}, logs: &records{}}
	o := codes.Options{L1: l1, L2: f.l2, RetryBackoff: time.Millisecond, Logger: slog.New(f.logs),
		Hooks: codes.Hooks{
			Lookup:      func(result string) { f.hooks.inc("lookup:" + result) },
			Stored:      func() { f.hooks.inc("stored") },
			Retried:     func(r codes.Request) { f.hooks.inc("retried:" + r.Endpoint) },
			GoodImage:   func(r codes.Request) { f.hooks.inc("good:" + r.Endpoint) },
			BrokenImage: func(r codes.Request) { f.hooks.inc("broken:" + r.Endpoint) },
			FetchFailed: func(r codes.Request, attempts int, err error) {
				f.hooks.mu.Lock()
				defer f.hooks.mu.Unlock()
				f.failed = append(f.failed, fmt.Sprintf("endpoint=%s attempts=%d error=%v", r.Endpoint, attempts, err))
			},
			L2Error: func(op string, err error) { f.hooks.inc("l2error:" + op) },
		}}
	if configure != nil {
		configure(&o)
	}
	f.codes = codes.New(o)
	return f
}

func (f *fixture) lookups() map[string]int {
	f.hooks.mu.Lock()
	defer f.hooks.mu.Unlock()
	out := map[string]int{}
	for k, v := range f.hooks.n {
		if name, ok := strings.CutPrefix(k, "lookup:"); ok {
			out[name] = v
		}
	}
	return out
}

func (f *fixture) wantLookups(t *testing.T, want map[string]int) {
	t.Helper()
	got := f.lookups()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Lookup hooks %v, want %v", got, want)
	}
}

// stored reports whether either tier holds k.
func (f *fixture) stored(k cache.Key) (l1, l2 bool) {
	_, l1 = f.l1.Peek(k)
	return l1, f.l2.held(k)
}

func key(i int) cache.Key { return cache.Key{byte(i), byte(i >> 8), byte(i >> 16), 0xC0} }

// waitFor polls cond, for at most ten seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestHitNeverFetches(t *testing.T) {
	f := newFixture(t, nil)
	img := qrJPEG(t, qrText, 430)
	fetch := answering(img)
	first, err := f.codes.Get(context.Background(), key(1), unlimited, fetch)
	if err != nil {
		t.Fatal(err)
	}
	if first.Status != codes.Stored || first.NumUsed != "1" || !bytes.Equal(first.Entry.Body, img) {
		t.Fatalf("first Get: status %v, Num-Used %q, %d bytes; want stored, 1, the image", first.Status, first.NumUsed, len(first.Entry.Body))
	}
	if first.Entry.ContentType != "image/jpeg" || first.Entry.ContentDisposition == "" {
		t.Errorf("headers not kept: %q, %q", first.Entry.ContentType, first.Entry.ContentDisposition)
	}
	for range 3 {
		res, err := f.codes.Get(context.Background(), key(1), unlimited, fetch)
		if err != nil || res.Status != codes.Hit || res.Entry.ETag != first.Entry.ETag || res.NumUsed != "" {
			t.Fatalf("Get = %v %v (Num-Used %q), want the stored entry as a hit without Num-Used", res.Status, err, res.NumUsed)
		}
	}
	if got := fetch.calls.Load(); got != 1 {
		t.Errorf("%d fetches, want 1", got)
	}
	f.wantLookups(t, map[string]int{"miss": 1, "hit": 3})
	if got := f.hooks.get("stored"); got != 1 {
		t.Errorf("Stored hook %d times, want 1", got)
	}
	if got := f.hooks.get("good:" + wechat.PathUnlimited); got != 1 {
		t.Errorf("GoodImage hook %d times, want 1", got)
	}
	if _, l2 := f.stored(key(1)); !l2 {
		t.Error("the image was not stored in L2")
	}
}

// A hit costs nothing but the lookup when the caller passes a Fetcher it
// already holds: the hit path's allocation budget is the proxy's.
func TestHitAllocatesNothing(t *testing.T) {
	var hits atomic.Int64
	f := newFixture(t, func(o *codes.Options) {
		// The fixture's hooks build strings; the proxy's use prebuilt
		// counters.
		o.Hooks.Lookup = func(result string) {
			if result == "hit" {
				hits.Add(1)
			}
		}
	})
	fetch := answering(qrJPEG(t, qrText, 430))
	if _, err := f.codes.Get(context.Background(), key(1), unlimited, fetch); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	allocs := testing.AllocsPerRun(100, func() {
		if res, _ := f.codes.Get(ctx, key(1), unlimited, fetch); res.Status != codes.Hit {
			t.Fatalf("status %v, want hit", res.Status)
		}
	})
	if allocs != 0 {
		t.Errorf("a hit allocates %v times, want 0", allocs)
	}
	if hits.Load() == 0 {
		t.Error("no hit reported to the Lookup hook")
	}
}

// N identical misses at once: one fetch, the caller whose flight fetched
// gets Stored and Num-Used, the others Collapsed — whether they joined the
// flight or arrived as it ended (the flight's second look in L1).
func TestConcurrentMissesShareOneFetch(t *testing.T) {
	const n = 8
	f := newFixture(t, nil)
	img := qrPNG(t, qrText, 430)
	release := make(chan struct{})
	fetch := &fetcher{answer: func(ctx context.Context, _ int) (*codes.Image, error) {
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return &codes.Image{Body: img, ContentType: "image/jpeg", NumUsed: "7"}, nil
	}}
	results := make(chan codes.Result, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			res, err := f.codes.Get(context.Background(), key(2), unlimited, fetch)
			results <- res
			errs <- err
		}()
	}
	// Every caller has missed L1; the fetch holds the flight open.
	waitFor(t, "all callers to miss L1", func() bool { return f.l1.Stats().Misses == n })
	close(release)
	statuses := map[codes.Status]int{}
	for range n {
		res := <-results
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		statuses[res.Status]++
		if !bytes.Equal(res.Entry.Body, img) {
			t.Errorf("%v caller got %d bytes, want the image", res.Status, len(res.Entry.Body))
		}
		if want := map[bool]string{true: "7", false: ""}[res.Status == codes.Stored]; res.NumUsed != want {
			t.Errorf("%v caller got Num-Used %q, want %q", res.Status, res.NumUsed, want)
		}
	}
	if got := fetch.calls.Load(); got != 1 {
		t.Errorf("%d fetches for %d identical misses, want 1", got, n)
	}
	if statuses[codes.Stored] != 1 || statuses[codes.Collapsed] != n-1 {
		t.Errorf("statuses %v, want 1 stored and %d collapsed", statuses, n-1)
	}
	f.wantLookups(t, map[string]int{"miss": 1, "collapsed": n - 1})
}

// The caller whose request started the flight hangs up: it gets its
// context's error, the fetch goes on, and the caller sharing the flight
// gets the image.
func TestCallerHangingUpDoesNotFailTheFlight(t *testing.T) {
	f := newFixture(t, nil)
	img := qrJPEG(t, qrText, 430)
	started, release := make(chan struct{}), make(chan struct{})
	var fetchCtxErr atomic.Value
	fetch := &fetcher{answer: func(ctx context.Context, _ int) (*codes.Image, error) {
		close(started)
		select {
		case <-release:
		case <-ctx.Done():
			fetchCtxErr.Store(ctx.Err())
			return nil, fmt.Errorf("%w: %w", codes.ErrTransient, ctx.Err())
		}
		return &codes.Image{Body: img, ContentType: "image/jpeg"}, nil
	}}
	leaderCtx, hangUp := context.WithCancel(context.Background())
	leaderErr := make(chan error, 1)
	go func() {
		_, err := f.codes.Get(leaderCtx, key(3), unlimited, fetch)
		leaderErr <- err
	}()
	<-started
	other := make(chan codes.Result, 1)
	otherErr := make(chan error, 1)
	go func() {
		res, err := f.codes.Get(context.Background(), key(3), unlimited, fetch)
		other <- res
		otherErr <- err
	}()
	waitFor(t, "the second caller to miss L1", func() bool { return f.l1.Stats().Misses == 2 })
	hangUp()
	if err := <-leaderErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("the caller that hung up got %v, want context.Canceled", err)
	}
	close(release)
	res, err := <-other, <-otherErr
	if err != nil {
		t.Fatalf("the caller sharing the flight got %v (fetch ctx: %v)", err, fetchCtxErr.Load())
	}
	if res.Status != codes.Collapsed || !bytes.Equal(res.Entry.Body, img) {
		t.Errorf("the caller sharing the flight got %v and %d bytes, want collapsed and the image", res.Status, len(res.Entry.Body))
	}
	if got := fetch.calls.Load(); got != 1 {
		t.Errorf("%d fetches, want 1", got)
	}
	if l1, _ := f.stored(key(3)); !l1 {
		t.Error("the flight's image was not stored")
	}
	f.wantLookups(t, map[string]int{"miss": 1, "collapsed": 1})
}

// A panic while loading is the callers' error, not the process's end; the
// next Get tries again.
func TestPanicInFetchIsAnError(t *testing.T) {
	f := newFixture(t, nil)
	img := qrJPEG(t, qrText, 430)
	fetch := &fetcher{answer: func(_ context.Context, call int) (*codes.Image, error) {
		if call == 1 {
			panic("fetch exploded")
		}
		return &codes.Image{Body: img}, nil
	}}
	_, err := f.codes.Get(context.Background(), key(4), unlimited, fetch)
	if err == nil || !strings.Contains(err.Error(), "panic") || !strings.Contains(err.Error(), "fetch exploded") {
		t.Fatalf("Get = %v, want an error naming the panic", err)
	}
	if l1, l2 := f.stored(key(4)); l1 || l2 {
		t.Fatalf("a panicked load stored something (L1 %v, L2 %v)", l1, l2)
	}
	res, err := f.codes.Get(context.Background(), key(4), unlimited, fetch)
	if err != nil || res.Status != codes.Stored {
		t.Errorf("Get after the panic = %v, %v; want stored", res.Status, err)
	}
	f.wantLookups(t, map[string]int{"miss": 2})
}

// A failure that may pass is tried once more, after the backoff.
func TestTransientFailureIsRetriedOnce(t *testing.T) {
	img := qrJPEG(t, qrText, 430)
	for _, tc := range []struct {
		name      string
		first     func() (*codes.Image, error)
		wantCount string // the hook the first attempt calls, besides Retried
	}{
		{"WeChat busy", func() (*codes.Image, error) {
			return nil, fmt.Errorf("upstream: %w: %w", codes.ErrTransient, wechat.Errorf(wechat.SystemBusy, "system error"))
		}, ""},
		{"HTTP 503", func() (*codes.Image, error) {
			return nil, fmt.Errorf("upstream: %w: HTTP 503", codes.ErrTransient)
		}, ""},
		{"broken image", func() (*codes.Image, error) { return &codes.Image{Body: corruptJPEG()}, nil }, "broken:"},
		{"truncated body", func() (*codes.Image, error) {
			_, err := codes.ReadImage(bytes.NewReader(img[:len(img)/2]), int64(len(img)))
			return nil, err
		}, "broken:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			fetch := &fetcher{answer: func(_ context.Context, call int) (*codes.Image, error) {
				if call == 1 {
					return tc.first()
				}
				return &codes.Image{Body: img, NumUsed: "3"}, nil
			}}
			res, err := f.codes.Get(context.Background(), key(5), unlimited, fetch)
			if err != nil || res.Status != codes.Stored || res.NumUsed != "3" {
				t.Fatalf("Get = %v (Num-Used %q), %v; want stored after one retry", res.Status, res.NumUsed, err)
			}
			if got := fetch.calls.Load(); got != 2 {
				t.Errorf("%d fetches, want 2", got)
			}
			if got := f.hooks.get("retried:" + wechat.PathUnlimited); got != 1 {
				t.Errorf("Retried hook %d times, want 1", got)
			}
			if failed := f.failures(); len(failed) != 0 {
				t.Errorf("FetchFailed hooks %q for a fetch that succeeded on its retry", failed)
			}
			if tc.wantCount != "" {
				if got := f.hooks.get(tc.wantCount + wechat.PathUnlimited); got != 1 {
					t.Errorf("%s hook %d times, want 1", tc.wantCount, got)
				}
			}
			f.wantLookups(t, map[string]int{"miss": 1})
		})
	}
}

// A failure that persists, or one not worth a retry, is the caller's
// error; nothing is stored in either tier, and the next Get asks again.
func TestFailureIsNeverStored(t *testing.T) {
	for _, tc := range []struct {
		name        string
		err         error
		wantFetches int64
	}{
		{"transient twice", fmt.Errorf("upstream: %w: HTTP 502", codes.ErrTransient), 2},
		{"WeChat refuses the page", wechat.Errorf(wechat.InvalidPage, "invalid page rid: 1"), 1},
		{"cancelled", fmt.Errorf("upstream: %w: %w", codes.ErrTransient, context.Canceled), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			fetch := failing(tc.err)
			res, err := f.codes.Get(context.Background(), key(6), unlimited, fetch)
			if !errors.Is(err, tc.err) || res.Entry != nil || res.Status != codes.Miss {
				t.Fatalf("Get = %v, %v, %v; want miss, no entry, %v", res.Status, res.Entry, err, tc.err)
			}
			if got := fetch.calls.Load(); got != tc.wantFetches {
				t.Errorf("%d fetches, want %d", got, tc.wantFetches)
			}
			if failed, want := f.failures(), fmt.Sprintf("attempts=%d error=%v", tc.wantFetches, tc.err); len(failed) != 1 || !strings.HasSuffix(failed[0], want) {
				t.Errorf("FetchFailed hooks %q, want one ending %q", failed, want)
			}
			if l1, l2 := f.stored(key(6)); l1 || l2 {
				t.Errorf("a failure was stored (L1 %v, L2 %v)", l1, l2)
			}
			if f.l2.sets != 0 {
				t.Errorf("%d L2 Sets, want 0", f.l2.sets)
			}
			if _, err := f.codes.Get(context.Background(), key(6), unlimited, fetch); !errors.Is(err, tc.err) {
				t.Errorf("second Get = %v, want %v again", err, tc.err)
			}
			if got := fetch.calls.Load(); got != 2*tc.wantFetches {
				t.Errorf("the failure was remembered: %d fetches after two Gets, want %d", got, 2*tc.wantFetches)
			}
			f.wantLookups(t, map[string]int{"miss": 2})
		})
	}
}

// Only a whole image that decodes, of sane dimensions, is ever stored: the
// rest is a broken image, retried once, then a 502 in WeChat's words, and
// the log says why.
func TestBrokenImagesAreRefused(t *testing.T) {
	jpg := qrJPEG(t, qrText, 430)
	for _, tc := range []struct {
		name string
		body []byte
		why  string
	}{
		{"JPEG markers with garbage between", corruptJPEG(), "JPEG"},
		{"PNG signature and IEND with garbage between", corruptPNG(), "PNG"},
		{"JPEG header declaring 65000x65000 px", hugeJPEGHeader(65000, 65000), "65000×65000"},
		{"JPEG header declaring 4097 px wide", hugeJPEGHeader(4097, 16), "4097×16"},
		{"half a JPEG", jpg[:len(jpg)/2], "not a whole JPEG or PNG"},
		{"an errcode answer labelled as an image", []byte(`{"errcode":-1,"errmsg":"system error"}`), "not a whole JPEG or PNG"},
		{"nothing", nil, "not a whole JPEG or PNG"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			fetch := answering(tc.body)
			res, err := f.codes.Get(context.Background(), key(7), unlimited, fetch)
			var we *wechat.Error
			if !errors.Is(err, codes.ErrBrokenImage) || !errors.Is(err, codes.ErrTransient) || !errors.As(err, &we) {
				t.Fatalf("Get = %v, %v; want a broken, transient image", res.Status, err)
			}
			if we.Status != 502 || we.Code != wechat.SystemBusy {
				t.Errorf("answered as HTTP %d errcode %v, want 502 and -1", we.Status, we.Code)
			}
			if !strings.Contains(err.Error(), tc.why) {
				t.Errorf("error %q does not say %q", err, tc.why)
			}
			if got := fetch.calls.Load(); got != 2 {
				t.Errorf("%d fetches, want 2 (one retry)", got)
			}
			if got := f.hooks.get("broken:" + wechat.PathUnlimited); got != 2 {
				t.Errorf("BrokenImage hook %d times, want 2", got)
			}
			if got := f.hooks.get("good:" + wechat.PathUnlimited); got != 0 {
				t.Errorf("GoodImage hook %d times, want 0", got)
			}
			if l1, l2 := f.stored(key(7)); l1 || l2 {
				t.Errorf("a broken image was stored (L1 %v, L2 %v)", l1, l2)
			}
			failed := f.failures()
			if len(failed) != 1 || !strings.Contains(failed[0], "broken image (wxa-sidecar): ") ||
				!strings.Contains(failed[0], "attempts=2") || !strings.Contains(failed[0], "endpoint="+wechat.PathUnlimited) {
				t.Errorf("FetchFailed hooks %q, want one that says why", failed)
			}
		})
	}
}

func TestReadImageBoundsTheBody(t *testing.T) {
	img := qrJPEG(t, qrText, 430)
	for _, size := range []int64{int64(len(img)), -1} {
		got, err := codes.ReadImage(bytes.NewReader(img), size)
		if err != nil || !bytes.Equal(got, img) || cap(got) != len(img) {
			t.Errorf("size %d: %d bytes (cap %d), %v; want the image in a buffer of its length", size, len(got), cap(got), err)
		}
	}
	for _, size := range []int64{codes.MaxImageBytes + 1, -1} {
		big := bytes.NewReader(make([]byte, codes.MaxImageBytes+1))
		if _, err := codes.ReadImage(big, size); !errors.Is(err, codes.ErrBrokenImage) {
			t.Errorf("size %d: an image over MaxImageBytes read with %v, want a broken image", size, err)
		}
	}
}

// 45029 belongs to the request: it is remembered for its key, and that key
// alone is answered locally, until RefusalTTL has passed.
func TestLifetimeRefusalIsRememberedPerKeyForItsTTL(t *testing.T) {
	base := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	var now atomic.Int64
	now.Store(base.UnixNano())
	f := newFixture(t, func(o *codes.Options) {
		o.RefusalTTL = time.Hour
		o.Now = func() time.Time { return time.Unix(0, now.Load()) }
	})
	refusal := wechat.Errorf(wechat.LifetimeQuota, "reach max api daily quota limit rid: 3")
	fetch := failing(refusal)
	wxacode := codes.Request{App: "wxapp", Endpoint: wechat.PathWxacode}
	if _, err := f.codes.Get(context.Background(), key(9), wxacode, fetch); err != refusal {
		t.Fatalf("first Get = %v, want WeChat's own answer", err)
	}
	for _, at := range []time.Duration{0, time.Hour - time.Second} {
		now.Store(base.Add(at).UnixNano())
		res, err := f.codes.Get(context.Background(), key(9), wxacode, fetch)
		var we *wechat.Error
		if !errors.As(err, &we) || we.Code != wechat.LifetimeQuota || we.Status != 200 || res.Status != codes.Miss {
			t.Fatalf("after %v: Get = %v, %v; want a local 45029", at, res.Status, err)
		}
		if !strings.Contains(we.Msg, "wxa-sidecar: WeChat answered 45029 to this request before") {
			t.Errorf("errmsg %q does not say the refusal is remembered", we.Msg)
		}
	}
	if got := fetch.calls.Load(); got != 1 {
		t.Fatalf("%d fetches, want 1: the refusal was not remembered", got)
	}
	// Another request on the same endpoint still goes to WeChat.
	if _, err := f.codes.Get(context.Background(), key(10), wxacode, fetch); err != refusal {
		t.Errorf("another key: %v, want WeChat's own answer", err)
	}
	if got := fetch.calls.Load(); got != 2 {
		t.Errorf("%d fetches, want 2: a refusal closed more than its key", got)
	}
	now.Store(base.Add(time.Hour).UnixNano())
	if _, err := f.codes.Get(context.Background(), key(9), wxacode, fetch); err != refusal {
		t.Errorf("after RefusalTTL: %v, want WeChat asked again", err)
	}
	if got := fetch.calls.Load(); got != 3 {
		t.Errorf("%d fetches, want 3: the refusal outlived RefusalTTL", got)
	}
	if logged := f.logs.matching("ERROR lifetime cap reached"); len(logged) != 1 ||
		!strings.Contains(logged[0], "app=wxapp") || !strings.Contains(logged[0], "endpoint="+wechat.PathWxacode) {
		t.Errorf("lifetime cap logged %q, want once for the app and endpoint", logged)
	}
	f.wantLookups(t, map[string]int{"miss": 5})
}

// The refusals are bounded: the 10,001st pushes out the least recently
// used.
func TestLifetimeRefusalsAreBounded(t *testing.T) {
	const max = 10_000
	f := newFixture(t, nil)
	fetch := failing(wechat.Errorf(wechat.LifetimeQuota, "reach max api daily quota limit"))
	for i := range max + 1 {
		f.codes.Get(context.Background(), key(i), unlimited, fetch)
	}
	if got := fetch.calls.Load(); got != max+1 {
		t.Fatalf("%d fetches for %d keys", got, max+1)
	}
	for _, i := range []int{max, 1} {
		if _, err := f.codes.Get(context.Background(), key(i), unlimited, fetch); !errors.Is(err, codes.ErrRefusedBefore) {
			t.Errorf("key %d: %v, want the refusal remembered", i, err)
		}
	}
	if _, err := f.codes.Get(context.Background(), key(0), unlimited, fetch); errors.Is(err, codes.ErrRefusedBefore) {
		t.Error("the least recently used refusal is still held past the bound")
	}
	if got := fetch.calls.Load(); got != max+2 {
		t.Errorf("%d fetches, want %d", got, max+2)
	}
}

// An image another replica stored in L2 is a shared hit: no fetch, and L1
// holds it from then on.
func TestSharedTierHitPopulatesL1(t *testing.T) {
	f := newFixture(t, nil)
	e := cache.NewEntry(qrJPEG(t, qrText, 430), "image/jpeg", "")
	f.l2.Set(context.Background(), unlimited.App, key(11), e)
	fetch := answering(qrJPEG(t, "another", 430))
	res, err := f.codes.Get(context.Background(), key(11), unlimited, fetch)
	if err != nil || res.Status != codes.SharedHit || res.Entry != e || res.NumUsed != "" {
		t.Fatalf("Get = %v (Num-Used %q), %v; want L2's entry as a shared hit", res.Status, res.NumUsed, err)
	}
	if l1, _ := f.stored(key(11)); !l1 {
		t.Error("L1 does not hold the shared hit")
	}
	if res, _ := f.codes.Get(context.Background(), key(11), unlimited, fetch); res.Status != codes.Hit {
		t.Errorf("next Get %v, want hit", res.Status)
	}
	if got := fetch.calls.Load(); got != 0 {
		t.Errorf("%d fetches, want 0", got)
	}
	f.wantLookups(t, map[string]int{"shared_hit": 1, "hit": 1})
}

// The shared tier failing is a miss, never the caller's error: the image is
// fetched and kept in L1 anyway.
func TestSharedTierFaultIsAMiss(t *testing.T) {
	down := errors.New("shared tier down")
	for _, tc := range []struct {
		name           string
		getErr, setErr error
		wantHook       string
	}{
		{"Get fails", down, down, "l2error:get"},
		{"Set fails", nil, down, "l2error:set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			f.l2.getErr, f.l2.setErr = tc.getErr, tc.setErr
			fetch := answering(qrJPEG(t, qrText, 430))
			res, err := f.codes.Get(context.Background(), key(12), unlimited, fetch)
			if err != nil || res.Status != codes.Stored {
				t.Fatalf("Get = %v, %v; want stored", res.Status, err)
			}
			if got := fetch.calls.Load(); got != 1 {
				t.Errorf("%d fetches, want 1", got)
			}
			if l1, _ := f.stored(key(12)); !l1 {
				t.Error("L1 does not hold the image")
			}
			if got := f.hooks.get(tc.wantHook); got != 1 {
				t.Errorf("%s hook %d times, want 1", tc.wantHook, got)
			}
			f.wantLookups(t, map[string]int{"miss": 1})
		})
	}
}

// elsewhere is a Flight whose load always ran in another caller of this
// process: Get must take its entry as collapsed.
type elsewhere struct{ e *cache.Entry }

func (f elsewhere) Run(context.Context, string, cache.Key, func(context.Context) (*cache.Entry, error)) (*cache.Entry, codes.Source, error) {
	return f.e, codes.Joined, nil
}

func TestFlightSharedElsewhereIsCollapsed(t *testing.T) {
	e := cache.NewEntry(qrJPEG(t, qrText, 430), "image/jpeg", "")
	f := newFixture(t, func(o *codes.Options) { o.Flight = elsewhere{e} })
	fetch := answering(qrJPEG(t, "another", 430))
	res, err := f.codes.Get(context.Background(), key(13), unlimited, fetch)
	if err != nil || res.Status != codes.Collapsed || res.Entry != e || res.NumUsed != "" {
		t.Fatalf("Get = %v (Num-Used %q), %v; want the flight's entry, collapsed", res.Status, res.NumUsed, err)
	}
	if got := fetch.calls.Load(); got != 0 {
		t.Errorf("%d fetches, want 0", got)
	}
	f.wantLookups(t, map[string]int{"collapsed": 1})
}

// justFinished is a Flight that lets another flight store k in L1 between
// the caller's L1 miss and its own load: the race the load's second look
// in L1 closes.
type justFinished struct {
	l1 *cache.Memory
	e  *cache.Entry
}

func (f justFinished) Run(ctx context.Context, _ string, k cache.Key, load func(context.Context) (*cache.Entry, error)) (*cache.Entry, codes.Source, error) {
	f.l1.Set(k, f.e)
	e, err := load(ctx)
	return e, codes.Own, err
}

func TestSecondLookFindsWhatAFlightJustStored(t *testing.T) {
	l1, err := cache.NewMemory(cache.Options{MaxBytes: 64 << 20, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Close()
	e := cache.NewEntry(qrJPEG(t, qrText, 430), "image/jpeg", "")
	f := newFixture(t, func(o *codes.Options) { o.L1, o.Flight = l1, justFinished{l1, e} })
	f.l1 = l1
	fetch := answering(qrJPEG(t, "another", 430))
	res, err := f.codes.Get(context.Background(), key(14), unlimited, fetch)
	if err != nil || res.Status != codes.Collapsed || res.Entry.ETag != e.ETag {
		t.Fatalf("Get = %v, %v; want the entry just stored, collapsed", res.Status, err)
	}
	if got := fetch.calls.Load(); got != 0 {
		t.Errorf("%d fetches, want 0", got)
	}
	if s := l1.Stats(); s.Hits != 0 || s.Misses != 1 {
		t.Errorf("L1 counted %d hits and %d misses, want the caller's one miss only", s.Hits, s.Misses)
	}
	f.wantLookups(t, map[string]int{"collapsed": 1})
}

// fleetWaited is a Flight that waited for another replica's flight: that
// flight stored its entry in L2 (or failed with an errcode), then this
// process's flight runs load to take the entry from L2 (leading true) or
// hands its entry to a caller that joined it (leading false).
type fleetWaited struct {
	l2      *sharedTier
	e       *cache.Entry // what the other replica stored; nil: nothing
	err     error        // the other replica's errcode
	leading bool
}

func (f fleetWaited) Run(ctx context.Context, app string, k cache.Key, load func(context.Context) (*cache.Entry, error)) (*cache.Entry, codes.Source, error) {
	if f.err != nil {
		return nil, codes.Fleet, f.err
	}
	if f.e != nil {
		f.l2.Set(ctx, app, k, f.e)
	}
	if !f.leading {
		return f.e, codes.Fleet, nil
	}
	e, err := load(ctx)
	if err != nil {
		return nil, codes.Own, err
	}
	return e, codes.Fleet, nil
}

// A caller that waited for another replica's flight and then found its
// image in L2 is collapsed onto that flight (detail: shared): no fetch, no
// Num-Used, and L1 holds the image from then on.
func TestFleetFlightIsCollapsedShared(t *testing.T) {
	for _, leading := range []bool{true, false} {
		t.Run(fmt.Sprintf("leading=%v", leading), func(t *testing.T) {
			e := cache.NewEntry(qrJPEG(t, qrText, 430), "image/jpeg", "")
			f := newFixture(t, nil)
			f.codes = codes.New(codes.Options{L1: f.l1, L2: f.l2, Flight: fleetWaited{l2: f.l2, e: e, leading: leading},
				Hooks: codes.Hooks{Lookup: func(result string) { f.hooks.inc("lookup:" + result) }}})
			fetch := answering(qrJPEG(t, "another", 430))
			res, err := f.codes.Get(context.Background(), key(15), unlimited, fetch)
			if err != nil || res.Status != codes.CollapsedShared || res.Entry.ETag != e.ETag || res.NumUsed != "" {
				t.Fatalf("Get = %v (Num-Used %q), %v; want the fleet's entry, collapsed shared", res.Status, res.NumUsed, err)
			}
			if got := fetch.calls.Load(); got != 0 {
				t.Errorf("%d fetches, want 0", got)
			}
			if l1, _ := f.stored(key(15)); l1 != leading {
				t.Errorf("L1 holds the image: %v, want %v (the flight's leader's load fills it)", l1, leading)
			}
			f.wantLookups(t, map[string]int{"collapsed": 1})
		})
	}
}

// The leader's load went to take the fleet's image from L2 and found none
// (the shared tier failed just then): it fetched, and that is its own miss.
func TestFleetFlightWhoseLoadFetchedIsItsOwnMiss(t *testing.T) {
	f := newFixture(t, nil)
	f.codes = codes.New(codes.Options{L1: f.l1, L2: f.l2, Flight: fleetWaited{l2: f.l2, leading: true},
		Hooks: codes.Hooks{Lookup: func(result string) { f.hooks.inc("lookup:" + result) }}})
	fetch := answering(qrJPEG(t, qrText, 430))
	res, err := f.codes.Get(context.Background(), key(16), unlimited, fetch)
	if err != nil || res.Status != codes.Stored || res.NumUsed != "1" {
		t.Fatalf("Get = %v (Num-Used %q), %v; want this caller's own fetch, stored", res.Status, res.NumUsed, err)
	}
	if got := fetch.calls.Load(); got != 1 {
		t.Errorf("%d fetches, want 1", got)
	}
	f.wantLookups(t, map[string]int{"miss": 1})
}

// Another replica's flight failed with an errcode: the caller gets it,
// collapsed, without a fetch of its own.
func TestFleetFlightFailureIsCollapsed(t *testing.T) {
	f := newFixture(t, nil)
	busy := wechat.Errorf(wechat.MinuteQuota, "api minute-quota reach limit")
	f.codes = codes.New(codes.Options{L1: f.l1, L2: f.l2, Flight: fleetWaited{l2: f.l2, err: busy},
		Hooks: codes.Hooks{Lookup: func(result string) { f.hooks.inc("lookup:" + result) }}})
	fetch := answering(qrJPEG(t, qrText, 430))
	res, err := f.codes.Get(context.Background(), key(17), unlimited, fetch)
	if err != busy || res.Status != codes.Collapsed || res.Entry != nil {
		t.Fatalf("Get = %v, %v; want the fleet's errcode, collapsed", res.Status, err)
	}
	if got := fetch.calls.Load(); got != 0 {
		t.Errorf("%d fetches, want 0", got)
	}
	f.wantLookups(t, map[string]int{"collapsed": 1})
}

// The tiers are told the request's app with every key, so a shared tier
// can file an app's keys together.
func TestSeamsAreToldTheApp(t *testing.T) {
	f := newFixture(t, nil)
	fetch := answering(qrJPEG(t, qrText, 430))
	other := codes.Request{App: "wxother", Endpoint: wechat.PathUnlimited}
	if _, err := f.codes.Get(context.Background(), key(18), other, fetch); err != nil {
		t.Fatal(err)
	}
	f.l2.mu.Lock()
	defer f.l2.mu.Unlock()
	if fmt.Sprint(f.l2.apps) != "[wxother wxother]" {
		t.Errorf("L2 was told apps %v, want wxother for its Get and Set", f.l2.apps)
	}
}

// refusalLog is a Refusals that records what it is told and answers from
// a Refusals it wraps (one another Codes shares: a fleet's memory).
type refusalLog struct {
	codes.Refusals
	mu   sync.Mutex
	told []string
}

func (r *refusalLog) Refuse(ctx context.Context, app string, k cache.Key) {
	r.mu.Lock()
	r.told = append(r.told, fmt.Sprintf("%s %x", app, k[:4]))
	r.mu.Unlock()
	r.Refusals.Refuse(ctx, app, k)
}

// A 45029 heard by one Codes is answered locally by another sharing its
// Refusals (another replica, in a fleet): no call of its own.
func TestRefusalsSeamIsShared(t *testing.T) {
	shared := &refusalLog{Refusals: codes.LocalRefusals(time.Hour, nil)}
	a := newFixture(t, func(o *codes.Options) { o.Refusals = shared })
	b := newFixture(t, func(o *codes.Options) { o.Refusals = shared })
	refusal := wechat.Errorf(wechat.LifetimeQuota, "reach max api daily quota limit rid: 4")
	fetchA, fetchB := failing(refusal), failing(refusal)
	wxacode := codes.Request{App: "wxapp", Endpoint: wechat.PathWxacode}
	if _, err := a.codes.Get(context.Background(), key(19), wxacode, fetchA); err != refusal {
		t.Fatalf("A: %v, want WeChat's own answer", err)
	}
	if _, err := b.codes.Get(context.Background(), key(19), wxacode, fetchB); !errors.Is(err, codes.ErrRefusedBefore) {
		t.Fatalf("B: %v, want the refusal A heard", err)
	}
	if got := fetchB.calls.Load(); got != 0 {
		t.Errorf("B fetched %d times, want 0", got)
	}
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if fmt.Sprint(shared.told) != "[wxapp 130000c0]" {
		t.Errorf("Refuse told %v, want once, with the app", shared.told)
	}
}

func TestStatusLabels(t *testing.T) {
	for s, want := range map[codes.Status]string{codes.Hit: "hit", codes.SharedHit: "shared_hit",
		codes.Miss: "miss", codes.Stored: "miss", codes.Collapsed: "collapsed", codes.CollapsedShared: "collapsed",
		codes.StoreHit: "store_hit"} {
		if got := s.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", s, got, want)
		}
	}
}
