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
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/metrics"
	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/upstream"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
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

// Routes, the bounded values of the metrics' route label.
const (
	routeWxacode     = "wxacode"
	routeQRCode      = "qrcode"
	routeToken       = "token"
	routePassthrough = "passthrough"
)

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

// routeMetrics are one route's collectors, looked up once: label lookups
// are a measurable part of a cache hit.
type routeMetrics struct {
	ok       prometheus.Counter
	duration prometheus.Observer
}

func (p *Proxy) observeRequest(route string, status int, start time.Time) {
	m := p.routeMetrics[route]
	if status == http.StatusOK {
		m.ok.Inc()
	} else {
		p.metrics.Requests.WithLabelValues(route, statusLabel(status)).Inc()
	}
	m.duration.Observe(p.now().Sub(start).Seconds())
}

// serve answers r and returns its route for the metrics.
func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) string {
	if refuseRequest(w, r) {
		return routePassthrough
	}
	a, apiPath, err := p.appFromPrefix(r.URL.Path)
	if err != nil {
		writeError(w, err)
		return routePassthrough
	}
	if rec, ok := w.(*accessRecorder); ok {
		rec.note(p, r, a, apiPath)
	}
	if !p.pathAllowed(apiPath) {
		// Every path of this port, /qrcode included: ALLOWED_PATHS is
		// what the port serves.
		writeError(w, errPathNotAllowed)
		return routePassthrough
	}
	if apiPath == "/qrcode" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		p.serveQRCode(w, r, a, false)
		return routeQRCode
	}
	switch {
	case apiPath == PathLimits:
		p.serveLimits(w, r, a)
		return routePassthrough
	case apiPath == wechat.PathToken || apiPath == wechat.PathStableToken:
		p.serveToken(w, r, a, apiPath)
		return routeToken
	case strings.HasPrefix(apiPath, "/sns/"):
		// appid/secret authenticate these; no token, no app, nothing touched.
		p.forward(w, r, &call{path: apiPath, endpoint: wechat.Endpoint(apiPath)})
		return routePassthrough
	}
	if a == nil {
		if a, err = p.appFromToken(r); err != nil {
			writeError(w, err)
			return routePassthrough
		}
	}
	c := &call{app: a, path: apiPath, endpoint: wechat.Endpoint(apiPath)}
	if wechat.IsCodeEndpoint(apiPath) && r.Method == http.MethodPost {
		p.serveCode(w, r, c)
		return routeWxacode
	}
	if wechat.IsLinkEndpoint(apiPath) && r.Method == http.MethodPost {
		p.serveLink(w, r, c)
		return routeLink
	}
	p.forward(w, r, c)
	return routePassthrough
}

// appFromPrefix splits an /apps/{appid}/ prefix off urlPath and returns the
// app it names (nil without a prefix) and the cleaned WeChat path.
func (p *Proxy) appFromPrefix(urlPath string) (*app, string, error) {
	// Cleaning first means "..", "." and "//" can neither escape
	// ALLOWED_PATHS nor reach WeChat in a form we did not check.
	cleaned := cleanPath(urlPath)
	rest, ok := strings.CutPrefix(cleaned, "/apps/")
	if !ok {
		return nil, cleaned, nil
	}
	id, apiPath, _ := strings.Cut(rest, "/")
	a := p.apps[id]
	if a == nil {
		return nil, "", &wechat.Error{Status: http.StatusOK, Code: wechat.InvalidAppID,
			Msg: "invalid appid: wxa-sidecar does not manage app " + quoteShort(id)}
	}
	return a, "/" + apiPath, nil
}

// cleanPath is path.Clean that keeps a trailing slash and roots the path.
// Nearly every path arrives clean, and saying so is cheaper than Clean.
func cleanPath(urlPath string) string {
	if !strings.HasPrefix(urlPath, "/") {
		urlPath = "/" + urlPath
	}
	if !strings.Contains(urlPath, "//") && !strings.Contains(urlPath, "/.") {
		// No empty, "." or ".." element: Clean would change nothing but a
		// trailing slash, which is kept anyway.
		return urlPath
	}
	cleaned := path.Clean(urlPath)
	if strings.HasSuffix(urlPath, "/") && cleaned != "/" {
		cleaned += "/"
	}
	return cleaned
}

// appFromToken picks the app when the path does not name one: the app that
// issued the caller's token, else the only app.
func (p *Proxy) appFromToken(r *http.Request) (*app, error) {
	if p.only != nil {
		return p.only, nil
	}
	// The caller's tokens, however spelled, as the rewrite will strip
	// them: only a token the sidecar issued picks an app.
	for callerToken := range upstream.CallerTokens(r.URL.RawQuery) {
		for _, a := range p.apps {
			if a.tokens.Owns(callerToken) {
				return a, nil
			}
		}
	}
	return nil, &wechat.Error{Status: http.StatusOK, Code: wechat.InvalidAppID,
		Msg: "invalid appid: wxa-sidecar manages several apps; call /apps/{appid}/... or pass a token it issued"}
}

func (p *Proxy) pathAllowed(apiPath string) bool {
	if len(p.allowed) == 0 {
		return true
	}
	for _, prefix := range p.allowed {
		if strings.HasPrefix(apiPath, prefix) {
			return true
		}
	}
	return false
}

// quoteShort quotes a caller-supplied value for an error message, cut short
// so a caller cannot make the sidecar echo a large body.
func quoteShort(s string) string {
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return fmt.Sprintf("%q", s)
}

// statusRecorder remembers the status for the metrics.
type statusRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wroteHeader {
		s.status, s.wroteHeader = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wroteHeader = true
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and deadlines.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func statusLabel(code int) string {
	if code < 100 || code > 599 {
		return "other"
	}
	return strconv.Itoa(code)
}
