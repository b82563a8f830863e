package store

import (
	"context"
	"errors"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
)

// writers is how many writes are made at once: enough to keep up with a
// fleet's misses (each a call to WeChat, hundreds of ms), few enough that a
// slow store holds few connections.
const writers = 2

// writeAttempts and writeBackoff: a write that fails is tried again after
// 0.5 s, 1 s, 2 s (a breaker open meanwhile makes the later tries cheap),
// then given up and counted. The object is simply not there: the next miss
// of its key fetches and queues it again.
const (
	writeAttempts = 4
	writeBackoff  = 500 * time.Millisecond
)

// job is one write the queue holds.
type job struct {
	app string
	k   cache.Key
	e   *cache.Entry
	at  time.Time // when the image was fetched: the object's age counts from it
}

// work makes the queued writes until the store stops.
func (s *Store) work() {
	for {
		select {
		case <-s.stopCtx.Done():
			return
		case j := <-s.queue:
			s.writeWithRetries(j)
			s.pending.Add(-1)
		}
	}
}

func (s *Store) writeWithRetries(j job) {
	backoff := writeBackoff
	for attempt := 1; ; attempt++ {
		// Detached from the caller, who was answered long ago; bounded by
		// the timeout inside do and cut by the store's stop.
		err := s.write(s.stopCtx, j)
		if err == nil {
			return
		}
		if attempt == writeAttempts || s.stopCtx.Err() != nil {
			reason := DropFailed
			if s.stopCtx.Err() != nil {
				reason = DropShutdown
			}
			s.dropped(reason)
			if !errors.Is(err, errSkipped) {
				s.log.Debug("durable store: a write was given up", "store", s.location, "error", err.Error())
			}
			return
		}
		t := time.NewTimer(backoff)
		select {
		case <-s.stopCtx.Done():
			t.Stop()
			s.dropped(DropShutdown)
			return
		case <-t.C:
		}
		backoff *= 2
	}
}

// flush waits until every queued write is made (or given up), or ctx ends.
func (s *Store) flush(ctx context.Context) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for s.QueueDepth() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
