// Package proxy is the sidecar's API port: it forwards a backend's WeChat
// calls to the one configured upstream with the managed access_token, answers
// the token endpoints locally, and serves code images from the cache.
//
// It must never forward to a host the caller names, never let a caller rotate
// the shared token, and never log a secret or a whole token.
package proxy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/metrics"
	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/upstream"
)

// Tokens is one app's managed access_token, as token.Manager provides it:
// what upstream needs to inject and replace it, and Owns, which tells a
// token this sidecar handed out from any other. Safe for concurrent use.
type Tokens interface {
	upstream.Tokens
	Owns(tok string) bool
}

// App is one mini program the sidecar manages.
type App struct {
	// Secret is compared (in constant time) with the secret a caller sends
	// to the local token endpoints.
	Secret string
	// Tokens manages the app's access_token; its AppID names the app.
	Tokens Tokens
}

// Quota is what the proxy shows of the upstream gate: when a cool-down
// ends, for GET /qrcode's Retry-After. quota.Local is one.
type Quota interface {
	CooldownLeft(k quota.Key) (time.Duration, bool)
}

// Options configures a Proxy. Zero values get the documented defaults.
type Options struct {
	// Apps are the managed apps; at least one.
	Apps []App
	// Upstream sends every call to WeChat; required.
	Upstream *upstream.Client
	// Codes configures the image path; its L1 defaults to a cache that
	// keeps nothing (every code is fetched, and still coalesced). The proxy
	// adds the hook that logs a failed fetch.
	Codes codes.Options
	// Quota tells GET /qrcode when a cool-down ends; default: never known,
	// a minute is said.
	Quota Quota
	// MaxBodyBytes bounds buffered request bodies; default 1 MiB.
	MaxBodyBytes int64
	// MaxUploadBytes bounds streamed multipart bodies; default 16 MiB.
	MaxUploadBytes int64
	// BodyReadTimeout bounds how long a request body, buffered or
	// streamed, may take to arrive once the handler starts reading it;
	// default 30s. A late body gets 408.
	BodyReadTimeout time.Duration
	// AllowedPaths, when not empty, are the only path prefixes served.
	AllowedPaths []string
	// Logger receives warnings about failed upstream calls, and the access
	// log; default discard.
	Logger *slog.Logger
	// AccessLog logs one line per request at info level through Logger
	// (so a level above info silences it): never a query, body, token or
	// secret.
	AccessLog bool
	// Metrics receives every observation; default a private, unexported set.
	Metrics *metrics.Metrics
	// CacheTTL is how long a client may keep an image from GET /qrcode
	// (Cache-Control max-age); default 24h.
	CacheTTL time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Scope, when set, gives a passthrough call's context what the shared
	// tier keeps per request (its Redis budget: fleet.Scope); code misses
	// get it through Codes.
	Scope func(context.Context) context.Context
	// Limits is what GET /wxa-sidecar/limits shows; nil answers it 404
	// (it is never forwarded).
	Limits *Limits
	// Public limits what GET /qrcode on QRCODE_ADDR (QRCodeHandler) may
	// spend; the zero value: as the API port.
	Public PublicOptions
	// Links configures the link path (generatescheme, generate_urllink,
	// genwxashortlink, generatenfcscheme); its L1, L2, Flight and Scope
	// default to Codes' own: one cache, one lease. The proxy adds the hook
	// that logs a failed fetch.
	Links codes.LinkOptions
	// LinkExpiryMargin is how long before its expiry a link stops being
	// handed out (LINK_EXPIRY_MARGIN); default 10m.
	LinkExpiryMargin time.Duration
	// LinkMaxAge bounds how long after it was made a link of relative life
	// is handed out (LINK_MAX_AGE); default 24h.
	LinkMaxAge time.Duration
}

// Proxy is the http.Handler of the API port.
type Proxy struct {
	upstream     *upstream.Client
	apps         map[string]*app
	only         *app // the app when there is exactly one
	maxBody      int64
	maxUpload    int64
	bodyTimeout  time.Duration
	allowed      []string
	log          *slog.Logger
	accessLog    bool
	metrics      *metrics.Metrics
	now          func() time.Time
	reverseProxy *httputil.ReverseProxy
	codes        *codes.Codes
	links        *codes.Links
	linkMargin   time.Duration
	linkMaxAge   time.Duration
	quota        Quota
	scope        func(context.Context) context.Context
	aliases      *aliasTable
	routeMetrics map[string]routeMetrics
	cacheControl []string // one shared header value
	limits       *Limits

	public *publicPort // nil: QRCODE_ADDR spends as the API port
}

type app struct {
	id         string
	secretHash [sha256.Size]byte
	tokens     Tokens
	up         *upstream.Client // the same for every app: a call reaches it through its app
}

var _ http.Handler = (*Proxy)(nil)

