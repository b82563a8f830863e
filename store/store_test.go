package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"sync"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/s3test"
	"github.com/wxa-sidecar/wxa-sidecar/seal"
)

const (
	app   = "wx-store-test"
	other = "wx-other-app"
)

var secrets = map[string]string{app: "app-secret-1", other: "app-secret-2"}

// recorder counts what the hooks report.
type recorder struct {
	mu      sync.Mutex
	results map[string]int // op/result
	drops   map[string]int
	ups     []bool
}

func newRecorder() *recorder {
	return &recorder{results: map[string]int{}, drops: map[string]int{}}
}

func (r *recorder) hooks() Hooks {
	return Hooks{
		Request: func(op, result string, _ time.Duration) {
			r.mu.Lock()
			r.results[op+"/"+result]++
			r.mu.Unlock()
		},
		Up: func(up bool) {
			r.mu.Lock()
			r.ups = append(r.ups, up)
			r.mu.Unlock()
		},
		Dropped: func(reason string) {
			r.mu.Lock()
			r.drops[reason]++
			r.mu.Unlock()
		},
	}
}

func (r *recorder) count(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.results[key]
}

func (r *recorder) dropped(reason string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.drops[reason]
}

// kind is one backend the conformance suite runs against: it fills the
// options that place the store.
type kind struct {
	name  string
	place func(t *testing.T, o *Options)
}

func kinds() []kind {
	return []kind{
		{"file", func(t *testing.T, o *Options) { o.URL = "file://" + t.TempDir() }},
		{"s3", func(t *testing.T, o *Options) {
			srv := s3test.Start(t)
			srv.MakeBucket(t, "codes")
			o.URL, o.Endpoint, o.Region = "s3://codes/wxa", srv.Endpoint, "us-east-1"
			o.AccessKey, o.SecretKey = s3test.AccessKey, s3test.SecretKey
		}},
	}
}

func open(t *testing.T, o Options) *Store {
	t.Helper()
	if o.Secrets == nil {
		o.Secrets = secrets
	}
	if o.Timeout == 0 {
		// Generous: a busy 2-CPU machine, a server started just now.
		o.Timeout = 5 * time.Second
	}
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Close(ctx)
	})
	return s
}

func keyOf(s string) cache.Key {
	var k cache.Key
	copy(k[:], s)
	k[31] = byte(len(s))
	return k
}

func entry(body string) *cache.Entry {
	return cache.NewEntry([]byte(body), "image/jpeg", `attachment; filename="`+body+`.jpeg"`)
}

// flushed waits until every queued write of s is made.
func flushed(t *testing.T, s *Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s.flush(ctx)
	if ctx.Err() != nil {
		t.Fatalf("the write queue did not empty: %d left", s.QueueDepth())
	}
}

func mustGet(t *testing.T, s *Store, a string, k cache.Key) *cache.Entry {
	t.Helper()
	e, err := s.Get(context.Background(), a, k)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	return e
}

// wantNone: no entry, whether as a miss or a fault.
func wantNone(t *testing.T, s *Store, a string, k cache.Key, why string) {
	t.Helper()
	if e, err := s.Get(context.Background(), a, k); err == nil || e != nil {
		t.Fatalf("%s: get = %v, %v; want an error", why, e, err)
	}
}

func wantMiss(t *testing.T, s *Store, a string, k cache.Key, why string) {
	t.Helper()
	e, err := s.Get(context.Background(), a, k)
	if !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("%s: get = %v, %v; want cache.ErrNotFound", why, e, err)
	}
}

// TestConformance runs one suite against every backend, so the two can
// never drift apart on a rule.
func TestConformance(t *testing.T) {
	for _, kd := range kinds() {
		t.Run(kd.name, func(t *testing.T) {
			t.Run("RoundTripKeepsTheHeaders", func(t *testing.T) { testRoundTrip(t, kd) })
			t.Run("SwappedOrTruncatedObjectIsAMissLeftInPlace", func(t *testing.T) { testSwapped(t, kd) })
			t.Run("StoreKeyFileSurvivesASecretRotation", func(t *testing.T) { testKeyFile(t, kd) })
			t.Run("TTL", func(t *testing.T) { testTTL(t, kd) })
			t.Run("CloseFlushesTheQueue", func(t *testing.T) { testCloseFlushes(t, kd) })
		})
	}
}

