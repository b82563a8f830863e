// Command wxa-sidecar runs beside a backend and makes the WeChat
// mini-program API safe and cheap to call: a managed access_token, cached
// code images, rate limits and metrics. See README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/config"
	"github.com/wxa-sidecar/wxa-sidecar/fleet"
	"github.com/wxa-sidecar/wxa-sidecar/metrics"
	"github.com/wxa-sidecar/wxa-sidecar/pregen"
	"github.com/wxa-sidecar/wxa-sidecar/proxy"
	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/store"
	"github.com/wxa-sidecar/wxa-sidecar/token"
	"github.com/wxa-sidecar/wxa-sidecar/upstream"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// version is stamped at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], config.Environ(), os.Stdout, os.Stderr))
}

// run is the whole program; it returns the exit status. The sidecar stops
// when ctx is done (SIGTERM).
func run(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "pregen" {
		// A client of a running sidecar, not a sidecar: no config, no token.
		return pregen.Main(ctx, args[1:], stdout, stderr)
	}
	flags := flag.NewFlagSet("wxa-sidecar", flag.ContinueOnError)
	flags.SetOutput(stderr)
	demo := flags.Bool("demo", false, "run against a built-in fake WeChat on loopback, with demo credentials")
	showVersion := flags.Bool("version", false, "print the version and exit")
	var showHelp bool
	flags.BoolVar(&showHelp, "help", false, "print this help and exit")
	flags.BoolVar(&showHelp, "h", false, "print this help and exit")
	flags.Usage = func() {
		fmt.Fprintln(stderr, "usage: wxa-sidecar [--demo] [--version] [--help]; configured by the environment (--help lists it)")
	}
	if err := flags.Parse(args); err != nil {
		return 2
	}
	if showHelp {
		writeHelp(stdout, flags)
		return 0
	}
	if *showVersion {
		fmt.Fprintln(stdout, "wxa-sidecar", version)
		return 0
	}
	if *demo {
		fake := wechattest.NewServer(wechattest.Options{})
		defer fake.Close()
		for _, k := range []string{"WECHAT_APP_SECRET_FILE", "WECHAT_APPS_FILE"} {
			delete(environ, k)
		}
		environ["WECHAT_APP_ID"] = wechattest.DemoAppID
		environ["WECHAT_APP_SECRET"] = wechattest.DemoSecret
		environ["WECHAT_API_URL"] = fake.URL
	}
	cfg, err := config.Load(environ)
	if err != nil {
		for line := range strings.SplitSeq(err.Error(), "\n") {
			fmt.Fprintln(stderr, "wxa-sidecar: config:", line)
		}
		return 2
	}
	log := newLogger(stderr, cfg.LogLevel())
	if environ["GOMEMLIMIT"] == "" {
		// Without a limit the heap may grow to twice the cache before a GC.
		debug.SetMemoryLimit(cache.MemoryLimit(cfg.CacheMaxBytes))
		// Under a limit of our own, with its margin, GC can run less often.
		if environ["GOGC"] == "" {
			debug.SetGCPercent(cache.GCPercent)
		}
	}

	s, err := newSidecar(cfg, log)
	if err != nil {
		log.Error("cannot start", "error", err)
		return 1
	}
	defer s.close()
	if err := s.listen(); err != nil {
		log.Error("cannot listen", "error", err)
		return 1
	}
	log.Info("wxa-sidecar started", "version", version, "api", s.apiLn.Addr().String(),
		"admin", s.adminLn.Addr().String(), "config", cfg, "demo", *demo)
	serveErr := s.serve()
	if *demo {
		fmt.Fprintf(stdout, "curl -sS -o qrcode.jpg -X POST 'http://%s/wxa/getwxacodeunlimit' -d '{\"scene\":\"hello\"}'\n",
			loopbackAddr(s.apiLn.Addr()))
	}

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		log.Error("server failed", "error", err)
		return 1
	}
	log.Info("shutting down", "delay", cfg.ShutdownDelay.String(), "timeout", cfg.ShutdownTimeout.String())
	s.ready.Store(false)
	// From here every response says Connection: close and idle connections
	// are closed (net/http does both), so a caller's next request opens a
	// new connection, served during SHUTDOWN_DELAY, instead of racing the
	// close of an idle one at Shutdown.
	s.api.SetKeepAlivesEnabled(false)
	if s.qrcode != nil {
		s.qrcode.SetKeepAlivesEnabled(false)
	}
	time.Sleep(cfg.ShutdownDelay)
	if err := s.shutdown(cfg.ShutdownTimeout); err != nil {
		log.Warn("in-flight requests did not finish in time", "error", err)
	}
	log.Info("stopped")
	return 0
}

