package token

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// fetcher gets a token from WeChat: one HTTP call to /cgi-bin/token or
// /cgi-bin/stable_token, nothing kept from one call to the next. Reusing
// what it fetches (the cache, the single flight, the refresh ahead, the
// store) is the Manager's business, as x/oauth2 keeps a TokenSource apart
// from its reuseTokenSource.
type fetcher struct {
	appID, secret, baseURL string
	mode                   Mode
	client                 *http.Client // never follows a redirect
	now                    func() time.Time
	log                    *slog.Logger
}

// newFetcher is the fetcher of opts, whose defaults New has filled in.
func newFetcher(opts Options) *fetcher {
	// Following a redirect would re-POST {"appid","secret"} to the Location
	// host (307/308) or send the secret-bearing classic URL as Referer: a
	// token fetch stops at the 3xx, and request reports it as a failure.
	noRedirects := *opts.Client
	noRedirects.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &fetcher{appID: opts.AppID, secret: opts.Secret, baseURL: opts.BaseURL, mode: opts.Mode,
		client: &noRedirects, now: opts.Now, log: opts.Logger}
}

// maxExpiresIn is the longest life WeChat gives a token. A longer
// expires_in is a broken or hostile answer; taken as is, 9 300 000 000 s
// overflows time.Duration, the expiry lands in the past and every request
// fetches a new token.
const maxExpiresIn = 7200

// RedirectError is a token fetch answered with a 3xx, which is never
// followed. It carries the Location's host only: the whole Location may
// hold the secret (a classic fetch's query, echoed back).
type RedirectError struct {
	Status       int
	LocationHost string
}

func (e *RedirectError) Error() string {
	return fmt.Sprintf("token: fetch: WeChat answered HTTP %d redirecting to host %q; token fetches never follow a redirect", e.Status, e.LocationHost)
}

// hint says what to do about a fetch error an operator sees at start.
func hint(err error) string {
	var re *RedirectError
	if errors.As(err, &re) {
		return "WECHAT_API_URL or a proxy on the way redirects token fetches elsewhere; check DNS and HTTPS_PROXY, and point WECHAT_API_URL at WeChat itself"
	}
	var we *wechat.Error
	if !errors.As(err, &we) {
		return "check that WECHAT_API_URL is reachable (and HTTPS_PROXY)"
	}
	switch we.Code {
	case wechat.InvalidAppID:
		return "WECHAT_APP_ID is not a valid appid"
	case wechat.InvalidSecret, wechat.MissingSecret:
		return "the app secret is wrong or missing"
	case wechat.IPNotWhitelisted, wechat.IPNotRegistered:
		// WeChat answers either for the same refusal.
		return "this egress IP is not on the app's IP whitelist"
	case wechat.SecretFrozen:
		return "the app secret is frozen"
	case wechat.DailyQuota, wechat.MinuteQuota:
		return "WeChat's token quota is used up; it resets later"
	}
	return "see WeChat's errcode documentation"
}

// request makes the HTTP call of one fetch: a normal one in the
// configured mode, or stable_token's force_refresh when force is set.
func (f *fetcher) request(ctx context.Context, force bool) (Token, error) {
	var req *http.Request
	var err error
	if f.mode == ModeClassic && !force {
		q := url.Values{"grant_type": {"client_credential"}, "appid": {f.appID}, "secret": {f.secret}}
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, f.baseURL+"/cgi-bin/token?"+q.Encode(), nil)
	} else {
		body, _ := json.Marshal(map[string]any{"grant_type": "client_credential", "appid": f.appID,
			"secret": f.secret, "force_refresh": force})
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, f.baseURL+"/cgi-bin/stable_token", bytes.NewReader(body))
		if req != nil {
			req.Header.Set("Content-Type", "application/json")
		}
	}
	if err != nil {
		return Token{}, fmt.Errorf("token: fetch: %w", RedactError(err))
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return Token{}, fmt.Errorf("token: fetch: %w", RedactError(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return Token{}, fmt.Errorf("token: fetch: reading the answer: %w", RedactError(err))
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return Token{}, &RedirectError{Status: resp.StatusCode, LocationHost: locationHost(resp)}
	}
	if resp.StatusCode != http.StatusOK {
		return Token{}, fmt.Errorf("token: fetch: WeChat answered HTTP %d", resp.StatusCode)
	}
	var ans struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
		Errcode     int    `json:"errcode"`
		Errmsg      string `json:"errmsg"`
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		return Token{}, fmt.Errorf("token: fetch: the answer is not JSON: %w", err)
	}
	if ans.Errcode != 0 {
		// Status 0: WeChat's words about the token fetch, not an answer
		// to the call that needed the token (see wechat.Error.Status).
		return Token{}, fmt.Errorf("token: fetch: %w", &wechat.Error{Code: wechat.Errcode(ans.Errcode), Msg: ans.Errmsg})
	}
	if ans.AccessToken == "" || ans.ExpiresIn <= 0 {
		return Token{}, errors.New("token: fetch: the answer has no access_token or expires_in")
	}
	if !ValidValue(ans.AccessToken) {
		// Never the value: whatever it is, it stands where a token does.
		return Token{}, errors.New("token: fetch: the answer's access_token is not a token WeChat issues (its characters or length)")
	}
	if ans.ExpiresIn > maxExpiresIn {
		f.log.Warn("WeChat's expires_in is beyond a token's longest life; clamped", "expires_in", ans.ExpiresIn, "clamped_to", maxExpiresIn)
		ans.ExpiresIn = maxExpiresIn
	}
	// expires_in is what is left of the token's life, not a constant.
	return Token{Value: ans.AccessToken, Expiry: f.now().Add(time.Duration(ans.ExpiresIn) * time.Second)}, nil
}

// locationHost is the host a 3xx points to, relative Locations resolved
// against the request; never the path or query, which may hold the secret.
func locationHost(resp *http.Response) string {
	u, err := resp.Location()
	switch {
	case errors.Is(err, http.ErrNoLocation):
		return "(no Location)"
	case err != nil:
		return "(unparseable Location)"
	}
	return u.Host
}