func testRoundTrip(t *testing.T, kd kind) {
	rec := newRecorder()
	o := Options{Hooks: rec.hooks()}
	kd.place(t, &o)
	s := open(t, o)
	k := keyOf("round-trip")
	wantMiss(t, s, app, k, "before any write")
	want := entry("round-trip-image")
	s.Put(context.Background(), app, k, want)
	flushed(t, s)
	got := mustGet(t, s, app, k)
	if !bytes.Equal(got.Body, want.Body) || got.ContentType != want.ContentType ||
		got.ContentDisposition != want.ContentDisposition || got.ETag != want.ETag {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// The same key of another app is another object.
	wantMiss(t, s, other, k, "another app's key")
	// An app the store holds no key for is never written nor read.
	s.Put(context.Background(), "wx-unknown", k, want)
	flushed(t, s)
	wantMiss(t, s, "wx-unknown", k, "an unknown app")
	if n := rec.count("put/ok"); n != 1 {
		t.Errorf("put/ok = %d, want 1", n)
	}
	if n, m := rec.count("get/hit"), rec.count("get/miss"); n != 1 || m != 2 {
		t.Errorf("get/hit = %d, get/miss = %d; want 1 and 2", n, m)
	}
	if st := s.Status(); !st.Up || st.Breaker != "closed" || st.KeyFrom != "app_secret" {
		t.Errorf("status %+v", st)
	}
}

func testSwapped(t *testing.T, kd kind) {
	rec := newRecorder()
	o := Options{Hooks: rec.hooks()}
	kd.place(t, &o)
	s := open(t, o)
	ctx := context.Background()
	a, b := keyOf("swap-a"), keyOf("swap-b")
	s.Put(ctx, app, a, entry("image-a"))
	s.Put(ctx, app, b, entry("image-b"))
	flushed(t, s)
	objA, err := s.b.get(ctx, s.b.name(app, a))
	if err != nil {
		t.Fatal(err)
	}
	// A's object under B's name: it opens only under A's.
	if err := s.b.put(ctx, s.b.name(app, b), objA); err != nil {
		t.Fatal(err)
	}
	wantMiss(t, s, app, b, "an object swapped with another key's")
	// Another app's object under this app's name.
	objOther := s.boxes[other].Seal(encodeEntry(time.Now(), entry("other")), s.b.name(app, a))
	s.b.put(ctx, s.b.name(app, a), objOther)
	wantMiss(t, s, app, a, "an object sealed with another app's key")
	// A value sealed for another purpose (the Redis tier's) at this place.
	redisBox, _ := seal.New([]byte(secrets[app]), app, "redis l2")
	s.b.put(ctx, s.b.name(app, a), redisBox.Seal(encodeEntry(time.Now(), entry("r")), s.b.name(app, a)))
	wantMiss(t, s, app, a, "a value sealed for another purpose")
	// Truncated.
	s.b.put(ctx, s.b.name(app, a), objA[:len(objA)/2])
	wantMiss(t, s, app, a, "a truncated object")
	if n := rec.count("get/corrupt"); n != 4 {
		t.Errorf("get/corrupt = %d, want 4", n)
	}
	// Left in place, never deleted.
	if left, err := s.b.get(ctx, s.b.name(app, a)); err != nil || len(left) != len(objA)/2 {
		t.Errorf("the truncated object: %d bytes, %v; want it left as it was", len(left), err)
	}
	// The next write of the key replaces it.
	s.Put(ctx, app, a, entry("image-a"))
	flushed(t, s)
	if got := mustGet(t, s, app, a); string(got.Body) != "image-a" {
		t.Errorf("after a rewrite: %q", got.Body)
	}
	if st := s.Status(); !st.Up {
		t.Errorf("corrupt objects took the store down: %+v", st)
	}
}

func testKeyFile(t *testing.T, kd kind) {
	o := Options{}
	kd.place(t, &o)
	ctx := context.Background()
	k := keyOf("key-file")

	// Sealed under a key derived from the app secret: a rotated secret
	// reads none of it.
	bySecret := open(t, o)
	bySecret.Put(ctx, app, k, entry("by-secret"))
	flushed(t, bySecret)
	rotated := o
	rotated.Secrets = map[string]string{app: "rotated-secret"}
	wantMiss(t, open(t, rotated), app, k, "a rotated secret without STORE_KEY_FILE")

	// With a key of the store's own, the secret does not matter.
	o.Key = []byte("a-key-of-the-stores-own-0123456789abcdef")
	byKey := open(t, o)
	if byKey.Status().KeyFrom != "store_key_file" {
		t.Errorf("key_from %q", byKey.Status().KeyFrom)
	}
	byKey.Put(ctx, app, k, entry("by-key"))
	flushed(t, byKey)
	rotated.Key = o.Key
	if got := mustGet(t, open(t, rotated), app, k); string(got.Body) != "by-key" {
		t.Errorf("with STORE_KEY_FILE after a secret rotation: %q", got.Body)
	}
}

func testTTL(t *testing.T, kd kind) {
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	o := Options{TTL: time.Hour, Now: clock}
	kd.place(t, &o)
	s := open(t, o)
	k := keyOf("ttl")
	s.Put(context.Background(), app, k, entry("ttl"))
	flushed(t, s)
	mustGet(t, s, app, k)
	mu.Lock()
	now = now.Add(time.Hour + time.Minute)
	mu.Unlock()
	wantMiss(t, s, app, k, "an object older than STORE_TTL")
}

func testCloseFlushes(t *testing.T, kd kind) {
	o := Options{}
	kd.place(t, &o)
	s, err := Open(withDefaults(o))
	if err != nil {
		t.Fatal(err)
	}
	const n = 40
	for i := range n {
		s.Put(context.Background(), app, keyOf(fmt.Sprint("close-", i)), entry(fmt.Sprint("close-", i)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	s.Close(ctx)
	cancel()
	if s.Status().Drops != 0 {
		t.Fatalf("%d writes dropped", s.Status().Drops)
	}
	after := open(t, o)
	for i := range n {
		mustGet(t, after, app, keyOf(fmt.Sprint("close-", i)))
	}
	// A put after Close is dropped, never blocks.
	s.Put(context.Background(), app, keyOf("late"), entry("late"))
	if s.Status().Drops != 1 {
		t.Errorf("a put after Close: %d drops, want 1", s.Status().Drops)
	}
}

func withDefaults(o Options) Options {
	if o.Secrets == nil {
		o.Secrets = secrets
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	return o
}

// silentServer accepts connections and never answers.
func silentServer(t *testing.T) string { return "http://" + redistest.SilentAddr(t) }

// TestSilentStoreCostsAtMostTheTimeoutThenNothing: a bucket that accepts
// and never answers costs each get at most STORE_TIMEOUT, until the
// breaker opens; then nothing. Writes fill the queue, which drops rather
// than blocks.
func TestSilentStoreCostsAtMostTheTimeoutThenNothing(t *testing.T) {
	rec := newRecorder()
	const timeout = 200 * time.Millisecond
	s := open(t, Options{URL: "s3://codes", Endpoint: silentServer(t), Region: "us-east-1",
		AccessKey: "a", SecretKey: "b", Timeout: timeout, Queue: 4, Hooks: rec.hooks()})
	for i := range 8 {
		start := time.Now()
		wantNone(t, s, app, keyOf(fmt.Sprint("silent-", i)), "a silent store")
		if d := time.Since(start); d > timeout+2*time.Second {
			t.Errorf("get %d took %s; the bound is %s (plus scheduling)", i, d, timeout)
		}
	}
	if n := rec.count("get/timeout"); n < breakerThreshold || n > breakerThreshold+1 {
		t.Errorf("get/timeout = %d; want the breaker to open after %d", n, breakerThreshold)
	}
	if n := rec.count("get/breaker_open"); n < 4 {
		t.Errorf("get/breaker_open = %d; want the rest skipped", n)
	}
	if st := s.Status(); st.Up {
		t.Errorf("status up with the breaker open: %+v", st)
	}
	for i := range 50 {
		start := time.Now()
		s.Put(context.Background(), app, keyOf(fmt.Sprint("w-", i)), entry("w"))
		if d := time.Since(start); d > time.Second {
			t.Fatalf("put blocked %s", d)
		}
	}
	if n := rec.dropped(DropFull); n == 0 {
		t.Error("a full queue dropped nothing")
	}
}

// TestRefusingBucketIsOneErrorAndStoreDown: a missing bucket (or refused
// credentials) trips the breaker at startup.
func TestRefusingBucketIsOneErrorAndStoreDown(t *testing.T) {
	srv := s3test.Start(t)
	srv.MakeBucket(t, "codes")
	for _, c := range []struct {
		name             string
		bucket, key, sec string
	}{
		{"missing bucket", "no-such-bucket", s3test.AccessKey, s3test.SecretKey},
		{"refused credentials", "codes", "wrong", "credentials"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := newRecorder()
			var logs bytes.Buffer
			s := open(t, Options{URL: "s3://" + c.bucket, Endpoint: srv.Endpoint, Region: "us-east-1",
				AccessKey: c.key, SecretKey: c.sec, Hooks: rec.hooks(), Logger: newTestLogger(&logs)})
			deadline := time.Now().Add(20 * time.Second)
			for s.Status().Up {
				if time.Now().After(deadline) {
					t.Fatalf("still up: %+v\n%s", s.Status(), logs.String())
				}
				time.Sleep(10 * time.Millisecond)
			}
			if !bytes.Contains(logs.Bytes(), []byte(`"level":"ERROR","msg":"STORE_URL: the durable store refuses`)) {
				t.Errorf("no ERROR naming STORE_URL:\n%s", logs.String())
			}
			if bytes.Contains(logs.Bytes(), []byte(s3test.SecretKey)) || bytes.Contains(logs.Bytes(), []byte(`"credentials"`)) {
				t.Errorf("a credential in the log:\n%s", logs.String())
			}
			wantNone(t, s, app, keyOf("refused"), "a refusing store")
		})
	}
}
