package token

import (
	"context"
	"fmt"
	"time"
)

// Token returns a token that has not expired, fetching one only when there
// is none; concurrent callers share that fetch. Without a token it returns
// the fetch's error, which errors.As finds as a *wechat.Error (Status 0)
// when WeChat answered an errcode.
func (m *Manager) Token(ctx context.Context) (Token, error) {
	if t := m.current.Load(); t != nil && m.now().Before(t.Expiry) {
		return *t, nil
	}
	return m.obtain(ctx, func(cur *Token, now time.Time) bool { return cur == nil || !now.Before(cur.Expiry) },
		m.fetchNormal)
}

// Invalidate is called after WeChat said token failed is dead (40001,
// 40014, 42001). Only if failed is still the current token is a new one
// fetched; N callers failing on the same token cause one fetch and all get
// its result. In stable mode force_refresh is used only when a normal fetch
// hands back the same dead token, within WeChat's limits.
func (m *Manager) Invalidate(ctx context.Context, failed string) (Token, error) {
	need := func(cur *Token, now time.Time) bool {
		return cur == nil || cur.Value == failed || !now.Before(cur.Expiry)
	}
	return m.obtain(ctx, need, func(ctx context.Context, sc *storeCalls) (Token, error) {
		t, err := m.fetchNormal(ctx, sc)
		if err != nil || t.Value != failed || m.opts.Mode != ModeStable {
			return t, err
		}
		return m.fetchForced(ctx, sc, need)
	})
}

// fetchFunc gets a token from WeChat, using the store through sc.
type fetchFunc func(ctx context.Context, sc *storeCalls) (Token, error)

// obtain returns the current token unless need says it won't do; then it
// fills (from the store, else fetch), or waits for the fill already running
// and looks again.
func (m *Manager) obtain(ctx context.Context, need func(*Token, time.Time) bool, fetch fetchFunc) (Token, error) {
	m.mu.Lock()
	for waited := false; ; waited = true {
		cur := m.current.Load()
		if !need(cur, m.now()) {
			m.mu.Unlock()
			return *cur, nil
		}
		if m.lastErr != nil && (waited || m.now().Before(m.nextRefresh)) {
			// The fetch we waited for failed, or the background loop is
			// backing off after one: do not start another now.
			err := m.lastErr
			m.mu.Unlock()
			return Token{}, err
		}
		if m.inflight == nil {
			if m.life.Err() != nil {
				m.mu.Unlock()
				return Token{}, ErrStopped
			}
			break
		}
		done := m.inflight
		m.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return Token{}, ctx.Err()
		}
		m.mu.Lock()
	}
	done := make(chan struct{})
	m.inflight = done
	m.mu.Unlock()

	// The fill serves every waiter: one caller hanging up must not end it,
	// Stop does. It runs on its own, so that its caller, like every other,
	// waits for it only as long as its own context lets it.
	var t Token
	var err error
	go func() {
		defer func() {
			// A panic here would end the process, not one request.
			if r := recover(); r != nil {
				t, err = Token{}, fmt.Errorf("token: panic while getting a token: %v", r)
			}
			m.mu.Lock()
			m.inflight = nil
			close(done)
			m.mu.Unlock()
		}()
		fillCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		defer cancel()
		defer context.AfterFunc(m.life, cancel)()
		if m.life.Err() != nil {
			cancel() // now, not in AfterFunc's goroutine
		}
		t, err = m.fill(fillCtx, need, fetch)
	}()
	select {
	case <-done:
		// t and err were written before done was closed.
		if err != nil {
			return Token{}, err
		}
		return t, nil
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
}

// fill finds a token need accepts: the store's, if another manager sharing
// it put one there, else one from fetch, saved for the others. In classic
// mode the fetch runs under the store's lease: every fetch kills the token
// before it, so replicas take turns and the later ones adopt the token the
// first one saved instead of replacing it.
func (m *Manager) fill(ctx context.Context, need func(*Token, time.Time) bool, fetch fetchFunc) (Token, error) {
	sc := &storeCalls{m: m}
	if t, ok := sc.adoptable(ctx, need); ok {
		return m.adopt(t), nil
	}
	if m.opts.Mode == ModeClassic {
		if unlock := sc.lock(ctx); unlock != nil {
			defer unlock()
			// The previous holder has usually just saved a token.
			if t, ok := sc.adoptable(ctx, need); ok {
				return m.adopt(t), nil
			}
		}
		if err := ctx.Err(); err != nil {
			// Stopped while waiting for the lease.
			return Token{}, err
		}
	}
	t, err := fetch(ctx, sc)
	if err == nil {
		sc.save(ctx, t)
	}
	return t, err
}

