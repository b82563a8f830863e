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
// the others. from says whose work answered this caller (Own: this
// caller's load ran and has returned; Joined: another caller's load in
// this process; Fleet: another replica's flight). app is the app k was
// made for, for a flight that coordinates in a store keyed by app. A load
// that panics is an error, never a crash.
type Flight interface {
	Run(ctx context.Context, app string, k cache.Key, load func(context.Context) (*cache.Entry, error)) (e *cache.Entry, from Source, err error)
}

// Source says whose work answered a caller of Flight.Run.
type Source uint8

const (
	// Own: this caller's load ran, and its result is the answer.
	Own Source = iota
	// Joined: another caller's load, in this process.
	Joined
	// Fleet: another replica's flight. Its errcode, or its entry, read
	// from the shared tier by this process's flight running load after
	// the entry appeared there (so that L1 holds it too); for the caller
	// whose load that was, load's own result stands if it had to fetch
	// after all (the shared tier failed just then).
	Fleet
)

// LocalFlight returns a Flight among the callers of this process, on
// x/sync/singleflight.
func LocalFlight() Flight { return new(localFlight) }

type localFlight struct{ g singleflight.Group }

func (f *localFlight) Run(ctx context.Context, _ string, k cache.Key, load func(context.Context) (*cache.Entry, error)) (*cache.Entry, Source, error) {
	e, leading, err := Collapse(ctx, &f.g, string(k[:]), load)
	if leading {
		return e, Own, err
	}
	return e, Joined, err
}

// Collapse runs run once for the concurrent callers of key in g and hands
// each its result: the single-flight every Flight is built on. run gets
// a ctx detached from any one caller's cancellation (the caller whose run
// it is may hang up; the others must still get its result) and a panic in
// it is an error, never a crash (DoChan re-panics in a goroutine of its
// own, which would kill the process). A caller whose ctx ends gets
// ctx.Err() at once and the flight goes on for the others. leading says
// whether this caller's run it was; a caller that leaves before its own
// flight started counts as not leading: singleflight cannot say which
// caller it will run.
func Collapse[T any](ctx context.Context, g *singleflight.Group, key string, run func(context.Context) (T, error)) (v T, leading bool, err error) {
	var ran atomic.Bool
	detached := context.WithoutCancel(ctx)
	ch := g.DoChan(key, func() (v any, err error) {
		ran.Store(true)
		defer func() {
			if r := recover(); r != nil {
				v, err = nil, fmt.Errorf("codes: panic while loading: %v", r)
			}
		}()
		return run(detached)
	})
	select {
	case <-ctx.Done():
		return v, ran.Load(), ctx.Err()
	case res := <-ch:
		v, _ = res.Val.(T)
		return v, ran.Load(), res.Err
	}
}
