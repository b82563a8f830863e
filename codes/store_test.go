package codes_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/store"
)

// The durable tier in these tests is the real one, a directory store.

func openStore(t *testing.T, dir string) *store.Store {
	t.Helper()
	s, err := store.Open(store.Options{URL: "file://" + dir, Timeout: 5 * time.Second,
		Secrets: map[string]string{unlimited.App: "the-app-secret"}})
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

// inStore waits until s holds k (its writes are queued).
func inStore(t *testing.T, s *store.Store, k cache.Key) *cache.Entry {
	t.Helper()
	var e *cache.Entry
	waitFor(t, "the store to hold the image", func() bool {
		var err error
		e, err = s.Get(context.Background(), unlimited.App, k)
		return err == nil
	})
	return e
}

// A fetched image is written to the store; after a restart (new L1, empty
// L2) the same key is a store hit: no fetch, and L2 and L1 hold it again.
func TestStoreHitAfterARestartFillsL2AndL1(t *testing.T) {
	dir := t.TempDir()
	img := qrJPEG(t, qrText, 430)
	before := newFixture(t, func(o *codes.Options) { o.Store = openStore(t, dir) })
	if res, err := before.codes.Get(context.Background(), key(40), unlimited, answering(img)); err != nil || res.Status != codes.Stored {
		t.Fatalf("first Get = %v, %v", res.Status, err)
	}
	inStore(t, openStore(t, dir), key(40))

	after := newFixture(t, func(o *codes.Options) { o.Store = openStore(t, dir) })
	fetch := answering(qrJPEG(t, "another image", 430))
	res, err := after.codes.Get(context.Background(), key(40), unlimited, fetch)
	if err != nil || res.Status != codes.StoreHit || string(res.Entry.Body) != string(img) || res.NumUsed != "" {
		t.Fatalf("Get after restart = %v (Num-Used %q), %v; want the stored image as a store hit", res.Status, res.NumUsed, err)
	}
	if res.Entry.ContentDisposition != `attachment; filename="code.jpeg"` || res.Entry.ContentType != "image/jpeg" {
		t.Errorf("headers lost: %q %q", res.Entry.ContentType, res.Entry.ContentDisposition)
	}
	if l1, l2 := after.stored(key(40)); !l1 || !l2 {
		t.Errorf("after a store hit: L1 %v, L2 %v; want both", l1, l2)
	}
	if res, _ := after.codes.Get(context.Background(), key(40), unlimited, fetch); res.Status != codes.Hit {
		t.Errorf("next Get %v, want hit", res.Status)
	}
	if n := fetch.calls.Load(); n != 0 {
		t.Errorf("%d fetches, want 0", n)
	}
	after.wantLookups(t, map[string]int{"store_hit": 1, "hit": 1})
	// only-if-cached finds it in the store too.
	fresh := newFixture(t, func(o *codes.Options) { o.Store = openStore(t, dir) })
	if res, found := fresh.codes.Lookup(context.Background(), key(40), unlimited); !found || res.Status != codes.StoreHit {
		t.Errorf("Lookup = %v, %v; want a store hit", res.Status, found)
	}
}

// L2 comes before the store: a shared hit never asks the store.
func TestSharedHitComesBeforeTheStore(t *testing.T) {
	s := &countingStore{}
	f := newFixture(t, func(o *codes.Options) { o.Store = s })
	e := cache.NewEntry(qrJPEG(t, qrText, 430), "image/jpeg", "")
	f.l2.Set(context.Background(), unlimited.App, key(41), e)
	if res, _ := f.codes.Get(context.Background(), key(41), unlimited, answering(nil)); res.Status != codes.SharedHit {
		t.Fatalf("status %v, want shared hit", res.Status)
	}
	if s.gets.Load() != 0 || s.puts.Load() != 0 {
		t.Errorf("the store was asked %d times, written %d", s.gets.Load(), s.puts.Load())
	}
}

// A store that fails is a miss: the image is fetched, kept in L1 and L2,
// and handed to the store; failures, errcodes and refusals never are.
func TestStoreFaultIsAMissAndErrorsAreNeverStored(t *testing.T) {
	s := &countingStore{err: errors.New("store down")}
	f := newFixture(t, func(o *codes.Options) { o.Store = s })
	res, err := f.codes.Get(context.Background(), key(42), unlimited, answering(qrJPEG(t, qrText, 430)))
	if err != nil || res.Status != codes.Stored {
		t.Fatalf("Get = %v, %v; want stored", res.Status, err)
	}
	if s.gets.Load() != 1 || s.puts.Load() != 1 {
		t.Errorf("store gets %d, puts %d; want 1 and 1", s.gets.Load(), s.puts.Load())
	}
	if _, err := f.codes.Get(context.Background(), key(43), unlimited, failing(errors.New("upstream down"))); err == nil {
		t.Fatal("a failed fetch succeeded")
	}
	if s.puts.Load() != 1 {
		t.Errorf("a failure was handed to the store (%d puts)", s.puts.Load())
	}
	f.wantLookups(t, map[string]int{"miss": 2})
}

// countingStore counts what codes asks of a Store; its Get fails with err,
// or misses.
type countingStore struct {
	gets, puts atomic.Int64
	err        error
}

func (s *countingStore) Get(context.Context, string, cache.Key) (*cache.Entry, error) {
	s.gets.Add(1)
	if s.err != nil {
		return nil, s.err
	}
	return nil, cache.ErrNotFound
}

func (s *countingStore) Put(context.Context, string, cache.Key, *cache.Entry) { s.puts.Add(1) }