// adopt makes t, which another manager fetched, the current token.
func (m *Manager) adopt(t Token) Token {
	now := m.now()
	m.mu.Lock()
	m.adopted++
	m.shared = t.Value
	m.install(t, now)
	m.mu.Unlock()
	m.log.Info("token adopted from the store", "store", m.storeName, "mode", m.opts.Mode, "token", Prefix(t.Value),
		"expires_in", t.Expiry.Sub(now).Round(time.Second).String())
	return t
}

// install makes t the current token; m.mu must be held.
func (m *Manager) install(t Token, now time.Time) {
	m.lastErr = nil
	m.current.Store(&t)
	m.issued[t.Value] = t.Expiry
	for v, exp := range m.issued {
		if !now.Before(exp) {
			delete(m.issued, v)
		}
	}
}

// fetchNormal fetches in the configured mode without forcing anything.
func (m *Manager) fetchNormal(ctx context.Context, _ *storeCalls) (Token, error) {
	return m.fetch(ctx, false)
}

// fetchForced fetches with force_refresh, if WeChat's limit allows it now.
// A force kills the token every manager sharing the store serves, and
// WeChat allows one per 30 s for the whole app: so managers force under
// the store's fetch lease, one at a time, and the holder saves its token
// before it lets the lease go. A manager that waited for the lease adopts
// that token (need accepts it) instead of failing its callers because the
// fleet's force_refresh was just spent.
func (m *Manager) fetchForced(ctx context.Context, sc *storeCalls, need func(*Token, time.Time) bool) (Token, error) {
	if unlock := sc.lock(ctx); unlock != nil {
		defer unlock()
		if t, ok := sc.adoptable(ctx, need); ok {
			return m.adopt(t), nil
		}
	}
	if err := ctx.Err(); err != nil {
		// Stopped while waiting for the lease.
		return Token{}, err
	}
	allowed, refuse := sc.allowForce(ctx, m.now())
	if !allowed {
		err := fmt.Errorf("token: %s: WeChat keeps returning a token it calls invalid, and force_refresh is not allowed now: %s", m.opts.AppID, refuse)
		m.log.Error("cannot replace a dead token", "reason", refuse)
		return Token{}, err
	}
	m.log.Warn("WeChat returned the token it called invalid; forcing a refresh")
	t, err := m.fetch(ctx, true)
	if err == nil {
		// Before the lease goes: the next holder adopts it.
		sc.save(ctx, t)
	}
	return t, err
}

// fetch asks WeChat for a token and records the outcome.
func (m *Manager) fetch(ctx context.Context, force bool) (Token, error) {
	started := m.now()
	t, err := m.src.request(ctx, force)
	if m.opts.OnFetch != nil {
		m.opts.OnFetch(err)
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fetches++
	if err != nil {
		m.fetchErrors++
		m.lastErr, m.lastErrAt = err, now
		// obtain holds callers to this error until nextRefresh: bring that
		// in to a backoff, or a failed fetch between background refreshes
		// (Invalidate's, say) would keep a dead token in service for hours.
		if retry := now.Add(minBackoff); m.nextRefresh.After(retry) {
			m.nextRefresh = retry
		}
		attrs := []any{"mode", m.opts.Mode, "error", err.Error()}
		if cur := m.current.Load(); cur != nil && now.Before(cur.Expiry) {
			m.log.Warn("token fetch failed; the current token stays in service", append(attrs, "expires_in", cur.Expiry.Sub(now).Round(time.Second).String())...)
		} else {
			m.log.Error("token fetch failed and there is no valid token: calls fail until a fetch succeeds", append(attrs, "hint", hint(err))...)
		}
		return Token{}, err
	}
	t.FetchedAt = started
	m.install(t, now)
	m.log.Info("token fetched", "mode", m.opts.Mode, "force", force, "token", Prefix(t.Value),
		"expires_in", t.Expiry.Sub(now).Round(time.Second).String())
	return t, nil
}

// handedOut reports whether this manager has handed out tok before.
func (m *Manager) handedOut(tok string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.issued[tok]
	return ok
}

// Owns reports whether this manager handed out tok and it has not expired.
func (m *Manager) Owns(tok string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	exp, ok := m.issued[tok]
	return ok && m.now().Before(exp)
}
