package token

import "time"

// Status is a manager's state for /status: never the token, at most a
// short prefix of it.
type Status struct {
	AppID            string    `json:"app"`
	Mode             Mode      `json:"mode"`
	HasToken         bool      `json:"has_token"`
	TokenPrefix      string    `json:"token_prefix,omitempty"`
	FetchedAt        time.Time `json:"fetched_at,omitzero"`
	AgeSeconds       float64   `json:"age_seconds"`
	Expiry           time.Time `json:"expiry,omitzero"`
	ExpiresInSeconds float64   `json:"expires_in_seconds"`
	NextRefresh      time.Time `json:"next_refresh,omitzero"`
	Fetches          int64     `json:"fetches"`
	FetchErrors      int64     `json:"fetch_errors"`
	LastError        string    `json:"last_error,omitempty"`
	LastErrorAt      time.Time `json:"last_error_at,omitzero"`
	// ForceRefreshesToday are the force refreshes this manager made in
	// WeChat's day (wechat.ChinaTime); its JSON name is older than that.
	ForceRefreshesToday int    `json:"force_refreshes_24h"`
	Store               string `json:"store"`        // where the token is kept: "memory" by default
	Adopted             int64  `json:"adopted"`      // tokens taken from the store, fetched by another manager
	StoreErrors         int64  `json:"store_errors"` // store faults this manager carried on through
}

// Status reports the manager's state.
func (m *Manager) Status() Status {
	now := m.now()
	forced := m.local.forcesToday(m.opts.AppID, now)
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Status{AppID: m.opts.AppID, Mode: m.opts.Mode, NextRefresh: m.nextRefresh,
		Fetches: m.fetches, FetchErrors: m.fetchErrors, LastErrorAt: m.lastErrAt,
		ForceRefreshesToday: forced, Store: m.storeName, Adopted: m.adopted, StoreErrors: m.storeErrors}
	if m.lastErr != nil {
		s.LastError = m.lastErr.Error()
	}
	if t := m.current.Load(); t != nil {
		s.HasToken = now.Before(t.Expiry)
		s.TokenPrefix = Prefix(t.Value)
		s.FetchedAt, s.Expiry = t.FetchedAt, t.Expiry
		s.AgeSeconds = now.Sub(t.FetchedAt).Seconds()
		s.ExpiresInSeconds = max(t.Expiry.Sub(now).Seconds(), 0)
	}
	return s
}

// Prefix is as much of a token as may be shown: enough to tell two apart.
func Prefix(tok string) string {
	if len(tok) <= 6 {
		return "…"
	}
	return tok[:6] + "…"
}
