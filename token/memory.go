package token

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// MemoryStore is the Store of one process: a Manager's default, and what a
// Manager falls back on while its shared Store fails. Its methods never fail
// (Lock only when ctx ends first).
type MemoryStore struct {
	mu   sync.Mutex
	apps map[string]*memoryApp
}

type memoryApp struct {
	token Token
	// The force refreshes of one day of WeChat's: the midnight that ends
	// it, how many, and the last one.
	forceDayEnd time.Time
	forced      int
	lastForce   time.Time
	lease       chan struct{} // holds one value while a caller holds the fetch lease
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

// AllowForce implements Store.
func (s *MemoryStore) AllowForce(_ context.Context, appID string, now time.Time) (bool, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.app(appID)
	a.rollForceDay(now)
	switch {
	case a.forced >= wechat.ForceRefreshesPerDay:
		return false, strconv.Itoa(wechat.ForceRefreshesPerDay) + " force refreshes today (UTC+8)", nil
	case !a.lastForce.IsZero() && now.Sub(a.lastForce) < wechat.ForceRefreshSpacing:
		return false, "the last force refresh was under 30s ago", nil
	}
	a.forced++
	a.lastForce = now
	return true, "", nil
}

// recordForce notes a force_refresh another Store allowed, so that if that
// Store fails later this one still knows what this process spent.
func (s *MemoryStore) recordForce(appID string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.app(appID)
	a.rollForceDay(now)
	a.forced++
	a.lastForce = now
}

// forcesToday counts the force refreshes recorded in the day of
// wechat.ChinaTime holding now.
func (s *MemoryStore) forcesToday(appID string, now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.apps[appID]
	if a == nil || wechat.NextMidnight(now).After(a.forceDayEnd) {
		return 0
	}
	return a.forced
}

// rollForceDay starts the count again when now is in a later day than the
// one counted. A clock that steps back a day keeps the later day's count:
// stricter than WeChat, never looser.
func (a *memoryApp) rollForceDay(now time.Time) {
	if end := wechat.NextMidnight(now); end.After(a.forceDayEnd) {
		a.forceDayEnd, a.forced = end, 0
	}
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
