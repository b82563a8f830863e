// Package token manages one app's WeChat access_token: it fetches it,
// refreshes it in the background before it expires, shares every fetch
// among concurrent callers, and replaces a token WeChat reports dead —
// only if it is still the current one. It keeps the token in a Store, in
// memory by default, so replicas sharing one can use one token and count
// force_refresh per app.
//
// It must never log, return in an error, or report in Status a secret or a
// whole token.
package token

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// Mode is how tokens are fetched.
type Mode string

const (
	// ModeStable uses POST /cgi-bin/stable_token in normal mode: every
	// caller gets the same token, and nothing is invalidated.
	ModeStable Mode = "stable"
	// ModeClassic uses GET /cgi-bin/token: every fetch issues a new token
	// and kills the previous one five minutes later.
	ModeClassic Mode = "classic"
)

// DefaultRefreshMargin is how long before expiry a token is replaced. It
// stays under WeChat's five minutes, in which a stable token rolls over and
// an old classic token keeps working, so a refresh always lands while the
// old token still works.
const DefaultRefreshMargin = 3 * time.Minute

// WeChat's limit on force_refresh: 20 a day, 30 seconds apart.
const (
	forceRefreshesPerDay = 20
	forceRefreshSpacing  = 30 * time.Second
)

// maxExpiresIn is the longest life WeChat gives a token. A longer
// expires_in is a broken or hostile answer; taken as is, 9 300 000 000 s
// overflows time.Duration, the expiry lands in the past and every request
// fetches a new token.
const maxExpiresIn = 7200

// Backoff after failed background fetches.
const (
	minBackoff = time.Second
	maxBackoff = time.Minute
)

// Options configures a Manager.
type Options struct {
	AppID, Secret string
	// BaseURL is WeChat's base, e.g. https://api.weixin.qq.com.
	BaseURL string
	// Mode defaults to ModeStable.
	Mode Mode
	// RefreshMargin defaults to DefaultRefreshMargin.
	RefreshMargin time.Duration
	// Client defaults to one with a 10-second timeout. The manager uses a
	// copy that never follows a redirect, whatever Client's CheckRedirect.
	Client *http.Client
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
	// After defaults to time.After; Run waits only through it, so tests
	// drive the background refresh without sleeping.
	After func(time.Duration) <-chan time.Time
	// Jitter spreads a backoff; default a random duration in [d/2, d).
	Jitter func(time.Duration) time.Duration
	// OnFetch, if set, is called after every fetch attempt (the metrics).
	OnFetch func(err error)
	// Store is where the token and the force_refresh count live; nil means
	// a MemoryStore of this Manager's own. Managers sharing a Store adopt a
	// token another one fetched instead of fetching their own.
	Store Store
}

// Token is an access_token and when it stops working.
type Token struct {
	Value     string
	Expiry    time.Time
	FetchedAt time.Time
}

// APIError is an errcode WeChat answered, a value callers branch on.
type APIError struct {
	Code int
	Msg  string
}

func (e *APIError) Error() string {
	return "token: WeChat errcode " + strconv.Itoa(e.Code) + ": " + e.Msg
}

// Manager is one app's token. Its methods are safe for concurrent use.
type Manager struct {
	opts Options
	now  func() time.Time
	log  *slog.Logger

	current atomic.Pointer[Token] // read without a lock on every request

	store Store
	// local is the store's stand-in while the store fails, and the record
	// of the force refreshes this manager made; it is store when
	// Options.Store is nil.
	local     *MemoryStore
	storeName string
	leaseTTL  time.Duration

	// life ends with Stop, and every fill's context with it.
	life context.Context
	stop context.CancelFunc

	mu          sync.Mutex
	inflight    chan struct{} // closed when the running fetch ends
	lastErr     error         // of the last fetch, nil after a success
	lastErrAt   time.Time
	fetches     int64
	fetchErrors int64
	adopted     int64
	storeErrors int64
	issued      map[string]time.Time // every token handed out, until its expiry
	// shared is the token last read from or written to the store: the
	// one the fleet serves, which the outage rule keeps (fetchRefresh).
	shared      string
	nextRefresh time.Time
	backoff     time.Duration
}

// New checks opts and returns a Manager without a token; the first Token
// call or Run fetches one.
func New(opts Options) (*Manager, error) {
	if opts.AppID == "" || opts.Secret == "" {
		return nil, errors.New("token: AppID and Secret are required")
	}
	if u, err := url.Parse(opts.BaseURL); err != nil || u.Host == "" {
		return nil, fmt.Errorf("token: BaseURL %q is not an absolute URL", opts.BaseURL)
	}
	switch opts.Mode {
	case "":
		opts.Mode = ModeStable
	case ModeStable, ModeClassic:
	default:
		return nil, fmt.Errorf("token: unknown mode %q", opts.Mode)
	}
	if opts.RefreshMargin <= 0 {
		opts.RefreshMargin = DefaultRefreshMargin
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 10 * time.Second}
	}
	// Following a redirect would re-POST {"appid","secret"} to the Location
	// host (307/308) or send the secret-bearing classic URL as Referer: a
	// token fetch stops at the 3xx, and request reports it as a failure.
	noRedirects := *opts.Client
	noRedirects.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	opts.Client = &noRedirects
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.After == nil {
		opts.After = time.After
	}
	if opts.Jitter == nil {
		opts.Jitter = func(d time.Duration) time.Duration { return d/2 + rand.N(d/2+1) }
	}
	m := &Manager{opts: opts, now: opts.Now, log: opts.Logger, issued: map[string]time.Time{},
		store: opts.Store, local: NewMemoryStore()}
	m.life, m.stop = context.WithCancel(context.Background())
	if m.store == nil {
		m.store = m.local
	}
	m.storeName = fmt.Sprintf("%T", m.store)
	if n, ok := m.store.(fmt.Stringer); ok {
		m.storeName = n.String()
	}
	// A classic fetch is one request, bounded by the client's timeout; the
	// slack covers reading the answer and saving it.
	m.leaseTTL = opts.Client.Timeout + leaseSlack
	if opts.Client.Timeout <= 0 {
		m.leaseTTL = defaultLeaseTTL
	}
	return m, nil
}

