package quota

import (
	"github.com/wxa-sidecar/wxa-sidecar/internal/testclock"
	"math"
	"testing"
	"time"
)

// approx reports whether got is want give or take a millionth of a slot.
func approx(got, want float64) bool { return math.Abs(got-want) < 1e-6 }

// A bucket taking over from a shared one starts empty, or in debt for what
// the shared one had queued; one that never saw the shared bucket starts
// full.
func TestAStandInStartsEmptyInDebtOrFull(t *testing.T) {
	for _, tt := range []struct {
		name      string
		takeover  bool
		slots     float64
		admitted  int           // of 10 at once, without waiting
		nextDelay time.Duration // the RetryAfter of the first refused
	}{
		{"a takeover starts empty", true, 0, 0, time.Second},
		{"a takeover with slots left still starts empty", true, 3, 0, time.Second},
		{"a takeover in debt waits it out", true, -3, 0, 4 * time.Second},
		{"never taken over: as it is, full", false, 0, 5, time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := testclock.New(base)
			l := testLocal(t, Options{Default: Limit{Rate: 1, Burst: 5}}, c, &recorder{}, &testclock.Timers{})
			admitted, first := 0, time.Duration(0)
			for range 10 {
				err := l.admitInsteadAt(t.Context(), secCheckKey, StandIn{Takeover: tt.takeover, Slots: tt.slots}, base, never)
				if err == nil {
					admitted++
				} else if first == 0 {
					first = asRefusal(t, err).RetryAfter
				}
			}
			if admitted != tt.admitted || first != tt.nextDelay {
				t.Errorf("%d admitted, the first refusal %v from the next slot; want %d, %v", admitted, first, tt.admitted, tt.nextDelay)
			}
		})
	}
}

// What a stand-in owes the shared bucket: its grants beyond its refill,
// taken once by Settle, given back by Owe, and the rest at Rejoin; after
// Rejoin the next takeover starts a new, empty period.
func TestAStandInOwesItsGrantsBeyondItsRefill(t *testing.T) {
	c := testclock.New(base)
	l := testLocal(t, Options{Default: Limit{Rate: 1, Burst: 5}}, c, &recorder{}, &testclock.Timers{})
	admit := func(n int) int {
		admitted := 0
		for range n {
			if l.admitInsteadAt(t.Context(), secCheckKey, StandIn{Takeover: true}, c.Now(), never) == nil {
				admitted++
			}
		}
		return admitted
	}
	admit(1) // starts the period, empty at base
	c.Set(base.Add(3 * time.Second))
	if n := admit(5); n != 3 {
		t.Fatalf("3 s into the period: %d admitted, want 3 (the refill)", n)
	}
	if got := l.Settle(secCheckKey); !approx(got, 3) {
		t.Errorf("Settle %v, want 3", got)
	}
	if got := l.Settle(secCheckKey); !approx(got, 0) {
		t.Errorf("Settle again %v, want 0 (taken already)", got)
	}
	// The charge did not reach the shared bucket: owed to the next Settle.
	l.Owe(secCheckKey, 3)
	c.Set(base.Add(4 * time.Second))
	if n := admit(5); n != 1 {
		t.Errorf("the period goes on across Settle: %d admitted, want 1 (the refill, not a new empty bucket)", n)
	}
	if got := l.Settle(secCheckKey); !approx(got, 4) {
		t.Errorf("Settle %v, want 4 (3 owed, 1 new)", got)
	}
	// Grants between the last Settle and the shared bucket's answer are
	// owed at Rejoin: 2 more, less the slot an untouched bucket would have
	// lost to its burst of 5 by now (6 s of refill from empty).
	c.Set(base.Add(6 * time.Second))
	if n := admit(5); n != 2 {
		t.Errorf("after 2 s more: %d admitted, want 2", n)
	}
	l.Rejoin(secCheckKey)
	if got := l.Settle(secCheckKey); !approx(got, 1) {
		t.Errorf("Settle after Rejoin %v, want 1 (5 in all: what the period took below an untouched bucket)", got)
	}
	if n := admit(1); n != 0 {
		t.Errorf("a takeover after Rejoin: %d admitted, want 0 (a new period starts empty)", n)
	}
}
