package codes

import (
	"context"
	"fmt"
	"sync/atomic"

	"golang.org/x/sync/singleflight"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
)

// Flight runs load once for the concurrent callers of one key and hands
// every caller its result. Implementations are safe for concurrent use and
// never modify the entry load returns. load runs detached from any one
// caller: a caller whose ctx ends gets ctx.Err() and the flight goes on for
// the others. shared reports that this caller got another caller's load;
// when Run returns a nil error with shared false, this caller's load ran
// and has returned. A load that panics is an error, never a crash.
type Flight interface {
	Run(ctx context.Context, k cache.Key, load func(context.Context) (*cache.Entry, error)) (e *cache.Entry, shared bool, err error)
}

// LocalFlight returns a Flight among the callers of this process, on
// x/sync/singleflight.
func LocalFlight() Flight { return new(localFlight) }

type localFlight struct{ g singleflight.Group }

func (f *localFlight) Run(ctx context.Context, k cache.Key, load func(context.Context) (*cache.Entry, error)) (*cache.Entry, bool, error) {
	var leading atomic.Bool
	// The caller whose load runs may hang up; the others sharing the
	// flight must still get its result.
	detached := context.WithoutCancel(ctx)
	ch := f.g.DoChan(string(k[:]), func() (v any, err error) {
		leading.Store(true)
		defer func() {
			// DoChan re-panics in a goroutine of its own, which would
			// kill the process.
			if r := recover(); r != nil {
				v, err = nil, fmt.Errorf("codes: panic while loading a code: %v", r)
			}
		}()
		return load(detached)
	})
	select {
	case <-ctx.Done():
		// A caller that leaves before its own flight started counts as
		// sharing: singleflight cannot say which caller it will run.
		return nil, !leading.Load(), ctx.Err()
	case res := <-ch:
		e, _ := res.Val.(*cache.Entry)
		return e, !leading.Load(), res.Err
	}
}
