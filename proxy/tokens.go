package proxy

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"math"
	"net/http"
	"strconv"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// serveToken answers the token endpoints locally with the managed token, so
// a backend that still fetches its own token neither bypasses nor — through
// WeChat's classic endpoint — invalidates the shared one. prefixed is the
// app an /apps/{appid}/ prefix named, if any.
func (p *Proxy) serveToken(w http.ResponseWriter, r *http.Request, prefixed *app, apiPath string) {
	var grantType, appID, secret string
	if apiPath == wechat.PathStableToken {
		if r.Method != http.MethodPost {
			writeErrcode(w, http.StatusOK, wechat.NeedPOST, "require POST method")
			return
		}
		body, err := p.readBody(w, r)
		if err != nil {
			writeError(w, err)
			return
		}
		// force_refresh is read and ignored on purpose: callers must not be
		// able to rotate the token every replica shares.
		var req struct {
			GrantType    string `json:"grant_type"`
			AppID        string `json:"appid"`
			Secret       string `json:"secret"`
			ForceRefresh any    `json:"force_refresh"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			writeErrcode(w, http.StatusOK, wechat.DataFormat, "data format error: body is not a JSON object")
			return
		}
		grantType, appID, secret = req.GrantType, req.AppID, req.Secret
	} else {
		q := r.URL.Query()
		grantType, appID, secret = q.Get("grant_type"), q.Get("appid"), q.Get("secret")
	}
	if grantType != "client_credential" {
		writeErrcode(w, http.StatusOK, wechat.BadGrantType, "invalid grant_type")
		return
	}
	a := p.apps[appID]
	if a == nil || (prefixed != nil && prefixed != a) {
		writeErrcode(w, http.StatusOK, wechat.InvalidAppID, "invalid appid")
		return
	}
	if secret == "" {
		writeErrcode(w, http.StatusOK, wechat.MissingSecret, "appsecret missing")
		return
	}
	// Comparing fixed-size hashes keeps the time independent of where, and
	// whether by length, the secrets differ.
	given := sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(given[:], a.secretHash[:]) != 1 {
		writeErrcode(w, http.StatusOK, wechat.InvalidSecret, "invalid appsecret")
		return
	}
	tok, err := a.tokens.Token(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	expiresIn := int64(math.Floor(tok.Expiry.Sub(p.now()).Seconds()))
	if expiresIn < 0 {
		expiresIn = 0
	}
	b := make([]byte, 0, 64+len(tok.Value))
	b = append(b, `{"access_token":`...)
	b = strconv.AppendQuote(b, tok.Value)
	b = append(b, `,"expires_in":`...)
	b = strconv.AppendInt(b, expiresIn, 10)
	b = append(b, '}')
	writeJSON(w, http.StatusOK, b)
}