// How long a classic fetch's lease lasts, when the client has no timeout to
// derive it from, and the slack added to the client's timeout otherwise.
const (
	defaultLeaseTTL = 30 * time.Second
	leaseSlack      = 5 * time.Second
)

// AppID is the app this manager serves.
func (m *Manager) AppID() string { return m.opts.AppID }

// Token returns a token that has not expired, fetching one only when there
// is none; concurrent callers share that fetch. Without a token it returns
// the fetch's error: an *APIError when WeChat answered an errcode.
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

// ErrStopped is what Token and Invalidate answer after Stop where they
// would have fetched.
var ErrStopped = errors.New("token: the manager is stopped")

// Stop ends every fill, running or to come: one waiting for another
// replica's lease or for WeChat gives up at once (a lease it held is given
// back), so a process can exit within its shutdown timeout. The current
// token is still served until it expires; where a fetch would be needed,
// Token and Invalidate answer ErrStopped. For shutdown.
func (m *Manager) Stop() { m.stop() }

// Wait returns when no fill runs, or with ctx's error when ctx ends first.
func (m *Manager) Wait(ctx context.Context) error {
	m.mu.Lock()
	done := m.inflight
	m.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
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
	t, err := m.request(ctx, force)
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
	var ae *APIError
	if !errors.As(err, &ae) {
		return "check that WECHAT_API_URL is reachable (and HTTPS_PROXY)"
	}
	switch wechat.Errcode(ae.Code) {
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

// request makes the HTTP call of one fetch.
func (m *Manager) request(ctx context.Context, force bool) (Token, error) {
	var req *http.Request
	var err error
	if m.opts.Mode == ModeClassic && !force {
		q := url.Values{"grant_type": {"client_credential"}, "appid": {m.opts.AppID}, "secret": {m.opts.Secret}}
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, m.opts.BaseURL+"/cgi-bin/token?"+q.Encode(), nil)
	} else {
		body, _ := json.Marshal(map[string]any{"grant_type": "client_credential", "appid": m.opts.AppID,
			"secret": m.opts.Secret, "force_refresh": force})
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, m.opts.BaseURL+"/cgi-bin/stable_token", bytes.NewReader(body))
		if req != nil {
			req.Header.Set("Content-Type", "application/json")
		}
	}
	if err != nil {
		return Token{}, fmt.Errorf("token: fetch: %w", RedactError(err))
	}
	resp, err := m.opts.Client.Do(req)
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
		return Token{}, &APIError{Code: ans.Errcode, Msg: ans.Errmsg}
	}
	if ans.AccessToken == "" || ans.ExpiresIn <= 0 {
		return Token{}, errors.New("token: fetch: the answer has no access_token or expires_in")
	}
	if !ValidValue(ans.AccessToken) {
		// Never the value: whatever it is, it stands where a token does.
		return Token{}, errors.New("token: fetch: the answer's access_token is not a token WeChat issues (its characters or length)")
	}
	if ans.ExpiresIn > maxExpiresIn {
		m.log.Warn("WeChat's expires_in is beyond a token's longest life; clamped", "expires_in", ans.ExpiresIn, "clamped_to", maxExpiresIn)
		ans.ExpiresIn = maxExpiresIn
	}
	// expires_in is what is left of the token's life, not a constant.
	return Token{Value: ans.AccessToken, Expiry: m.now().Add(time.Duration(ans.ExpiresIn) * time.Second)}, nil
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

// Status is a manager's state for /status: never the token, at most a
// short prefix of it.
type Status struct {
	AppID             string    `json:"app"`
	Mode              Mode      `json:"mode"`
	HasToken          bool      `json:"has_token"`
	TokenPrefix       string    `json:"token_prefix,omitempty"`
	FetchedAt         time.Time `json:"fetched_at,omitzero"`
	AgeSeconds        float64   `json:"age_seconds"`
	Expiry            time.Time `json:"expiry,omitzero"`
	ExpiresInSeconds  float64   `json:"expires_in_seconds"`
	NextRefresh       time.Time `json:"next_refresh,omitzero"`
	Fetches           int64     `json:"fetches"`
	FetchErrors       int64     `json:"fetch_errors"`
	LastError         string    `json:"last_error,omitempty"`
	LastErrorAt       time.Time `json:"last_error_at,omitzero"`
	ForceRefreshes24h int       `json:"force_refreshes_24h"` // made by this manager
	Store             string    `json:"store"`               // where the token is kept: "memory" by default
	Adopted           int64     `json:"adopted"`             // tokens taken from the store, fetched by another manager
	StoreErrors       int64     `json:"store_errors"`        // store faults this manager carried on through
}

// Status reports the manager's state.
func (m *Manager) Status() Status {
	now := m.now()
	forced := m.local.forcesIn24h(m.opts.AppID, now)
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Status{AppID: m.opts.AppID, Mode: m.opts.Mode, NextRefresh: m.nextRefresh,
		Fetches: m.fetches, FetchErrors: m.fetchErrors, LastErrorAt: m.lastErrAt,
		ForceRefreshes24h: forced, Store: m.storeName, Adopted: m.adopted, StoreErrors: m.storeErrors}
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
