package codes

import (
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
)

func TestRefusalsAreBoundedLeastRecentlyUsedFirst(t *testing.T) {
	r := newRefusals(3, time.Hour)
	key := func(i int) cache.Key { return cache.Key{byte(i)} }
	now := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	for i := range 3 {
		r.add(key(i), now)
	}
	r.has(key(0), now) // used: key 1 is now the least recently used
	r.add(key(3), now)
	for i, want := range []bool{true, false, true, true} {
		if got := r.has(key(i), now); got != want {
			t.Errorf("key %d remembered %v, want %v", i, got, want)
		}
	}
	if got := r.len(); got != 3 {
		t.Errorf("%d keys held, want 3", got)
	}
	if r.has(key(0), now.Add(time.Hour)) {
		t.Error("a refusal outlived its ttl")
	}
	if got := r.len(); got != 2 {
		t.Errorf("an expired key asked about is still held: %d keys", got)
	}
}
