package codes

import (
	"context"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
)

// Store is the durable tier, behind L2: an entry a flight found nowhere
// else is looked for here before WeChat is asked, and an image fetched is
// handed here to be kept (package store: a directory or a bucket).
// Implementations are safe for concurrent use and never modify an Entry
// they are given or return. Get returns cache.ErrNotFound for a miss; any
// other error is a fault, which Codes treats as a miss, and takes at most
// the store's own bound. Put never blocks and never fails its caller: it
// writes later, or drops the write, on its own account. app is the app k
// was made for (the key hashes it in already).
type Store interface {
	Get(ctx context.Context, app string, k cache.Key) (*cache.Entry, error)
	Put(ctx context.Context, app string, k cache.Key, e *cache.Entry)
}

// NoStore is the absent durable tier: it holds nothing and keeps nothing.
var NoStore Store = noStore{}

type noStore struct{}

func (noStore) Get(context.Context, string, cache.Key) (*cache.Entry, error) {
	return nil, cache.ErrNotFound
}
func (noStore) Put(context.Context, string, cache.Key, *cache.Entry) {}

// fromStore looks for k in the durable tier; an entry found there is put
// in L2 (for the fleet) and L1.
func (c *Codes) fromStore(ctx context.Context, k cache.Key, r Request) (*cache.Entry, bool) {
	e, err := c.durable.Get(ctx, r.App, k)
	if err != nil || e == nil {
		// A fault is a miss; the store counts it.
		return nil, false
	}
	if err := c.l2.Set(ctx, r.App, k, e); err != nil {
		c.l2Error("set", err)
	}
	c.store(k, e)
	return e, true
}