// gate is the upstream gate as main sees it: quota.Local, or fleet.Gate
// with a shared tier.
type gate interface {
	quota.Gate
	CooldownLeft(quota.Key) (time.Duration, bool)
	Status() []quota.Status
	Close()
}

// sidecar holds what main wires together.
type sidecar struct {
	cfg     config.Config
	log     *slog.Logger
	metrics *metrics.Metrics
	tokens  []*token.Manager
	cache   *cache.Memory
	gate    gate
	redis   *fleet.Client // nil without REDIS_URL
	store   *store.Store  // nil without STORE_URL
	// scope gives a request its shared-tier budget; nil without Redis.
	scope func(context.Context) context.Context
	proxy *proxy.Proxy

	api, admin, qrcode       *http.Server
	apiLn, adminLn, qrcodeLn net.Listener
	ready                    atomic.Bool
	drain                    drainGuard // of the API and QRCODE_ADDR ports

	stopTokens context.CancelFunc
	tokensDone sync.WaitGroup
}

func newSidecar(cfg config.Config, log *slog.Logger) (*sidecar, error) {
	s := &sidecar{cfg: cfg, log: log, metrics: metrics.New()}
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
	for path, l := range cfg.Limits {
		if !wechat.IsKnownEndpoint(path) {
			return nil, fmt.Errorf("rate limit for %s: not a known WeChat endpoint (known: see README)", path)
		}
		limits.Endpoints[path] = quota.Limit{Rate: l.Rate, Burst: l.Burst}
	}
	if cfg.RedisURL != "" {
		s.metrics.ObserveRedis(fleet.Ops, fleet.Results)
		rc, err := fleet.New(fleet.Options{URL: cfg.RedisURL, Password: cfg.RedisPassword, CAFile: cfg.RedisCAFile,
			Prefix: cfg.RedisKeyPrefix, Timeout: cfg.RedisTimeout, Logger: log, Hooks: s.metrics.FleetHooks()})
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
	if s.redis != nil {
		co.L2 = fleet.NewL2(s.redis, fleet.L2Options{TTL: cfg.CacheTTL, Logger: log})
		co.Flight = fleet.NewFlight(s.redis, fleet.FlightOptions{LeaseExpiry: leaseExpiry(cfg), Logger: log})
		co.Refusals = fleet.NewRefusals(s.redis, fleet.RefusalsOptions{TTL: cfg.CacheTTL})
		co.Scope = fleet.Scope
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

// newLogger returns the JSON logger every line on stderr goes through and
// makes it the default, so what the standard library prints with package
// log (http.Transport's "Unsolicited response received on idle HTTP
// channel", for one) is JSON too, at WARN.
func newLogger(stderr io.Writer, level slog.Leveler) *slog.Logger {
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level, ReplaceAttr: durationAsString}))
	// A JSON handler writes to stderr itself, never back through package
	// log, so routing package log into it cannot loop.
	slog.SetDefault(log)
	slog.SetLogLoggerLevel(slog.LevelWarn)
	return log
}

