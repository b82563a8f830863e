// Package breaker is the circuit breaker the shared tier (Redis) and the
// durable store both stand behind: closed (the dependency is used), open
// (skipped until a cool-off ends) or half-open (one probe in flight). It
// imports nothing of ours and knows nothing of what it guards.
package breaker

import (
	"sync"
	"time"
)

// The policy: open after Threshold consecutive failures, let one probe
// through after CoolOff. A dependency back on its feet is used again
// within about one cool-off.
const (
	Threshold = 3
	CoolOff   = 5 * time.Second
)

// Breaker's zero value is closed, on time.Now; it is safe for concurrent
// use.
type Breaker struct {
	// Now is the clock; nil is time.Now. Set it before first use.
	Now func() time.Time

	mu       sync.Mutex
	failures int
	openedAt time.Time
	open     bool
	probing  bool
}

func (b *Breaker) now() time.Time {
	if b.Now == nil {
		return time.Now()
	}
	return b.Now()
}

// Allow reports whether a call may go ahead: always while closed; once
// the cool-off has passed, for one probe at a time.
func (b *Breaker) Allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return true
	}
	if b.probing || b.now().Sub(b.openedAt) < CoolOff {
		return false
	}
	b.probing = true
	return true
}

// Ready reports whether Allow would let a call through now, without
// taking the probe.
func (b *Breaker) Ready() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.open || (!b.probing && b.now().Sub(b.openedAt) >= CoolOff)
}

// Success closes the breaker; it reports whether it was open.
func (b *Breaker) Success() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	wasOpen := b.open
	b.failures, b.open, b.probing = 0, false, false
	return wasOpen
}

// Failure counts a failure; it reports whether the breaker just opened.
func (b *Breaker) Failure() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	if b.open {
		// A failed probe: wait another cool-off.
		b.openedAt, b.probing = b.now(), false
		return false
	}
	if b.failures >= Threshold {
		b.open, b.openedAt = true, b.now()
		return true
	}
	return false
}

// Trip opens the breaker at once (a check found the dependency refusing
// or away); it reports whether it just opened.
func (b *Breaker) Trip() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open {
		return false
	}
	b.failures, b.open, b.openedAt, b.probing = Threshold, true, b.now(), false
	return true
}

// State is "closed", "open" or "half_open", for /status.
func (b *Breaker) State() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case !b.open:
		return "closed"
	case b.probing || b.now().Sub(b.openedAt) >= CoolOff:
		return "half_open"
	}
	return "open"
}
