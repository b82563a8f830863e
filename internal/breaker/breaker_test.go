package breaker

import (
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/internal/testclock"
)

func TestOpensAfterThresholdAndProbesOnceAfterTheCoolOff(t *testing.T) {
	c := testclock.New(time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC))
	b := &Breaker{Now: c.Now}
	for i := range Threshold - 1 {
		if b.Failure() {
			t.Fatalf("opened after %d failures, want %d", i+1, Threshold)
		}
	}
	if !b.Failure() || b.State() != "open" || b.Allow() || b.Ready() {
		t.Fatalf("after %d failures: state %s, want open and no call allowed", Threshold, b.State())
	}
	c.Advance(CoolOff)
	if !b.Ready() || b.State() != "half_open" {
		t.Fatalf("after the cool-off: ready %v, state %s", b.Ready(), b.State())
	}
	if !b.Allow() || b.Allow() {
		t.Fatal("after the cool-off, want exactly one probe")
	}
	if b.Failure() || b.State() != "open" {
		t.Fatalf("a failed probe: state %s, want open again", b.State())
	}
	c.Advance(CoolOff)
	if !b.Allow() || !b.Success() || b.State() != "closed" || !b.Allow() {
		t.Fatalf("a good probe: state %s, want closed", b.State())
	}
	if b.Success() {
		t.Error("Success on a closed breaker reported it was open")
	}
}

func TestTripOpensAtOnce(t *testing.T) {
	var b Breaker
	if !b.Trip() || b.Trip() || b.Allow() {
		t.Fatalf("Trip: state %s, want open once", b.State())
	}
}
