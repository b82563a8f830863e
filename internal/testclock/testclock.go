// Package testclock is the tests' time: a Clock they set and move, and
// stand-ins for time.After (Waits) and time.AfterFunc (Timers) that fire
// only when the test says so, so tests drive time instead of sleeping.
//
// Test code only: no production package imports it, and it imports no
// package of ours.
package testclock

import (
	"sync"
	"testing"
	"time"
)

// Clock is a time source the test sets and moves; Now is what a part's
// Options.Now takes. Safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// New returns a Clock reading t.
func New(t time.Time) *Clock { return &Clock{t: t} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Set makes the clock read t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// Waits stands in for time.After: each wait a part starts arrives at the
// test (Next), which ends it (Wait.Fire). After blocks while a wait the
// test has not taken is pending, so a loop cannot run ahead of its test.
type Waits struct{ calls chan Wait }

// Wait is one call of After: how long it asked to wait.
type Wait struct {
	D    time.Duration
	fire chan time.Time
}

// NewWaits returns Waits with no wait pending.
func NewWaits() *Waits { return &Waits{calls: make(chan Wait, 1)} }

// After is time.After, for a part's Options.After.
func (w *Waits) After(d time.Duration) <-chan time.Time {
	c := Wait{D: d, fire: make(chan time.Time, 1)}
	w.calls <- c
	return c.fire
}

// nextWithin bounds how long Next waits for the part to wait again: far
// more than a correct part needs on a busy machine.
const nextWithin = 10 * time.Second

// Next returns the next wait the part starts, failing t if none comes.
func (w *Waits) Next(t testing.TB) Wait {
	t.Helper()
	select {
	case c := <-w.calls:
		return c
	case <-time.After(nextWithin):
		t.Fatal("testclock: the part did not wait again")
		return Wait{}
	}
}

// Fire ends the wait, as if the clock read at when it did.
func (w Wait) Fire(at time.Time) { w.fire <- at }

// Timers stands in for time.AfterFunc: nothing fires until the test says
// so (Fire). The zero value is ready to use; safe for concurrent use.
type Timers struct {
	mu      sync.Mutex
	pending []*Timer
}

// Timer is one call of AfterFunc.
type Timer struct {
	D       time.Duration
	f       func()
	stopped bool
}

// AfterFunc is time.AfterFunc; it returns the timer's Stop.
func (ts *Timers) AfterFunc(d time.Duration, f func()) (stop func() bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t := &Timer{D: d, f: f}
	ts.pending = append(ts.pending, t)
	return func() bool {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

// Live returns the timers neither stopped nor fired, oldest first.
func (ts *Timers) Live() []*Timer {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var out []*Timer
	for _, t := range ts.pending {
		if !t.stopped {
			out = append(out, t)
		}
	}
	return out
}

// Fire runs t's func as its timer would, stopped or not: a timer that
// fires while it is being stopped must do no harm either.
func (ts *Timers) Fire(t *Timer) {
	ts.mu.Lock()
	t.stopped = true
	ts.mu.Unlock()
	t.f()
}