// durationAsString writes a duration as Go does ("25s"), wherever it is
// logged: the JSON handler's default, a number of nanoseconds
// (25000000000), is unreadable.
func durationAsString(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// listen binds every port before anything is served, so a port in use
// fails the start instead of half of it.
func (s *sidecar) listen() error {
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

// serve starts the servers and the token managers; the channel reports a
// server that stopped by itself.
func (s *sidecar) serve() <-chan error {
	ctx, cancel := context.WithCancel(context.Background())
	s.stopTokens = cancel
	for _, m := range s.tokens {
		s.tokensDone.Go(func() { m.Run(ctx) })
	}
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

// shutdown drains the API and QRCODE_ADDR ports within timeout, then stops
// the admin port. Shortly before the timeout, requests still waiting for
// their answer get 503 and Retry-After: 1 instead of a cut connection.
func (s *sidecar) shutdown(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	answerWaiting := time.AfterFunc(drainDelay(timeout), func() {
		if n := s.drain.drain(); n > 0 {
			s.log.Warn("shutdown timeout near: requests still waiting answered 503", "requests", n)
		}
	})
	defer answerWaiting.Stop()
	servers := []*http.Server{s.api, s.qrcode}
	errs := make([]error, len(servers))
	var wg sync.WaitGroup
	for i, srv := range servers {
		if srv != nil {
			// Together: the QRCODE_ADDR listener must not keep accepting
			// while the API port drains.
			wg.Go(func() { errs[i] = srv.Shutdown(ctx) })
		}
	}
	wg.Wait()
	// The store's queue has been written all along; what is left of it
	// gets what is left of the same bound.
	s.closeStore(ctx)
	s.admin.Shutdown(ctx)
	return errors.Join(errs...)
}

// drainMargin is how long before SHUTDOWN_TIMEOUT the requests still
// waiting are answered 503: long enough for the handlers to notice their
// cancelled context and the answers to reach the callers before the
// connections are closed.
const drainMargin = time.Second

// drainDelay is when, after the drain began, waiting requests are answered:
// drainMargin before timeout, or halfway through a shorter one.
func drainDelay(timeout time.Duration) time.Duration {
	return max(timeout-drainMargin, timeout/2)
}

func (s *sidecar) close() {
	if s.stopTokens != nil {
		s.stopTokens()
		s.tokensDone.Wait()
	}
	for _, srv := range []*http.Server{s.api, s.admin, s.qrcode} {
		if srv != nil {
			srv.Close()
		}
	}
	s.gate.Close()
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	s.closeStore(expired) // a no-op after shutdown's
	s.cache.Close()
	if s.redis != nil {
		s.redis.Close()
	}
}

func (s *sidecar) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	// Readiness gates the whole pod, so it never depends on WeChat.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", s.metrics.Handler())
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		// A browser gets a page, curl | jq (Accept: */*) the JSON.
		w.Header().Set("Vary", "Accept")
		if prefersHTML(r.Header.Values("Accept")) {
			writeStatusHTML(w, s.status())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(s.status())
	})
	return mux
}

// statusReport is /status: what a person needs at 3 a.m., never a token.
type statusReport struct {
	Version string         `json:"version"`
	Ready   bool           `json:"ready"`
	Apps    []token.Status `json:"apps"`
	Limits  []quota.Status `json:"limits"`
	Cache   cache.Stats    `json:"cache"`
	Redis   *fleet.Status  `json:"redis,omitempty"`
	Store   *store.Status  `json:"store,omitempty"`
}

func (s *sidecar) status() statusReport {
	apps := make([]token.Status, 0, len(s.tokens))
	for _, m := range s.tokens {
		apps = append(apps, m.Status())
	}
	var redis *fleet.Status
	if s.redis != nil {
		st := s.redis.Status()
		redis = &st
	}
	return statusReport{version, s.ready.Load(), apps, s.gate.Status(), s.cache.Stats(), redis, s.storeStatus()}
}

// loopbackAddr names a bound address a local curl can reach.
func loopbackAddr(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || tcp.IP.IsUnspecified() {
		_, port, _ := net.SplitHostPort(a.String())
		return net.JoinHostPort("127.0.0.1", port)
	}
	return a.String()
}
