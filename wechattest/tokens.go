package wechattest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"time"
)

type tokenInfo struct {
	value  string
	app    string
	expiry time.Time
	diesAt time.Time // zero: lives until expiry
}

// RevokeTokens makes every token issued so far invalid (40001).
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	for _, t := range s.tokens {
		t.diesAt = now
	}
}

// withToken checks the access_token as WeChat does before an API runs.
func (s *Server) withToken(h func(w http.ResponseWriter, r *http.Request, body []byte, appID string)) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		tok := r.URL.Query().Get("access_token")
		if tok == "" {
			if bytes.Contains(body, []byte(`"access_token"`)) {
				writeErr(w, 47001, "data format error")
				return
			}
			writeErr(w, 41001, "access_token missing")
			return
		}
		// A copy taken under the lock: a forced refresh revokes the token
		// (diesAt) while other calls use it.
		s.mu.Lock()
		var t tokenInfo
		known := s.tokens[tok] != nil
		if known {
			t = *s.tokens[tok]
		}
		now := s.opts.Now()
		s.mu.Unlock()
		switch {
		case !known || (!t.diesAt.IsZero() && !now.Before(t.diesAt)):
			writeErr(w, 40001, "invalid credential, access_token is invalid or not latest")
		case !now.Before(t.expiry):
			writeErr(w, 42001, "access_token expired")
		default:
			h(w, r, body, t.app)
		}
	}
}

func (s *Server) issue(appID string, now time.Time) *tokenInfo {
	t := &tokenInfo{value: randomString(136), app: appID, expiry: now.Add(s.opts.TokenTTL)}
	s.tokens[t.value] = t
	return t
}

func (s *Server) classicToken(w http.ResponseWriter, r *http.Request, _ []byte) {
	q := r.URL.Query()
	if q.Get("grant_type") != "client_credential" {
		writeErr(w, 40002, "invalid grant_type")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, code := s.checkApp(q.Get("appid"), q.Get("secret"))
	if code != 0 {
		writeErr(w, code, errmsgs[code])
		return
	}
	now := s.opts.Now()
	if prev := a.classic; prev != nil && (prev.diesAt.IsZero() || prev.diesAt.After(now.Add(s.opts.ClassicGrace))) {
		prev.diesAt = now.Add(s.opts.ClassicGrace)
	}
	a.classic = s.issue(q.Get("appid"), now)
	writeJSON(w, map[string]any{"access_token": a.classic.value, "expires_in": s.expiresIn(a.classic, now)})
}

// redirectToken sends a token fetch, secret and all, elsewhere: what a
// hijacked DNS name or a compromised egress proxy could answer.
func (s *Server) redirectToken(w http.ResponseWriter, r *http.Request, _ []byte) {
	target := s.opts.TokenRedirect + r.URL.Path
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	w.Header().Set("Location", target)
	w.WriteHeader(http.StatusTemporaryRedirect)
}

// expiresIn is what a token answer reports as its remaining lifetime.
func (s *Server) expiresIn(t *tokenInfo, now time.Time) int64 {
	if s.opts.TokenExpiresIn != 0 {
		return s.opts.TokenExpiresIn
	}
	return int64(t.expiry.Sub(now) / time.Second)
}

// stableRollover is the last part of a stable token's life in which a
// normal-mode call gets the next token.
const stableRollover = 5 * time.Minute

func (s *Server) stableToken(w http.ResponseWriter, r *http.Request, body []byte) {
	if r.Method != http.MethodPost {
		writeErr(w, 43002, "require POST method")
		return
	}
	var req struct {
		GrantType    string `json:"grant_type"`
		AppID        string `json:"appid"`
		Secret       string `json:"secret"`
		ForceRefresh bool   `json:"force_refresh"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeErr(w, 47001, "data format error")
		return
	}
	if req.GrantType != "client_credential" {
		writeErr(w, 40002, "invalid grant_type")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, code := s.checkApp(req.AppID, req.Secret)
	if code != 0 {
		writeErr(w, code, errmsgs[code])
		return
	}
	now := s.opts.Now()
	alive := func(t *tokenInfo) bool {
		return t != nil && now.Before(t.expiry) && (t.diesAt.IsZero() || now.Before(t.diesAt))
	}
	switch {
	case req.ForceRefresh:
		kept := a.forced[:0]
		for _, at := range a.forced {
			if now.Sub(at) < 24*time.Hour {
				kept = append(kept, at)
			}
		}
		a.forced = kept
		if len(a.forced) >= 20 {
			writeErr(w, 45009, "reach max api daily quota limit")
			return
		}
		if len(a.forced) > 0 && now.Sub(a.forced[len(a.forced)-1]) < 30*time.Second {
			writeErr(w, 45011, "api minute-quota reach limit, mustslower retry next minute")
			return
		}
		a.forced = append(a.forced, now)
		if a.stable != nil {
			a.stable.diesAt = now
		}
		a.stable = s.issue(req.AppID, now)
	case s.opts.StaleStableToken && a.stable != nil && now.Before(a.stable.expiry) && !alive(a.stable):
		// Revoked, yet still what normal mode answers: only force mode
		// replaces it.
	case !alive(a.stable) || a.stable.expiry.Sub(now) <= stableRollover:
		// The old one, if alive, keeps working until its own expiry.
		a.stable = s.issue(req.AppID, now)
	}
	writeJSON(w, map[string]any{"access_token": a.stable.value, "expires_in": s.expiresIn(a.stable, now)})
}
