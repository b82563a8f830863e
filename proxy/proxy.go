// Package proxy is the sidecar's API port: it forwards a backend's WeChat
// calls to the one configured upstream with the managed access_token, answers
// the token endpoints locally, and serves code images from the cache.
//
// It must never forward to a host the caller names, never let a caller rotate
// the shared token, and never log a secret or a whole token.
package proxy

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/metrics"
	"github.com/wxa-sidecar/wxa-sidecar/token"
)

// App is one mini program the sidecar manages.
type App struct {
	// Secret is compared (in constant time) with the secret a caller sends
	// to the local token endpoints.
	Secret string
	// Tokens manages the app's access_token; its AppID names the app.
	Tokens *token.Manager
}

// Options configures a Proxy. Zero values get the documented defaults.
type Options struct {
	// Upstream is WeChat's base URL, e.g. https://api.weixin.qq.com. Every
	// request goes there and nowhere else.
	Upstream string
	// Apps are the managed apps; at least one.
	Apps []App
	// Transport sends upstream requests; default http.DefaultTransport.
	Transport http.RoundTripper
	// UpstreamTimeout bounds each upstream call; default 10s.
	UpstreamTimeout time.Duration
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
	// Logger receives warnings about failed upstream calls; default discard.
	Logger *slog.Logger
	// Metrics receives every observation; default a private, unexported set.
	Metrics *metrics.Metrics
	// Cache holds the code images; default a cache that keeps nothing.
	Cache cache.Cache
	// CacheTTL is how long a client may keep an image from GET /qrcode
	// (Cache-Control max-age); default 24h.
	CacheTTL time.Duration
	// Limits are the upstream rate limits and quota cool-downs; the zero
	// value limits nothing.
	Limits Limits
	// RetryBackoff is the pause before the one retry of a failed code
	// fetch; default 200ms (a random part of it is jitter).
	RetryBackoff time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Proxy is the http.Handler of the API port.
type Proxy struct {
	upstream     *url.URL
	apps         map[string]*app
	only         *app // the app when there is exactly one
	transport    http.RoundTripper
	timeout      time.Duration
	maxBody      int64
	maxUpload    int64
	bodyTimeout  time.Duration
	allowed      []string
	log          *slog.Logger
	metrics      *metrics.Metrics
	now          func() time.Time
	reverseProxy *httputil.ReverseProxy
	cache        cache.Cache
	flights      singleflight.Group
	aliases      *aliasTable
	routeMetrics map[string]routeMetrics
	cacheHits    prometheus.Counter
	cacheControl []string // one shared header value
	limits       *limits
	retryBackoff time.Duration
}

type app struct {
	id         string
	secretHash [sha256.Size]byte
	tokens     *token.Manager
}

var _ http.Handler = (*Proxy)(nil)

// New checks opts and returns a Proxy.
func New(opts Options) (*Proxy, error) {
	u, err := url.Parse(opts.Upstream)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("proxy: upstream %q is not an absolute http(s) URL", opts.Upstream)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	if len(opts.Apps) == 0 {
		return nil, errors.New("proxy: no apps")
	}
	p := &Proxy{
		upstream:    u,
		apps:        make(map[string]*app, len(opts.Apps)),
		transport:   opts.Transport,
		timeout:     opts.UpstreamTimeout,
		maxBody:     opts.MaxBodyBytes,
		maxUpload:   opts.MaxUploadBytes,
		bodyTimeout: opts.BodyReadTimeout,
		allowed:     opts.AllowedPaths,
		log:         opts.Logger,
		metrics:     opts.Metrics,
		now:         opts.Now,
		cache:       opts.Cache,
	}
	for _, a := range opts.Apps {
		if a.Tokens == nil {
			return nil, errors.New("proxy: app without a token manager")
		}
		id := a.Tokens.AppID()
		if _, dup := p.apps[id]; dup {
			return nil, fmt.Errorf("proxy: app %s configured twice", id)
		}
		p.apps[id] = &app{id: id, secretHash: sha256.Sum256([]byte(a.Secret)), tokens: a.Tokens}
	}
	if len(p.apps) == 1 {
		for _, a := range p.apps {
			p.only = a
		}
	}
	if p.transport == nil {
		p.transport = http.DefaultTransport
	}
	if p.timeout <= 0 {
		p.timeout = 10 * time.Second
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
	if p.cache == nil {
		p.cache = noCache{}
	}
	// 64 bytes an alias: 64k of them is 4 MiB plus the map's overhead.
	p.aliases = newAliasTable(8 << 20)
	ttl := opts.CacheTTL
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	p.cacheControl = []string{maxAge(int64(ttl / time.Second))}
	p.retryBackoff = opts.RetryBackoff
	if p.retryBackoff <= 0 {
		p.retryBackoff = 200 * time.Millisecond
	}
	for path := range opts.Limits.Endpoints {
		if !knownEndpoints[path] {
			return nil, fmt.Errorf("proxy: rate limit for %s: not a known WeChat endpoint (known: see README)", path)
		}
	}
	p.limits = newLimits(opts.Limits, p.now, p.log, p.metrics)
	p.limits.rememberRefusalsFor(ttl)
	p.routeMetrics = map[string]routeMetrics{}
	for _, route := range []string{routeWxacode, routeQRCode, routeToken, routePassthrough} {
		p.routeMetrics[route] = routeMetrics{ok: p.metrics.Requests.WithLabelValues(route, "200"),
			duration: p.metrics.RequestDuration.WithLabelValues(route)}
	}
	p.cacheHits = p.metrics.CacheRequests.WithLabelValues("hit")
	p.reverseProxy = &httputil.ReverseProxy{
		Rewrite:      p.rewrite,
		Transport:    upstreamTransport{p},
		ErrorHandler: p.proxyError,
		ErrorLog:     slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
	}
	return p, nil
}

// Close stops the cool-down timers.
func (p *Proxy) Close() { p.limits.stop() }

// Status is the proxy's part of the admin /status page.
type Status struct {
	Limits []LimitStatus `json:"limits"`
}

// Status reports the limiter buckets and quota cool-downs.
func (p *Proxy) Status() Status { return Status{Limits: p.limits.status()} }

// noCache keeps nothing: every code is fetched (and still coalesced).
type noCache struct{}

func (noCache) Get(cache.Key) (*cache.Entry, bool) { return nil, false }
func (noCache) Set(cache.Key, *cache.Entry) bool   { return false }

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
	if apiPath == "/qrcode" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		p.serveQRCode(w, r, a)
		return routeQRCode
	}
	if !p.pathAllowed(apiPath) {
		writeError(w, errPathNotAllowed)
		return routePassthrough
	}
	switch {
	case apiPath == pathToken || apiPath == pathStableToken:
		p.serveToken(w, r, a, apiPath)
		return routeToken
	case strings.HasPrefix(apiPath, "/sns/"):
		// appid/secret authenticate these; no token, no app, nothing touched.
		p.forward(w, r, &call{path: apiPath, endpoint: endpointOf(apiPath)})
		return routePassthrough
	}
	if a == nil {
		if a, err = p.appFromToken(r); err != nil {
			writeError(w, err)
			return routePassthrough
		}
	}
	c := &call{app: a, path: apiPath, endpoint: endpointOf(apiPath)}
	if isCodeEndpoint(apiPath) && r.Method == http.MethodPost {
		p.serveCode(w, r, c)
		return routeWxacode
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
		return nil, "", &wechatError{Status: http.StatusOK, Errcode: errcodeInvalidAppID,
			Errmsg: "invalid appid: wxa-sidecar does not manage app " + quoteShort(id)}
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
	for callerToken := range callerTokens(r.URL.RawQuery) {
		for _, a := range p.apps {
			if a.tokens.Owns(callerToken) {
				return a, nil
			}
		}
	}
	return nil, &wechatError{Status: http.StatusOK, Errcode: errcodeInvalidAppID,
		Errmsg: "invalid appid: wxa-sidecar manages several apps; call /apps/{appid}/... or pass a token it issued"}
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
