package cache

import (
	"context"
	"errors"
)

// ErrNotFound is what a Shared answers for a key it does not hold: a miss,
// not a fault.
var ErrNotFound = errors.New("cache: not found")

// Shared is a second tier of entries, shared by every replica (the sidecar
// runs without one by default: NoShared). Implementations are safe for
// concurrent use and never modify an Entry they are given or return.
// Get returns ErrNotFound for a miss; any other error is a fault, which
// callers treat as a miss, never as their caller's error. Set may fail the
// same way; callers ignore its error, as the entry is held locally anyway.
// app is the app the key was made for (the key already hashes it in): a
// tier may place an app's entries together with it, never look them up
// by it alone.
type Shared interface {
	Get(ctx context.Context, app string, k Key) (*Entry, error)
	Set(ctx context.Context, app string, k Key, e *Entry) error
}

// NoShared is the absent second tier: it holds nothing and stores nothing.
var NoShared Shared = noShared{}

type noShared struct{}

func (noShared) Get(context.Context, string, Key) (*Entry, error) { return nil, ErrNotFound }
func (noShared) Set(context.Context, string, Key, *Entry) error   { return nil }
