package sidecar

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"
)

// shutdown drains the API and QRCODE_ADDR ports within timeout, then stops
// the admin port. Shortly before the timeout, requests still waiting for
// their answer get 503 and Retry-After: 1 instead of a cut connection.
func (s *Sidecar) shutdown(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	answerWaiting := time.AfterFunc(drainDelay(timeout), func() {
		if n := s.drain.drain(); n > 0 {
			s.log.Warn("shutdown timeout near: requests still waiting answered 503", "requests", n)
		}
		// Code fetches whose callers are gone (or just answered 503) end
		// too, and give their fleet leases back before the process exits.
		if s.flight != nil {
			s.flight.Stop()
		}
	})
	defer answerWaiting.Stop()
	servers := []*http.Server{s.api, s.qrcode}
	errs := make([]error, len(servers))
	var wg sync.WaitGroup
	for i, srv := range servers {
		if srv != nil {
			// Together: the QRCODE_ADDR listener must not keep accepting
			// while the API port drains.
			wg.Go(func() { errs[i] = srv.Shutdown(ctx) })
		}
	}
	wg.Wait()
	// The store's queue has been written all along; what is left of it
	// gets what is left of the same bound.
	s.closeStore(ctx)
	s.settle(ctx)
	s.admin.Shutdown(ctx)
	return errors.Join(errs...)
}

// settle is the rest of shutdown once no request is left: no lease of this
// replica's may outlive it. Token fills end now (nobody here waits for
// them; one waiting for another replica's lease would hold the exit for
// its whole wait) and give back the token lease they hold. Code fetches
// under a fleet lease finish, or are ended at the drain and release it.
// What could not reach Redis is retried for a second at most.
func (s *Sidecar) settle(ctx context.Context) {
	for _, m := range s.tokens {
		m.Stop()
	}
	for _, m := range s.tokens {
		if m.Wait(ctx) != nil {
			s.log.Warn("shutdown timeout: a token fill did not end", "app", m.AppID())
		}
	}
	if s.flight != nil && s.flight.Wait(ctx) != nil {
		s.log.Warn("shutdown timeout: code fetches under a fleet lease did not end; their leases expire by themselves")
	}
	if s.redis != nil && s.redis.Owed() > 0 {
		// Only while Redis is unreachable is anything owed: a second
		// more, not the whole timeout, for it to answer.
		owedCtx, cancel := context.WithTimeout(ctx, drainMargin)
		defer cancel()
		if s.redis.Settle(owedCtx) != nil {
			s.log.Warn("shutdown: Redis did not answer; leases this replica could not release expire by themselves",
				"owed", s.redis.Owed())
		}
	}
}

// Stop takes the sidecar out of service: /readyz fails at once, keep-alive
// ends, new requests are still served for SHUTDOWN_DELAY (while the pod is
// taken out of its Services), then the API and QRCODE_ADDR ports drain
// within SHUTDOWN_TIMEOUT and the admin port stops.
func (s *Sidecar) Stop() {
	s.log.Info("shutting down", "delay", s.cfg.ShutdownDelay.String(), "timeout", s.cfg.ShutdownTimeout.String())
	s.ready.Store(false)
	// From here every response says Connection: close and idle connections
	// are closed (net/http does both), so a caller's next request opens a
	// new connection, served during SHUTDOWN_DELAY, instead of racing the
	// close of an idle one at Shutdown.
	s.api.SetKeepAlivesEnabled(false)
	if s.qrcode != nil {
		s.qrcode.SetKeepAlivesEnabled(false)
	}
	time.Sleep(s.cfg.ShutdownDelay)
	if err := s.shutdown(s.cfg.ShutdownTimeout); err != nil {
		s.log.Warn("in-flight requests did not finish in time", "error", err)
	}
	s.log.Info("stopped")
}

// drainMargin is how long before SHUTDOWN_TIMEOUT the requests still
// waiting are answered 503: long enough for the handlers to notice their
// cancelled context and the answers to reach the callers before the
// connections are closed.
const drainMargin = time.Second

// drainDelay is when, after the drain began, waiting requests are answered:
// drainMargin before timeout, or halfway through a shorter one.
func drainDelay(timeout time.Duration) time.Duration {
	return max(timeout-drainMargin, timeout/2)
}

// Close stops everything New and Start began; it is safe after a failed
// Listen.
func (s *Sidecar) Close() {
	for _, m := range s.tokens {
		m.Stop()
	}
	if s.stopTokens != nil {
		s.stopTokens()
		s.tokensDone.Wait()
	}
	for _, srv := range []*http.Server{s.api, s.admin, s.qrcode} {
		if srv != nil {
			srv.Close()
		}
	}
	s.gate.Close()
	if s.publicGate != nil {
		s.publicGate.Close()
	}
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	s.closeStore(expired) // a no-op after shutdown's
	s.cache.Close()
	if s.redis != nil {
		s.redis.Close()
	}
}