// New checks opts and returns a Proxy.
func New(opts Options) (*Proxy, error) {
	if opts.Upstream == nil {
		return nil, errors.New("proxy: no upstream client")
	}
	if len(opts.Apps) == 0 {
		return nil, errors.New("proxy: no apps")
	}
	p := &Proxy{
		upstream:    opts.Upstream,
		apps:        make(map[string]*app, len(opts.Apps)),
		maxBody:     opts.MaxBodyBytes,
		maxUpload:   opts.MaxUploadBytes,
		bodyTimeout: opts.BodyReadTimeout,
		allowed:     opts.AllowedPaths,
		log:         opts.Logger,
		accessLog:   opts.AccessLog,
		metrics:     opts.Metrics,
		now:         opts.Now,
		quota:       opts.Quota,
		scope:       opts.Scope,
		limits:      opts.Limits,
	}
	for _, a := range opts.Apps {
		if a.Tokens == nil {
			return nil, errors.New("proxy: app without a token manager")
		}
		id := a.Tokens.AppID()
		if _, dup := p.apps[id]; dup {
			return nil, fmt.Errorf("proxy: app %s configured twice", id)
		}
		p.apps[id] = &app{id: id, secretHash: sha256.Sum256([]byte(a.Secret)), tokens: a.Tokens, up: opts.Upstream}
	}
	if len(p.apps) == 1 {
		for _, a := range p.apps {
			p.only = a
		}
	}
	if p.maxBody <= 0 {
		p.maxBody = 1 << 20
	}
	if p.maxUpload <= 0 {
		p.maxUpload = 16 << 20
	}
	if p.bodyTimeout <= 0 {
		p.bodyTimeout = 30 * time.Second
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.metrics == nil {
		p.metrics = metrics.New()
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.quota == nil {
		p.quota = noQuota{}
	}
	p.public = newPublicPort(opts.Public, p.metrics.QRCodeRefusals, p.now)
	co := opts.Codes
	if co.L1 == nil {
		co.L1 = noCache{}
	}
	if co.Logger == nil {
		co.Logger = p.log
	}
	co.Hooks.FetchFailed = p.codeFetchFailed
	p.codes = codes.New(co)
	lo := opts.Links
	if lo.L1 == nil {
		lo.L1 = co.L1
	}
	if lo.Store == nil {
		lo.Store = co.Store
	}
	if lo.L2 == nil {
		lo.L2 = co.L2
	}
	if lo.Flight == nil {
		lo.Flight = co.Flight
	}
	if lo.Scope == nil {
		lo.Scope = co.Scope
	}
	if lo.Now == nil {
		lo.Now = p.now
	}
	if lo.Logger == nil {
		lo.Logger = p.log
	}
	lo.Hooks.FetchFailed = p.linkFetchFailed
	p.links = codes.NewLinks(lo)
	p.linkMargin, p.linkMaxAge = opts.LinkExpiryMargin, opts.LinkMaxAge
	if p.linkMargin <= 0 {
		p.linkMargin = defaultLinkMargin
	}
	if p.linkMaxAge <= 0 {
		p.linkMaxAge = defaultLinkMaxAge
	}
	// 64 bytes an alias: 64k of them is 4 MiB plus the map's overhead.
	p.aliases = newAliasTable(8 << 20)
	ttl := opts.CacheTTL
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	p.cacheControl = []string{maxAge(int64(ttl / time.Second))}
	p.routeMetrics = map[string]routeMetrics{}
	for _, route := range []string{routeWxacode, routeQRCode, routeToken, routePassthrough, routeLink} {
		p.routeMetrics[route] = routeMetrics{ok: p.metrics.Requests.WithLabelValues(route, "200"),
			duration: p.metrics.RequestDuration.WithLabelValues(route)}
	}
	p.reverseProxy = &httputil.ReverseProxy{
		Rewrite:      p.rewrite,
		Transport:    upstreamTransport{p},
		ErrorHandler: p.proxyError,
		ErrorLog:     slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
	}
	return p, nil
}

// noCache keeps nothing: every code is fetched (and still coalesced).
type noCache struct{}

func (noCache) Get(cache.Key) (*cache.Entry, bool)  { return nil, false }
func (noCache) Peek(cache.Key) (*cache.Entry, bool) { return nil, false }
func (noCache) Set(cache.Key, *cache.Entry) bool    { return false }

// noQuota knows of no cool-down.
type noQuota struct{}

func (noQuota) CooldownLeft(quota.Key) (time.Duration, bool) { return 0, false }

// ServeHTTP routes one call of the backend.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := p.now()
	if p.logsAccess(r) {
		rec := newAccessRecorder(w)
		route := p.serve(rec, r)
		// Logged before it is counted: once a request shows in the
		// metrics, its line is written.
		p.logAccess(listenerAPI, r, rec, start)
		p.observeRequest(route, rec.status, start)
		return
	}
	// Without the access log a cache hit allocates nothing more than this
	// recorder.
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	route := p.serve(rec, r)
	p.observeRequest(route, rec.status, start)
}
