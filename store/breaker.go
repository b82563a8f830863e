package store

import (
	"sync"
	"time"
)

// Breaker policy, as the shared tier's: open after this many consecutive
// faults, let one probe through after the cool-off. A store back on its
// feet is used again within about one cool-off.
const (
	breakerThreshold = 3
	breakerCoolOff   = 5 * time.Second
)

// breaker is closed (the store is used), open (skipped until the cool-off
// ends) or half-open (one probe in flight).
type breaker struct {
	now      func() time.Time
	mu       sync.Mutex
	failures int
	openedAt time.Time
	open     bool
	probing  bool
}

func (b *breaker) allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return true
	}
	if b.probing || b.now().Sub(b.openedAt) < breakerCoolOff {
		return false
	}
	b.probing = true
	return true
}

// success closes the breaker; it reports whether it was open.
func (b *breaker) success() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	wasOpen := b.open
	b.failures, b.open, b.probing = 0, false, false
	return wasOpen
}

// failure counts a fault; it reports whether the breaker just opened.
func (b *breaker) failure() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	if b.open {
		// A failed probe: wait another cool-off.
		b.openedAt, b.probing = b.now(), false
		return false
	}
	if b.failures >= breakerThreshold {
		b.open, b.openedAt = true, b.now()
		return true
	}
	return false
}

// trip opens the breaker at once (the startup check found the store
// refusing or away); it reports whether it just opened.
func (b *breaker) trip() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open {
		return false
	}
	b.failures, b.open, b.openedAt, b.probing = breakerThreshold, true, b.now(), false
	return true
}

func (b *breaker) state() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case !b.open:
		return "closed"
	case b.probing || b.now().Sub(b.openedAt) >= breakerCoolOff:
		return "half_open"
	}
	return "open"
}
