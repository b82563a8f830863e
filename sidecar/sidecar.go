// Package sidecar wires the parts into the running service: it builds
// every part from one config.Config, binds the ports, serves them, drains
// them on shutdown, and answers the admin port (/healthz, /readyz,
// /metrics, /status). It is the one package besides main that reads the
// config; main, the end-to-end tests and the benchmarks all start this
// wiring rather than a copy of it. It holds no domain logic.
package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/config"
	"github.com/wxa-sidecar/wxa-sidecar/fleet"
	"github.com/wxa-sidecar/wxa-sidecar/metrics"
	"github.com/wxa-sidecar/wxa-sidecar/proxy"
	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/seal"
	"github.com/wxa-sidecar/wxa-sidecar/store"
	"github.com/wxa-sidecar/wxa-sidecar/token"
	"github.com/wxa-sidecar/wxa-sidecar/upstream"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// gate is the upstream gate as the sidecar sees it: quota.Local, or
// fleet.Gate with a shared tier.
type gate interface {
	quota.Gate
	CooldownLeft(quota.Key) (time.Duration, bool)
	Status() []quota.Status
	Close()
}

// Sidecar is the whole service wired together: the API port, the admin
// port, the optional QRCODE_ADDR port, the token managers, the caches, the
// gate and, with REDIS_URL, the shared tier. main and the end-to-end tests
// start this one wiring; nothing else wires the parts.
type Sidecar struct {
	cfg     config.Config
	version string
	log     *slog.Logger
	metrics *metrics.Metrics
	tokens  []*token.Manager
	cache   *cache.Memory
	gate    gate
	redis   *fleet.Client // nil without REDIS_URL
	flight  *fleet.Flight // the fleet's code leases; nil without REDIS_URL
	store   *store.Store  // nil without STORE_URL
	// scope gives a request its shared-tier budget; nil without Redis.
	scope func(context.Context) context.Context
	proxy *proxy.Proxy

	api, admin, qrcode       *http.Server
	apiLn, adminLn, qrcodeLn net.Listener
	ready                    atomic.Bool
	drain                    drainGuard // of the API and QRCODE_ADDR ports

	// history samples the metrics for the status page's charts.
	history history

	stopTokens context.CancelFunc
	tokensDone sync.WaitGroup

	// publicGate keeps QRCODE_ADDR's share (QRCODE_LIMIT); nil without it.
	publicGate gate
}

