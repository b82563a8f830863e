package quota

import (
	"github.com/wxa-sidecar/wxa-sidecar/internal/testclock"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// An instant read before another caller's, but arriving at the bucket
// after it, must not move the bucket's clock back: x/time/rate would count
// the time between the two instants twice. At 1/s with a burst of 1, calls
// at 0 s and 1 s take both slots; a refused call stamped 0.5 s arriving
// next must leave no slot at 1.5 s (the next is at 2 s).
func TestAnOlderInstantDoesNotTurnTheBucketsClockBack(t *testing.T) {
	r := &recorder{}
	l := testLocal(t, Options{Default: Limit{Rate: 1, Burst: 1}}, testclock.New(base), r, &testclock.Timers{})
	for i, step := range []struct {
		at    time.Duration
		admit bool
	}{
		{0, true},
		{time.Second, true},
		{500 * time.Millisecond, false}, // read before the previous call took the lock
		{1500 * time.Millisecond, false},
		{2 * time.Second, true},
	} {
		err := l.admitAt(t.Context(), secCheckKey, base.Add(step.at), never)
		if (err == nil) != step.admit {
			t.Errorf("call %d at +%v: %v, want admitted %v", i, step.at, err, step.admit)
		}
	}
}

// The measure: 64 goroutines calling at once with no wait against
// 10/s and a burst of 9, for 3 s of the gate's time, are admitted 9 + 30 =
// 39 times. Each goroutine reads the time before it calls, as Admit does,
// so instants arrive out of order; refused calls interleave with the
// others. Before the fix, a refused reservation was cancelled after the
// gate's lock was released, with later reservations already made, and
// x/time/rate could not give its slot back (9 admitted, the burst); and an
// older instant turned the bucket's clock back (over a thousand).
func TestContendedRefusalsLoseNoSlot(t *testing.T) {
	const (
		goroutines = 64
		span       = 3 * time.Second
		step       = 50 * time.Microsecond // 60 000 calls in all
	)
	l := testLocal(t, Options{Default: Limit{Rate: 10, Burst: 9}}, testclock.New(base), &recorder{}, &testclock.Timers{})
	var ticks, admitted atomic.Int64
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for {
				at := time.Duration(ticks.Add(1)) * step
				if at > span {
					return
				}
				if l.admitAt(t.Context(), unlimitedKey, base.Add(at), never) == nil {
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	// 9 at once, then one every 100 ms: the last at 3.0 s, in the span.
	if got := admitted.Load(); got < 36 || got > 39 {
		t.Errorf("%d calls admitted in %v of contention, want 39 (9 + 10/s × 3 s), at least 36", got, span)
	}
}
