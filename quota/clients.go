package quota

import (
	"sync"
	"time"
)

// Clients is a limit each client keeps to on its own (QRCODE_CLIENT_LIMIT):
// one token bucket per client, for one process, as GCRA's theoretical
// arrival time (x/time/rate's bucket, in one time.Time a client).
//
// It is bounded: it remembers at most Max clients, forgetting the one seen
// least recently. A forgotten client starts again with a full bucket, so
// more distinct clients than Max gain each at most one more burst; a
// per-client limit cannot hold back many clients, only the shared limits
// can. K is the caller's notion of a client (an address, a /64): only
// comparable, so Clients knows nothing of addresses. Safe for concurrent
// use.
type Clients[K comparable] struct {
	burst    int
	interval time.Duration // between two slots; 0 for no limit
	max      int
	now      func() time.Time

	mu      sync.Mutex
	entries map[K]*clientEntry[K]
	// The LRU list: head seen most recently, tail least.
	head, tail *clientEntry[K]
}

type clientEntry[K comparable] struct {
	key        K
	tat        time.Time // theoretical arrival time: the bucket is full once it has passed
	prev, next *clientEntry[K]
}

// DefaultMaxClients is how many clients a Clients remembers when not told:
// about 100 bytes each, 6-7 MiB in all.
const DefaultMaxClients = 1 << 16

// NewClients returns a Clients holding each client to lim (a zero Rate:
// no limit, nothing remembered), remembering at most maxClients of them
// (DefaultMaxClients when not above 0), on the clock now (nil: time.Now).
func NewClients[K comparable](lim Limit, maxClients int, now func() time.Time) *Clients[K] {
	if maxClients <= 0 {
		maxClients = DefaultMaxClients
	}
	if now == nil {
		now = time.Now
	}
	c := &Clients[K]{burst: max(lim.Burst, 1), max: maxClients, now: now, entries: map[K]*clientEntry[K]{}}
	if lim.Rate > 0 {
		c.interval = max(time.Duration(float64(time.Second)/lim.Rate), 1)
	}
	return c
}

// Take spends one of client's slots and reports true, or reports false and
// how long until a slot is free (at least a nanosecond), spending nothing.
func (c *Clients[K]) Take(client K) (wait time.Duration, ok bool) {
	return c.takeAt(client, c.now())
}

func (c *Clients[K]) takeAt(client K, now time.Time) (time.Duration, bool) {
	if c.interval == 0 {
		return 0, true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[client]
	if e == nil {
		e = c.insert(client)
		e.tat = now
	} else {
		c.touch(e)
	}
	tat := e.tat
	if tat.Before(now) {
		tat = now
	}
	next := tat.Add(c.interval)
	if allowAt := next.Add(-time.Duration(c.burst) * c.interval); now.Before(allowAt) {
		return allowAt.Sub(now), false
	}
	e.tat = next
	return 0, true
}

// Wait is how long until client has a slot free, 0 if it has one now:
// what Take would answer, without spending or remembering anything.
func (c *Clients[K]) Wait(client K) time.Duration {
	return c.waitAt(client, c.now())
}

func (c *Clients[K]) waitAt(client K, now time.Time) time.Duration {
	if c.interval == 0 {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[client]
	if e == nil {
		return 0
	}
	allowAt := e.tat.Add(c.interval - time.Duration(c.burst)*c.interval)
	if now.Before(allowAt) {
		return allowAt.Sub(now)
	}
	return 0
}

// GiveBack returns one slot Take spent for client: the call it was spent
// on did not go upstream after all. A client forgotten since has a full
// bucket already.
func (c *Clients[K]) GiveBack(client K) {
	c.giveBackAt(client, c.now())
}

func (c *Clients[K]) giveBackAt(client K, now time.Time) {
	if c.interval == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[client]
	if e == nil {
		return
	}
	e.tat = e.tat.Add(-c.interval)
	if e.tat.Before(now) {
		// Full: a bucket holds no more than its burst.
		e.tat = now
	}
}

// Len is how many clients are remembered.
func (c *Clients[K]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// insert adds client at the head, forgetting the least recently seen
// client when full (whose entry it reuses). c.mu must be held.
func (c *Clients[K]) insert(client K) *clientEntry[K] {
	var e *clientEntry[K]
	if len(c.entries) >= c.max {
		e = c.tail
		c.unlink(e)
		delete(c.entries, e.key)
		*e = clientEntry[K]{}
	} else {
		e = new(clientEntry[K])
	}
	e.key = client
	c.entries[client] = e
	c.pushFront(e)
	return e
}

// touch moves e to the head. c.mu must be held.
func (c *Clients[K]) touch(e *clientEntry[K]) {
	if c.head == e {
		return
	}
	c.unlink(e)
	c.pushFront(e)
}

func (c *Clients[K]) pushFront(e *clientEntry[K]) {
	e.prev, e.next = nil, c.head
	if c.head != nil {
		c.head.prev = e
	}
	c.head = e
	if c.tail == nil {
		c.tail = e
	}
}

func (c *Clients[K]) unlink(e *clientEntry[K]) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		c.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		c.tail = e.prev
	}
	e.prev, e.next = nil, nil
}
