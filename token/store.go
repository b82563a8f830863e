package token

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrNoToken is Store.Load's answer when no token is stored for the app:
// a miss, not a fault.
var ErrNoToken = errors.New("token: no token in the store")

// A Store keeps an app's current token and its force_refresh count where
// every Manager sharing it sees them: replicas in classic mode then use one
// token instead of killing each other's, and WeChat's 20 force refreshes a
// day are counted per app, not per replica.
//
// A Store must be safe for concurrent use by multiple goroutines. A Token it
// returns must not be modified. Any error but ErrNoToken is a fault: the
// Manager logs it and carries on from its own memory, exactly as a Manager
// without a shared store would, so a failing store never fails a caller a
// local Manager could serve. Errors must never carry a token or a secret.
type Store interface {
	// Load returns the app's stored token, which may have expired (the
	// Manager checks), or ErrNoToken.
	Load(ctx context.Context, appID string) (Token, error)
	// Save makes t the app's current token for every Manager sharing the
	// store. The last Save wins: in classic mode Lock makes fetches, and so
	// saves, take turns.
	Save(ctx context.Context, appID string, t Token) error
	// AllowForce reports whether WeChat's limit on force_refresh (at most 20
	// a day, 30 s apart, per appid) allows one at now and, if so, records it
	// in the same step, so two replicas can never both be allowed the last
	// one. reason says why not, for a log line and the caller's error.
	AllowForce(ctx context.Context, appID string, now time.Time) (allowed bool, reason string, err error)
	// Lock blocks until the caller holds the app's fetch lease, the only
	// one in the fleet allowed to fetch a classic token, and returns the
	// function that gives it back. A lease whose holder never gives it back
	// ends by itself after ttl, the longest one fetch can take. The Manager
	// bounds its wait with ctx and, after taking the lease, loads the store
	// again before fetching: the previous holder has usually saved a token.
	Lock(ctx context.Context, appID string, ttl time.Duration) (unlock func(context.Context) error, err error)
}

// WeChat's limit on force_refresh: 20 a day, 30 seconds apart.
const (
	forceRefreshesPerDay = 20
	forceRefreshSpacing  = 30 * time.Second
)

// MemoryStore is the Store of one process: a Manager's default, and what a
// Manager falls back on while its shared Store fails. Its methods never fail
// (Lock only when ctx ends first).
type MemoryStore struct {
	mu   sync.Mutex
	apps map[string]*memoryApp
}

type memoryApp struct {
	token  Token
	forced []time.Time   // force_refresh times, at most forceRefreshesPerDay in the last 24h
	lease  chan struct{} // holds one value while a caller holds the fetch lease
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{apps: map[string]*memoryApp{}}
}

// String names the store in Manager.Status.
func (s *MemoryStore) String() string { return "memory" }

// app returns appID's state; s.mu must be held.
func (s *MemoryStore) app(appID string) *memoryApp {
	a := s.apps[appID]
	if a == nil {
		a = &memoryApp{lease: make(chan struct{}, 1)}
		s.apps[appID] = a
	}
	return a
}

// Load implements Store.
func (s *MemoryStore) Load(_ context.Context, appID string) (Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.apps[appID]; a != nil && a.token.Value != "" {
		return a.token, nil
	}
	return Token{}, ErrNoToken
}

// Save implements Store.
func (s *MemoryStore) Save(_ context.Context, appID string, t Token) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.app(appID).token = t
	return nil
}

// AllowForce implements Store with a rolling 24 hours: stricter than
// WeChat's day, never looser.
func (s *MemoryStore) AllowForce(_ context.Context, appID string, now time.Time) (bool, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.app(appID)
	a.forced = forcesWithinADay(a.forced, now)
	switch {
	case len(a.forced) >= forceRefreshesPerDay:
		return false, "20 force refreshes in the last 24h", nil
	case len(a.forced) > 0 && now.Sub(a.forced[len(a.forced)-1]) < forceRefreshSpacing:
		return false, "the last force refresh was under 30s ago", nil
	}
	a.forced = append(a.forced, now)
	return true, "", nil
}

// recordForce notes a force_refresh another Store allowed, so that if that
// Store fails later this one still knows what this process spent.
func (s *MemoryStore) recordForce(appID string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.app(appID)
	a.forced = append(forcesWithinADay(a.forced, now), now)
}

// forcesIn24h counts the force refreshes recorded in the 24 hours before now.
func (s *MemoryStore) forcesIn24h(appID string, now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	if a := s.apps[appID]; a != nil {
		for _, at := range a.forced {
			if now.Sub(at) < 24*time.Hour {
				n++
			}
		}
	}
	return n
}

func forcesWithinADay(forced []time.Time, now time.Time) []time.Time {
	kept := forced[:0]
	for _, at := range forced {
		if now.Sub(at) < 24*time.Hour {
			kept = append(kept, at)
		}
	}
	return kept
}

// Lock implements Store with a plain per-app mutex: every holder lives in
// this process and gives the lease back when its fetch ends, so ttl is not
// needed to recover from a holder that died.
func (s *MemoryStore) Lock(ctx context.Context, appID string, _ time.Duration) (func(context.Context) error, error) {
	s.mu.Lock()
	lease := s.app(appID).lease
	s.mu.Unlock()
	select {
	case lease <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var once sync.Once
	return func(context.Context) error {
		once.Do(func() { <-lease })
		return nil
	}, nil
}
