package codes_test

import (
	"context"
	"errors"
	"testing"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
)

// Lookup answers from L1 or L2 and never fetches: an only-if-cached
// request spends no quota, whatever the tiers hold.
func TestLookupAnswersFromTheTiersAndNeverFetches(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	fetch := answering(qrJPEG(t, qrText, 430))
	if res, ok := f.codes.Lookup(ctx, key(21), unlimited); ok || res.Entry != nil || res.Status != codes.Miss {
		t.Fatalf("Lookup of an uncached key = %v, %v; want a miss without an entry", res.Status, ok)
	}
	if _, err := f.codes.Get(ctx, key(21), unlimited, fetch); err != nil {
		t.Fatal(err)
	}
	if res, ok := f.codes.Lookup(ctx, key(21), unlimited); !ok || res.Status != codes.Hit {
		t.Fatalf("Lookup after a Get = %v, %v; want an L1 hit", res.Status, ok)
	}
	e := cache.NewEntry(qrJPEG(t, "from another replica", 430), "image/jpeg", "")
	f.l2.Set(ctx, unlimited.App, key(22), e)
	if res, ok := f.codes.Lookup(ctx, key(22), unlimited); !ok || res.Status != codes.SharedHit || res.Entry != e {
		t.Fatalf("Lookup of an L2 entry = %v, %v; want L2's entry as a shared hit", res.Status, ok)
	}
	if l1, _ := f.stored(key(22)); !l1 {
		t.Error("L1 does not hold what Lookup found in L2")
	}
	f.l2.getErr = errors.New("shared tier down")
	if _, ok := f.codes.Lookup(ctx, key(23), unlimited); ok {
		t.Error("Lookup found something in a failing shared tier")
	}
	if got := f.hooks.get("l2error:get"); got != 1 {
		t.Errorf("L2Error hook %d times, want 1", got)
	}
	if got := fetch.calls.Load(); got != 1 {
		t.Errorf("%d fetches, want 1 (the Get's)", got)
	}
	f.wantLookups(t, map[string]int{"miss": 3, "hit": 1, "shared_hit": 1})
}