// New wires a sidecar from cfg; version is what wxa_sidecar_build_info and
// /status report. Nothing listens until Listen.
func New(cfg config.Config, log *slog.Logger, version string) (*Sidecar, error) {
	s := &Sidecar{cfg: cfg, log: log, version: version, metrics: metrics.New()}
	transport := &http.Transport{
		// HTTPS_PROXY/NO_PROXY: every pod can leave through one egress IP
		// that WeChat whitelists (40164 otherwise).
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   128,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: cfg.UpstreamTimeout,
	}
	limits := quota.Options{
		Default:       quota.Limit{Rate: cfg.UpstreamRPS, Burst: cfg.UpstreamBurst},
		Endpoints:     map[string]quota.Limit{},
		MaxWait:       cfg.UpstreamMaxWait,
		DailyCooldown: cfg.QuotaCooldown,
		Logger:        log,
		Hooks:         s.metrics.QuotaHooks(),
	}
	// Each link endpoint allows 100 calls a second at WeChat (44990
	// beyond): 100/s:10 in UPSTREAM_LIMITS' grammar, unless it says
	// otherwise.
	for _, path := range wechat.LinkEndpoints() {
		limits.Endpoints[path] = quota.Limit{Rate: linkRate, Burst: linkBurst}
	}
	for path, l := range cfg.Limits {
		if !wechat.IsKnownEndpoint(path) {
			return nil, fmt.Errorf("UPSTREAM_LIMITS: %s: not a known endpoint (known: %s)", path, strings.Join(wechat.KnownEndpoints(), ", "))
		}
		limits.Endpoints[path] = quota.Limit{Rate: l.Rate, Burst: l.Burst}
	}
	if cfg.RedisURL != "" {
		s.metrics.ObserveRedis(fleet.Ops, fleet.Results)
		s.metrics.ObserveUnsealed(fleet.UnsealedKinds)
		o := fleetOptions(cfg, log)
		o.Hooks = s.metrics.FleetHooks()
		keys, err := redisKeys(cfg.Apps)
		if err != nil {
			return nil, err
		}
		o.Keys = keys
		rc, err := fleet.New(o)
		if err != nil {
			return nil, err
		}
		s.redis = rc
		// The limits are the fleet's, kept in Redis; 1/FLEET_SIZE of them
		// locally while it is unreachable.
		s.gate = fleet.NewGate(rc, limits, cfg.FleetSize)
		s.scope = fleet.Scope
	} else {
		s.gate = quota.NewLocal(limits)
	}
	up, err := upstream.New(upstream.Options{Base: cfg.APIURL, Transport: transport, Timeout: cfg.UpstreamTimeout,
		Gate: s.gate, Hooks: s.metrics.UpstreamHooks(), Logger: log})
	if err != nil {
		return nil, err
	}
	var tokenStore token.Store // nil: each manager's own memory
	if s.redis != nil {
		tokenStore = fleet.NewTokenStore(s.redis)
	}
	var apps []proxy.App
	var appIDs []string
	for _, a := range cfg.Apps {
		appIDs = append(appIDs, a.ID)
		m, err := token.New(token.Options{
			AppID:         a.ID,
			Secret:        a.Secret,
			BaseURL:       cfg.APIURL,
			Mode:          token.Mode(cfg.TokenMode),
			RefreshMargin: cfg.TokenRefreshMargin,
			// Token fetches are calls to WeChat like any other: counted,
			// and sent nowhere but the configured upstream.
			Client:  &http.Client{Transport: up.Transport(), Timeout: cfg.UpstreamTimeout},
			Logger:  log.With("app", a.ID),
			OnFetch: s.metrics.TokenFetched(a.ID),
			Store:   tokenStore,
		})
		if err != nil {
			return nil, err
		}
		s.tokens = append(s.tokens, m)
		apps = append(apps, proxy.App{Secret: a.Secret, Tokens: m})
	}
	c, err := cache.NewMemory(cache.Options{MaxBytes: cfg.CacheMaxBytes, TTL: cfg.CacheTTL,
		OnEvict: s.metrics.CacheEvictions.Inc, OnReject: s.metrics.CacheRejected.Inc})
	if err != nil {
		return nil, err
	}
	s.cache = c
	s.metrics.ObserveCache(
		func() float64 { return float64(c.Stats().Bytes) },
		func() float64 { return float64(c.Stats().Entries) })
	for _, m := range s.tokens {
		s.metrics.ObserveTokenExpiry(m.AppID(), func() float64 { return m.Status().ExpiresInSeconds })
	}
	co := codes.Options{L1: c, RefusalTTL: cfg.CacheTTL, Logger: log, Hooks: s.metrics.CodesHooks()}
	// Links share the codes' tiers and lease (the proxy hands them over);
	// what is theirs alone is the memory of a spent 85400.
	lo := codes.LinkOptions{PermanentTTL: cfg.CacheTTL, Logger: log, Hooks: s.metrics.LinkHooks()}
	if s.redis != nil {
		co.L2 = fleet.NewL2(s.redis, fleet.L2Options{TTL: cfg.CacheTTL, Logger: log})
		s.flight = fleet.NewFlight(s.redis, fleet.FlightOptions{LeaseExpiry: leaseExpiry(cfg), Logger: log})
		co.Flight = s.flight
		co.Refusals = fleet.NewRefusals(s.redis, fleet.RefusalsOptions{TTL: cfg.CacheTTL})
		co.Scope = fleet.Scope
		lo.Spent = fleet.NewRefusals(s.redis, fleet.RefusalsOptions{TTL: codes.SpentTTL})
	}
	if cfg.StoreURL != "" {
		if err := s.openStore(&co); err != nil {
			c.Close()
			return nil, err
		}
	}
	p, err := proxy.New(proxy.Options{
		Apps:            apps,
		Upstream:        up,
		Quota:           s.gate,
		Codes:           co,
		MaxBodyBytes:    cfg.MaxBodyBytes,
		MaxUploadBytes:  cfg.MaxUploadBytes,
		BodyReadTimeout: cfg.BodyReadTimeout,
		AllowedPaths:    cfg.AllowedPaths,
		Logger:          log,
		AccessLog:       cfg.AccessLog,
		Metrics:         s.metrics,
		CacheTTL:        cfg.CacheTTL,
		Scope:           s.scope,
		// GET /wxa-sidecar/limits: what pregen's dry run estimates from.
		Limits:           &proxy.Limits{Options: limits, Shared: s.redis != nil, FleetSize: cfg.FleetSize, Status: s.gate.Status},
		Public:           s.publicOptions(limits),
		Links:            lo,
		LinkExpiryMargin: cfg.LinkExpiryMargin,
		LinkMaxAge:       cfg.LinkMaxAge,
	})
	if err != nil {
		c.Close()
		return nil, err
	}
	s.proxy = p
	s.metrics.Init(appIDs, append(wechat.KnownEndpoints(), wechat.EndpointOther))
	s.metrics.BuildInfo(version)
	// net/http's own complaints (accept errors, superfluous WriteHeader)
	// are warnings in the same JSON as everything else.
	errorLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	s.api = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: errorLog}
	s.drain.guard(s.api)
	// The admin handlers read no body and answer in milliseconds, so a
	// ReadTimeout (counted from the request's first byte) bounds a request
	// that declares a body it never sends, which net/http would otherwise
	// wait for forever before answering. It is longer than the header
	// timeout so that one still applies to slow headers.
	s.admin = &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: adminReadTimeout,
		IdleTimeout: 2 * time.Minute, ErrorLog: errorLog}
	if cfg.QRCodeAddr != "" {
		s.qrcode = &http.Server{Handler: unreadBodyCloses(p.QRCodeHandler()), ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout: 2 * time.Minute, ErrorLog: errorLog}
		s.drain.guard(s.qrcode)
	}
	return s, nil
}

