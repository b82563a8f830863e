package fleet

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Bounds of what a replica may owe the fleet: the operations, and the bytes
// they carry (an image to store). Past them new debts are dropped: a lease
// then expires by itself, and an image is fetched again by whoever asks.
const (
	maxOwedOps   = 4096
	maxOwedBytes = 64 << 20
)

// owedPoll is the pause between two looks at whether Redis may be tried
// again for the oldest debt.
const owedPoll = 100 * time.Millisecond

// owed is one operation a replica owes the fleet: it failed, or was skipped
// by the breaker or the request's budget, while Redis was unreachable, and
// others wait for it (a lease's release, the image its waiters poll for).
type owed struct {
	op    string
	until time.Time // after it the debt is void: the lease has expired
	size  int
	f     func(context.Context) error
}

// owedQueue is the client's debts, paid in order (an image before the
// release of its lease, so the waiters the release lets go find it) by
// one worker that runs while there are debts.
type owedQueue struct {
	mu      sync.Mutex
	ops     []owed
	bytes   int
	working bool
	idle    chan struct{} // closed when the queue empties
	closed  chan struct{} // closed by Client.Close
}

// unreachable reports an error of Redis being out of reach, which a later
// try may not meet: a failure, a timeout, a skip. A reply (Redis answered)
// is not: trying it again would get the same answer.
func unreachable(err error) bool {
	return err != nil && !errors.Is(err, redis.Nil) && !isReply(err)
}

// owe queues f as op, to run through Do as soon as Redis answers again,
// until until; size is what it holds in memory. It reports whether the
// debt was taken on (false past the bounds).
func (c *Client) owe(op string, until time.Time, size int, f func(context.Context) error) bool {
	q := &c.owed
	q.mu.Lock()
	defer q.mu.Unlock()
	select {
	case <-q.closed:
		return false
	default:
	}
	if len(q.ops) >= maxOwedOps || q.bytes+size > maxOwedBytes {
		c.log.Warn("redis unreachable: too much owed to the fleet already; dropped (a lease expires by itself, an image is fetched again)",
			"op", op, "owed", len(q.ops), "owed_bytes", q.bytes)
		return false
	}
	q.ops = append(q.ops, owed{op: op, until: until, size: size, f: f})
	q.bytes += size
	if !q.working {
		q.working = true
		q.idle = make(chan struct{})
		go c.payOwed()
	}
	return true
}

// payOwed runs the debts in order until none is left: each is tried as
// soon as the breaker lets a call through, kept on a failure, and dropped
// once it succeeds, Redis answers it with an error, or its time is up.
func (c *Client) payOwed() {
	q := &c.owed
	for {
		q.mu.Lock()
		if len(q.ops) == 0 {
			q.working = false
			close(q.idle)
			q.mu.Unlock()
			return
		}
		d := q.ops[0]
		q.mu.Unlock()

		paid := !time.Now().Before(d.until)
		if !paid && c.breaker.Ready() {
			err := c.Do(context.Background(), d.op, d.f)
			paid = !unreachable(err)
		}
		if paid {
			q.mu.Lock()
			q.ops[0] = owed{}
			q.ops = q.ops[1:]
			q.bytes -= d.size
			q.mu.Unlock()
			continue
		}
		t := time.NewTimer(owedPoll)
		select {
		case <-q.closed:
			t.Stop()
			q.mu.Lock()
			q.ops, q.bytes, q.working = nil, 0, false
			close(q.idle)
			q.mu.Unlock()
			return
		case <-t.C:
		}
	}
}

// Settle waits until the replica owes the fleet nothing (every lease it
// could not release is released, every image it could not store is
// stored, or their time is up), or until ctx is done: what shutdown does
// before it closes the client.
func (c *Client) Settle(ctx context.Context) error {
	q := &c.owed
	q.mu.Lock()
	if !q.working {
		q.mu.Unlock()
		return nil
	}
	idle := q.idle
	q.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Owed is the number of operations the replica owes the fleet now.
func (c *Client) Owed() int {
	c.owed.mu.Lock()
	defer c.owed.mu.Unlock()
	return len(c.owed.ops)
}
