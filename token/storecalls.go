package token

import (
	"context"
	"errors"
	"time"
)

// storeCalls is one fill's use of the store. After the first fault the
// rest of the fill uses the manager's own memory: a store that is down
// costs a fill one failed call, not one per step.
type storeCalls struct {
	m    *Manager
	down bool
	// saved is the token this fill found in the store or saved there.
	saved string
}

// adoptable returns the stored token if need accepts it.
func (sc *storeCalls) adoptable(ctx context.Context, need func(*Token, time.Time) bool) (Token, bool) {
	m := sc.m
	if sc.down {
		return Token{}, false
	}
	t, err := m.store.Load(ctx, m.opts.AppID)
	if err != nil {
		if !errors.Is(err, ErrNoToken) {
			sc.fault("load", err)
		}
		return Token{}, false
	}
	if t.Value == "" || need(&t, m.now()) {
		return Token{}, false
	}
	if cur := m.current.Load(); cur != nil && t.Value != cur.Value && (t.Expiry.Before(cur.Expiry) || m.handedOut(t.Value)) {
		// The store lags behind this manager (a Save failed): its token
		// is one this manager already replaced, or older than ours, and
		// the fetch of ours killed it (at once after a force_refresh, five
		// minutes later in classic mode).
		return Token{}, false
	}
	sc.saved = t.Value
	return t, true
}

// save offers a fetched token to the other managers.
func (sc *storeCalls) save(ctx context.Context, t Token) {
	if sc.down || t.Value == sc.saved {
		return
	}
	if err := sc.m.store.Save(ctx, sc.m.opts.AppID, t); err != nil {
		sc.fault("save", err)
		return
	}
	sc.saved = t.Value
	sc.m.mu.Lock()
	sc.m.shared = t.Value
	sc.m.mu.Unlock()
}

// lock takes the app's fetch lease; nil when the store failed to give it.
func (sc *storeCalls) lock(ctx context.Context) (unlock func()) {
	m := sc.m
	if sc.down {
		return nil
	}
	// A holder keeps the lease for at most leaseTTL; twice that means the
	// store, not a fetch, is stuck.
	wait, cancel := context.WithTimeout(ctx, 2*m.leaseTTL)
	defer cancel()
	release, err := m.store.Lock(wait, m.opts.AppID, m.leaseTTL)
	if err != nil {
		if ctx.Err() == nil {
			sc.fault("lock", err)
		}
		return nil
	}
	return func() {
		if err := release(ctx); err != nil {
			sc.fault("unlock", err)
		}
	}
}

// allowForce asks the store whether WeChat's force_refresh limit allows one
// now, and the manager's own memory when the store fails: this manager's
// own force refreshes then still keep to the limit.
func (sc *storeCalls) allowForce(ctx context.Context, now time.Time) (bool, string) {
	m := sc.m
	if !sc.down && m.store != Store(m.local) {
		allowed, reason, err := m.store.AllowForce(ctx, m.opts.AppID, now)
		if err == nil {
			if allowed {
				m.local.recordForce(m.opts.AppID, now)
			}
			return allowed, reason
		}
		sc.fault("allow_force", err)
	}
	allowed, reason, _ := m.local.AllowForce(ctx, m.opts.AppID, now)
	return allowed, reason
}

// fault records a store failure; the token never appears in it (the
// Store contract, and RedactError for a URL in it).
func (sc *storeCalls) fault(op string, err error) {
	m := sc.m
	sc.down = true
	m.mu.Lock()
	m.storeErrors++
	m.mu.Unlock()
	m.log.Warn("token store failed; carrying on from this manager's own memory", "store", m.storeName,
		"op", op, "error", RedactError(err).Error())
}