// redisKeys seals what the fleet keeps in Redis: one key per app, derived
// from its secret (no setting of its own; a rotated secret turns the app's
// old values into misses).
func redisKeys(apps []config.App) (*seal.Keyring, error) {
	secrets := make(map[string]string, len(apps))
	for _, a := range apps {
		secrets[a.ID] = a.Secret
	}
	return seal.NewKeyring(secrets, fleet.SealPurpose)
}

// The default limit of each link endpoint: 100/s:10, so that no second
// carries more than WeChat's 100 (see config.parseLimits).
const (
	linkBurst = 10
	linkRate  = 100 - linkBurst
)

// fleetOptions are the shared tier's options from cfg.
func fleetOptions(cfg config.Config, log *slog.Logger) fleet.Options {
	return fleet.Options{URL: cfg.RedisURL, Password: cfg.RedisPassword, CAFile: cfg.RedisCAFile,
		Prefix: cfg.RedisKeyPrefix, Timeout: cfg.RedisTimeout, Logger: log}
}

// leaseExpiry is how long a replica's fleet-wide lease on one code's fetch
// lasts: longer than the longest its fetch can take (two attempts, each
// waiting up to UPSTREAM_MAX_WAIT for a slot and UPSTREAM_TIMEOUT for
// WeChat, the backoff between them), so a live holder never loses it, and
// no longer, so the others take over soon after a holder dies.
func leaseExpiry(cfg config.Config) time.Duration {
	return 2*(cfg.UpstreamTimeout+cfg.UpstreamMaxWait) + 200*time.Millisecond + 5*time.Second
}

// adminReadTimeout bounds a whole request on the admin port.
const adminReadTimeout = 12 * time.Second

// unreadBodyCloses guards a port whose handlers read no request body
// (QRCODE_ADDR). net/http discards an unread body before it answers and
// again when the handler returns, so a request declaring a body it never
// sends would hold its goroutine and connection forever. Such a request's
// read deadline is moved to now: the discard fails at once, the answer goes
// out and the connection is closed after it. A ReadTimeout would do it too,
// but it also cancels the request's context when it passes during the
// handler, and a /qrcode waiting on WeChat (up to twice UPSTREAM_TIMEOUT
// with its retry) must not be cut by it.
func unreadBodyCloses(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != http.NoBody {
			w.Header().Set("Connection", "close")
			http.NewResponseController(w).SetReadDeadline(time.Now())
		}
		next.ServeHTTP(w, r)
	})
}

// Listen binds every port before anything is served, so a port in use
// fails the start instead of half of it.
func (s *Sidecar) Listen() error {
	var err error
	if s.apiLn, err = net.Listen("tcp", s.cfg.ListenAddr); err != nil {
		return err
	}
	if s.adminLn, err = net.Listen("tcp", s.cfg.AdminAddr); err != nil {
		return err
	}
	if s.qrcode != nil {
		if s.qrcodeLn, err = net.Listen("tcp", s.cfg.QRCodeAddr); err != nil {
			return err
		}
	}
	return nil
}

// Start starts the servers and the token managers; the channel reports a
// server that stopped by itself.
func (s *Sidecar) Start() <-chan error {
	ctx, cancel := context.WithCancel(context.Background())
	s.stopTokens = cancel
	for _, m := range s.tokens {
		s.tokensDone.Go(func() { m.Run(ctx) })
	}
	s.tokensDone.Go(func() { s.history.run(ctx, s.metrics, historyStep, time.Now) })
	errs := make(chan error, 3)
	serve := func(srv *http.Server, ln net.Listener) {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errs <- err
		}
	}
	go serve(s.api, s.apiLn)
	go serve(s.admin, s.adminLn)
	if s.qrcode != nil {
		go serve(s.qrcode, s.qrcodeLn)
	}
	s.ready.Store(true)
	return errs
}

// Serve listens, serves until ctx is done, then stops as Stop does; it
// returns the error of a port that could not be bound or that failed.
// Close is still the caller's.
func (s *Sidecar) Serve(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	errs := s.Start()
	select {
	case <-ctx.Done():
	case err := <-errs:
		return err
	}
	s.Stop()
	return nil
}

// APIAddr, AdminAddr and QRCodeAddr are the bound addresses (after
// Listen); QRCodeAddr is nil without QRCODE_ADDR.
func (s *Sidecar) APIAddr() net.Addr   { return s.apiLn.Addr() }
func (s *Sidecar) AdminAddr() net.Addr { return s.adminLn.Addr() }
func (s *Sidecar) QRCodeAddr() net.Addr {
	if s.qrcodeLn == nil {
		return nil
	}
	return s.qrcodeLn.Addr()
}
