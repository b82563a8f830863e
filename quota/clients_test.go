package quota

import (
	"testing"
	"time"
)

func TestClientsKeepsEachClientToItsLimit(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	// 6/m:5: a burst of 5, then one a minute.
	c := NewClients[string](Limit{Rate: 1.0 / 60, Burst: 5}, 10, nil)
	for i := range 5 {
		if _, ok := c.takeAt("a", t0); !ok {
			t.Fatalf("take %d of the burst refused", i+1)
		}
	}
	wait, ok := c.takeAt("a", t0)
	if ok || wait != time.Minute {
		t.Errorf("6th take at once: ok %v, wait %v; want refused for 1m", ok, wait)
	}
	if _, ok := c.takeAt("b", t0); !ok {
		t.Error("another client refused: each has its own bucket")
	}
	if wait, ok := c.takeAt("a", t0.Add(59*time.Second)); ok || wait != time.Second {
		t.Errorf("after 59s: ok %v, wait %v; want refused for 1s", ok, wait)
	}
	if _, ok := c.takeAt("a", t0.Add(time.Minute)); !ok {
		t.Error("after a minute: refused, want the next slot")
	}
	if _, ok := c.takeAt("a", t0.Add(time.Minute)); ok {
		t.Error("two slots within one minute after the burst")
	}
	// Any window of one minute carries at most N = 6 from a fresh start.
	c2 := NewClients[string](Limit{Rate: 1.0 / 60, Burst: 5}, 10, nil)
	granted := 0
	for s := range 60 {
		for range 3 {
			if _, ok := c2.takeAt("x", t0.Add(time.Duration(s)*time.Second)); ok {
				granted++
			}
		}
	}
	if granted != 5 {
		t.Errorf("a minute of asking (the minute not yet over): %d granted, want 5", granted)
	}
}

func TestClientsGiveBackReturnsOneSlot(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	c := NewClients[string](Limit{Rate: 1, Burst: 2}, 10, nil)
	c.takeAt("a", t0)
	c.takeAt("a", t0)
	if _, ok := c.takeAt("a", t0); ok {
		t.Fatal("a third take within the burst of 2")
	}
	c.giveBackAt("a", t0)
	if _, ok := c.takeAt("a", t0); !ok {
		t.Error("a slot given back could not be taken")
	}
	// A full bucket holds no more than its burst, however much is given
	// back.
	for range 5 {
		c.giveBackAt("b", t0.Add(time.Hour))
		c.giveBackAt("a", t0.Add(time.Hour))
	}
	n := 0
	for range 10 {
		if _, ok := c.takeAt("a", t0.Add(time.Hour)); ok {
			n++
		}
	}
	if n != 2 {
		t.Errorf("after giving back into a full bucket: %d taken at once, want the burst, 2", n)
	}
	if c.Len() != 1 {
		t.Errorf("a give-back for an unknown client was remembered: %d clients", c.Len())
	}
}

func TestClientsForgetsTheLeastRecentlySeenBeyondMax(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	c := NewClients[int](Limit{Rate: 0.001, Burst: 1}, 3, nil)
	for client := range 3 {
		c.takeAt(client, t0)
	}
	// Client 0 seen again: 1 is now the least recent.
	if _, ok := c.takeAt(0, t0); ok {
		t.Fatal("client 0 got a second slot")
	}
	c.takeAt(3, t0) // forgets 1
	if got := c.Len(); got != 3 {
		t.Errorf("remembers %d clients, want at most 3", got)
	}
	if _, ok := c.takeAt(1, t0); !ok {
		t.Error("client 1, forgotten, should start with a full bucket")
	}
	// That forgot 2 (the least recent then); 0 and 3 are still limited.
	for _, client := range []int{0, 3} {
		if _, ok := c.takeAt(client, t0); ok {
			t.Errorf("client %d was forgotten, want it remembered", client)
		}
	}
	for i := range 10_000 {
		c.takeAt(100+i, t0)
	}
	if got := c.Len(); got != 3 {
		t.Errorf("after 10000 clients: %d remembered, want 3", got)
	}
	// The list and the map still agree.
	n := 0
	for e := c.head; e != nil; e = e.next {
		if c.entries[e.key] != e {
			t.Fatalf("list entry %v is not the map's", e.key)
		}
		n++
	}
	if n != 3 || c.tail == nil || c.tail.next != nil || c.head.prev != nil {
		t.Errorf("LRU list of %d entries, want 3 with proper ends", n)
	}
}

func TestClientsWithoutALimitRemembersNothing(t *testing.T) {
	c := NewClients[string](Limit{}, 10, nil)
	for range 100 {
		if _, ok := c.Take("a"); !ok {
			t.Fatal("refused without a limit")
		}
	}
	if c.Len() != 0 {
		t.Errorf("remembers %d clients without a limit", c.Len())
	}
}

func TestClientsWaitSaysWhatTakeWouldWithoutSpending(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	c := NewClients[string](Limit{Rate: 1, Burst: 2}, 10, nil)
	if w := c.waitAt("a", t0); w != 0 || c.Len() != 0 {
		t.Errorf("an unknown client: wait %v, %d remembered; want 0 and none", w, c.Len())
	}
	for range 3 {
		if w := c.waitAt("a", t0); w != 0 {
			t.Fatalf("wait %v before any take", w)
		}
	}
	c.takeAt("a", t0)
	c.takeAt("a", t0)
	if w, _ := c.takeAt("a", t0.Add(250*time.Millisecond)); c.waitAt("a", t0.Add(250*time.Millisecond)) != w || w != 750*time.Millisecond {
		t.Errorf("wait %v, Take's %v; want both 750ms", c.waitAt("a", t0.Add(250*time.Millisecond)), w)
	}
	if w := c.waitAt("a", t0.Add(time.Second)); w != 0 {
		t.Errorf("a second later: wait %v, want 0", w)
	}
}
