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
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
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

// Manager is one app's token. Its methods are safe for concurrent use.
type Manager struct {
	opts Options
	now  func() time.Time
	log  *slog.Logger
	src  *fetcher // the HTTP fetch; the rest of Manager is its reuse

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
	m := &Manager{opts: opts, now: opts.Now, log: opts.Logger, src: newFetcher(opts), issued: map[string]time.Time{},
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
