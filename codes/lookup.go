package codes

import (
	"context"
	"errors"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
)

// Lookup answers k from the cache alone: L1, then the shared tier, then
// the durable store, never a
// flight and never a fetch, so it spends no quota and waits for nobody
// (RFC 9111's only-if-cached: a bulk generator's dry run asks it row by
// row, a front end may prefer no image to a slow one). An image found in L2
// (or the store) is kept in L1 (and L2) as a Get's would be. It counts as
// one lookup, "hit", "shared_hit", "store_hit" or, when nothing is found, "miss" (a Get answered without a
// flight); a fault of the shared tier is a miss, reported to Hooks.L2Error.
func (c *Codes) Lookup(ctx context.Context, k cache.Key, r Request) (Result, bool) {
	if e, ok := c.l1.Get(k); ok {
		c.lookup(Hit)
		return Result{Entry: e, Status: Hit}, true
	}
	if c.scope != nil {
		ctx = c.scope(ctx)
	}
	e, err := c.l2.Get(ctx, r.App, k)
	switch {
	case err == nil && e != nil:
		c.store(k, e)
		c.lookup(SharedHit)
		return Result{Entry: e, Status: SharedHit}, true
	case err != nil && !errors.Is(err, cache.ErrNotFound):
		c.l2Error("get", err)
	}
	if e, ok := c.fromStore(ctx, k, r); ok {
		c.lookup(StoreHit)
		return Result{Entry: e, Status: StoreHit}, true
	}
	c.lookup(Miss)
	return Result{Status: Miss}, false
}
