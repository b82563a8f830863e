package testclock

import (
	"testing"
	"time"
)

func TestClockMovesOnlyWhenTold(t *testing.T) {
	start := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	c := New(start)
	if got := c.Now(); !got.Equal(start) {
		t.Fatalf("Now = %v, want %v", got, start)
	}
	c.Advance(90 * time.Second)
	if got := c.Now(); !got.Equal(start.Add(90 * time.Second)) {
		t.Errorf("after Advance: %v, want %v", got, start.Add(90*time.Second))
	}
	c.Set(start)
	if got := c.Now(); !got.Equal(start) {
		t.Errorf("after Set: %v, want %v", got, start)
	}
}

func TestAWaitEndsWhenFired(t *testing.T) {
	w := NewWaits()
	got := make(chan time.Time)
	go func() { got <- <-w.After(time.Minute) }()
	wait := w.Next(t)
	if wait.D != time.Minute {
		t.Errorf("wait of %v, want 1m", wait.D)
	}
	select {
	case <-got:
		t.Fatal("the wait ended before it was fired")
	case <-time.After(20 * time.Millisecond):
	}
	at := time.Date(2026, 11, 24, 8, 1, 0, 0, time.UTC)
	wait.Fire(at)
	if v := <-got; !v.Equal(at) {
		t.Errorf("the wait ended with %v, want %v", v, at)
	}
}

func TestATimerFiresOnlyWhenTold(t *testing.T) {
	var ts Timers
	fired := 0
	stop := ts.AfterFunc(time.Second, func() { fired++ })
	ts.AfterFunc(2*time.Second, func() { fired += 10 })
	if live := ts.Live(); len(live) != 2 || live[0].D != time.Second || fired != 0 {
		t.Fatalf("%d live timers, %d fired; want 2 and none", len(live), fired)
	}
	if !stop() || stop() {
		t.Error("Stop reported the timer's state wrongly: want true once, then false")
	}
	live := ts.Live()
	if len(live) != 1 {
		t.Fatalf("%d live timers after Stop, want 1", len(live))
	}
	ts.Fire(live[0])
	if fired != 10 || len(ts.Live()) != 0 {
		t.Errorf("fired %d with %d live; want the second timer's 10 and none", fired, len(ts.Live()))
	}
}
