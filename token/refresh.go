package token

import (
	"context"
	"errors"
	"time"
)

// Backoff after failed background fetches.
const (
	minBackoff = time.Second
	maxBackoff = time.Minute
)

// Run refreshes the token in the background until ctx is done: at once,
// then RefreshMargin before each expiry, so no request waits for a refresh
// in steady state. Failures back off with jitter and never stop the loop.
func (m *Manager) Run(ctx context.Context) {
	for {
		wait := m.untilDue()
		select {
		case <-ctx.Done():
			return
		case <-m.opts.After(wait):
		}
		if m.untilDue() > 0 {
			continue // someone else fetched meanwhile
		}
		m.refresh(ctx)
	}
}

// untilDue is how long until the next background fetch is due.
func (m *Manager) untilDue() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return max(m.nextRefresh.Sub(m.now()), 0)
}

// refresh fetches a replacement, then schedules the next attempt.
func (m *Manager) refresh(ctx context.Context) {
	t, err := m.obtain(ctx, func(cur *Token, now time.Time) bool {
		return cur == nil || !now.Before(cur.Expiry.Add(-m.opts.RefreshMargin))
	}, m.fetchRefresh)
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.backoff = min(max(m.backoff*2, minBackoff), maxBackoff)
		next := now.Add(m.opts.Jitter(m.backoff))
		if cur := m.current.Load(); cur != nil && next.After(cur.Expiry) {
			// Still try once more while the current token works.
			next = now.Add(max(cur.Expiry.Sub(now)/2, minBackoff))
		}
		m.nextRefresh = next
		return
	}
	m.backoff = 0
	m.nextRefresh = t.Expiry.Add(-m.opts.RefreshMargin)
	if !m.nextRefresh.After(now) {
		// WeChat handed back a token already inside the margin (a stable
		// token before its rollover): try again after half of what is left,
		// not at once, so this never spins.
		m.nextRefresh = now.Add(max(t.Expiry.Sub(now)/2, 5*time.Second))
	}
}

// errKeepingSharedToken is the background refresh's answer while the
// outage rule holds: no fetch was made, and the refresh backs off.
var errKeepingSharedToken = errors.New("token: the token store is unreachable: keeping the fleet's token until it expires")

// fetchRefresh is the background refresh's fetch. In classic mode, while
// the store fails, a manager serving the fleet's token (the one it last read
// from or wrote to the store) keeps it until it expires instead of fetching
// early: each replica's early fetch would end, five minutes later, the
// token the replica before it fetched, and a token war would last as long
// as the outage. The refresh backs off and tries the store again; once the
// token has expired, need asks for a fetch and this one fetches. Callers
// without a valid token (Token, Invalidate) never wait for this: they fetch.
func (m *Manager) fetchRefresh(ctx context.Context, sc *storeCalls) (Token, error) {
	if sc.down && m.opts.Mode == ModeClassic {
		now := m.now()
		m.mu.Lock()
		cur := m.current.Load()
		keep := cur != nil && cur.Value == m.shared && now.Before(cur.Expiry)
		m.mu.Unlock()
		if keep {
			m.log.Warn("token store unreachable: keeping the fleet's token until it expires; a fetch now would end the other replicas' token",
				"token", Prefix(cur.Value), "expires_in", cur.Expiry.Sub(now).Round(time.Second).String())
			return Token{}, errKeepingSharedToken
		}
	}
	return m.fetch(ctx, false)
}
