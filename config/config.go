// Package config reads the sidecar's one Config from the environment,
// parsed once and validated, with a clear line for every problem. Only main
// imports it; every other package takes its own small options struct.
//
// Its errors never contain a secret.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
)

// App is one mini program: its appid and secret.
type App struct {
	ID     string
	Secret string
}

// RateLimit is a token bucket: Rate slots a second, Burst at once.
type RateLimit struct {
	Rate  float64
	Burst int
}

// Config is everything the environment says. The names are a contract:
// manifests and tools depend on them.
//
// Each variable's help tag is its one description: --help prints it, and a
// test fails when a variable lacks one.
type Config struct {
	AppID         string `env:"WECHAT_APP_ID" help:"the mini program's appid (single-app mode)"`
	AppSecret     string `env:"WECHAT_APP_SECRET" help:"its secret; or WECHAT_APP_SECRET_FILE (one of the two is required)"`
	AppSecretFile string `env:"WECHAT_APP_SECRET_FILE" help:"a file holding the secret (a mounted Kubernetes Secret; surrounding whitespace trimmed)"`
	AppsFile      string `env:"WECHAT_APPS_FILE" help:"multi-app mode: a file of appid:secret lines (blank lines and # comments ignored)"`
	APIURL        string `env:"WECHAT_API_URL" envDefault:"https://api.weixin.qq.com" help:"the upstream every call goes to; tests point it at a fake"`

	ListenAddr string `env:"LISTEN_ADDR" envDefault:"127.0.0.1:8080" help:"the API port the backend calls; it injects a real token into whatever it is sent, so keep it on loopback (:8080 binds every interface)"`
	AdminAddr  string `env:"ADMIN_ADDR" envDefault:":9102" help:"/healthz, /readyz, /metrics and /status, never on the API port"`
	QRCodeAddr string `env:"QRCODE_ADDR" help:"an extra port serving only GET /qrcode, safe behind a Service; empty: off"`

	TokenMode          string        `env:"TOKEN_MODE" envDefault:"stable" help:"stable (POST /cgi-bin/stable_token) or classic (GET /cgi-bin/token)"`
	TokenRefreshMargin time.Duration `env:"TOKEN_REFRESH_MARGIN" envDefault:"3m" help:"refresh the token this long before it expires (under WeChat's 5-minute overlap)"`

	UpstreamTimeout time.Duration `env:"UPSTREAM_TIMEOUT" envDefault:"10s" help:"per upstream call"`
	MaxBodyBytes    int64         `env:"MAX_BODY_BYTES" envDefault:"1048576" help:"larger request bodies are refused with 413"`
	MaxUploadBytes  int64         `env:"MAX_UPLOAD_BYTES" envDefault:"16777216" help:"multipart uploads stream through unbuffered up to this size"`
	BodyReadTimeout time.Duration `env:"BODY_READ_TIMEOUT" envDefault:"30s" help:"the whole request body must arrive within this once it is first read; otherwise 408 and the connection is closed"`
	AllowedPaths    []string      `env:"ALLOWED_PATHS" envSeparator:"," help:"comma-separated path prefixes the API port serves, e.g. /wxa/,/cgi-bin/wxaapp/; empty: every path"`

	ShutdownDelay   time.Duration `env:"SHUTDOWN_DELAY" envDefault:"0s" help:"after SIGTERM, keep serving this long before draining (lets the app stop first)"`
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"25s" help:"how long in-flight requests may take to finish after that"`
	LogLevelName    string        `env:"LOG_LEVEL" envDefault:"info" help:"debug, info, warn or error; JSON lines on standard error"`
	// AccessLog logs one line per request on the API and QRCODE_ADDR
	// ports, never the admin port, which the kubelet probes every few
	// seconds.
	AccessLog bool `env:"ACCESS_LOG" envDefault:"false" help:"one JSON line per request on the API and QRCODE_ADDR ports, at info level (true or false); never a query, body, token or secret"`

	CacheMaxBytes int64         `env:"CACHE_MAX_BYTES" envDefault:"268435456" help:"image cache capacity in bytes"`
	CacheTTL      time.Duration `env:"CACHE_TTL" envDefault:"24h" help:"how long an image is kept, and the max-age of GET /qrcode"`

	// Links (generatescheme, generate_urllink, genwxashortlink,
	// generatenfcscheme) are kept until they expire.
	LinkExpiryMargin time.Duration `env:"LINK_EXPIRY_MARGIN" envDefault:"10m" help:"a kept link is handed out until this long before it expires (one expiring sooner is never kept)"`
	LinkMaxAge       time.Duration `env:"LINK_MAX_AGE" envDefault:"24h" help:"a link of relative life (expire_interval days, or WeChat's default 30) is handed out for at most this long after it was made"`

	UpstreamRPS     float64       `env:"UPSTREAM_RPS" envDefault:"82.5" help:"upstream calls per second, per app and endpoint (the whole fleet's with REDIS_URL)"`
	UpstreamBurst   int           `env:"UPSTREAM_BURST" envDefault:"50" help:"burst of the same limiter"`
	UpstreamMaxWait time.Duration `env:"UPSTREAM_MAX_WAIT" envDefault:"2s" help:"how long a caller may queue for a slot; 0s refuses at once"`
	UpstreamLimits  string        `env:"UPSTREAM_LIMITS" help:"per-endpoint limits, comma-separated PATH=N/UNIT[:BURST], e.g. /wxa/generatescheme=100/s"`
	// QuotaCooldown 0 means until the next midnight China time.
	QuotaCooldown time.Duration `env:"QUOTA_COOLDOWN" envDefault:"0s" help:"how long a 45009 (daily quota) closes an endpoint, and a 44993 the scheme and URL Link endpoints; 0s: until midnight UTC+8"`

	// What GET /qrcode on QRCODE_ADDR may spend: docs/codes-and-links.md, "Exposing GET
	// /qrcode".
	QRCodeLimit       string   `env:"QRCODE_LIMIT" help:"the share of getwxacodeunlimit's limit QRCODE_ADDR may spend, N/UNIT[:BURST] (the whole fleet's with REDIS_URL), so the API port keeps the rest; empty: half the endpoint's rate and burst; off: no share of its own"`
	QRCodeClientLimit string   `env:"QRCODE_CLIENT_LIMIT" envDefault:"60/m:20" help:"new codes one client (an IPv4 address, an IPv6 /64) may start on QRCODE_ADDR, per replica, N/UNIT[:BURST]; past it 429 with Retry-After (cached codes stay free); off: no limit"`
	TrustedProxiesRaw []string `env:"TRUSTED_PROXIES" envSeparator:"," help:"comma-separated CIDRs (or addresses) of the proxies in front of QRCODE_ADDR: the client is the rightmost X-Forwarded-For address not among them; empty: the peer is the client"`

	// RedisURL, when set, makes the fleet share one Redis: images, leases,
	// limits, cool-downs and tokens. Empty: every replica on its own.
	RedisURL          string        `env:"REDIS_URL" help:"one Redis shared by every replica: redis://, rediss:// (TLS) or a Cluster as redis://host1:port?addr=host2:port; empty: each replica alone. Never logged"`
	RedisPasswordFile string        `env:"REDIS_PASSWORD_FILE" help:"a file holding the Redis password (a mounted Secret); wins over a password in REDIS_URL"`
	RedisCAFile       string        `env:"REDIS_CA_FILE" help:"a PEM CA, added to the system's, to verify a rediss:// server"`
	RedisKeyPrefix    string        `env:"REDIS_KEY_PREFIX" envDefault:"wxa:" help:"starts every Redis key"`
	RedisTimeout      time.Duration `env:"REDIS_TIMEOUT" envDefault:"100ms" help:"per Redis operation"`
	// FleetSize is how many replicas share the limits: while Redis is
	// unreachable each keeps 1/FleetSize of them locally.
	FleetSize int `env:"FLEET_SIZE" envDefault:"1" help:"how many replicas share the limits: while Redis is unreachable each keeps 1/FLEET_SIZE of them"`
	// RedisPassword is read from RedisPasswordFile; it wins over a
	// password in RedisURL. Never logged.
	RedisPassword string `env:"-"`

	// The durable store behind the caches (docs/store.md): empty
	// StoreURL is none, today's behaviour exactly.
	StoreURL           string        `env:"STORE_URL" help:"a durable store of code images behind the caches: file:///DIR (one replica with a volume) or s3://BUCKET/PREFIX (any S3-compatible bucket); empty: none"`
	StoreEndpoint      string        `env:"STORE_ENDPOINT" help:"the S3 endpoint, e.g. https://cos.ap-guangzhou.myqcloud.com or http://minio:9000; empty: AWS S3"`
	StoreRegion        string        `env:"STORE_REGION" help:"the bucket's region (e.g. ap-guangzhou); empty: asked of the bucket once"`
	StoreAccessKeyFile string        `env:"STORE_ACCESS_KEY_FILE" help:"a file holding the S3 access key id (a mounted Secret); with STORE_SECRET_KEY_FILE; neither: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, web identity (IRSA) or the instance role"`
	StoreSecretKeyFile string        `env:"STORE_SECRET_KEY_FILE" help:"a file holding the S3 secret access key (a mounted Secret); never logged"`
	StoreTimeout       time.Duration `env:"STORE_TIMEOUT" envDefault:"500ms" help:"per store operation: the most the store adds to a request"`
	StoreTTL           time.Duration `env:"STORE_TTL" envDefault:"0s" help:"how long a stored image counts; 0s: until deleted (a bucket's lifecycle rule may expire objects too)"`
	StoreMaxBytes      int64         `env:"STORE_MAX_BYTES" envDefault:"10737418240" help:"the file:// store's bound in bytes; the least recently used images are pruned in the background"`
	StoreKeyFile       string        `env:"STORE_KEY_FILE" help:"a file holding a key of the store's own (at least 32 bytes, e.g. head -c 32 /dev/urandom | base64); empty: keys derived from each app's secret, so rotating a secret empties the store"`
	StoreAccessKey     string        `env:"-"`
	StoreSecretKey     string        `env:"-"`
	StoreKey           []byte        `env:"-"`

	// Apps are the managed apps, from WECHAT_APP_ID and its secret or
	// from WECHAT_APPS_FILE.
	Apps []App `env:"-"`
	// Limits are the parsed UPSTREAM_LIMITS, by WeChat path.
	Limits map[string]RateLimit `env:"-"`
	// QRCodeShare is the parsed QRCODE_LIMIT: nil when empty (half the
	// endpoint's limit), a zero RateLimit for off.
	QRCodeShare *RateLimit `env:"-"`
	// ClientLimit is the parsed QRCODE_CLIENT_LIMIT; a zero Rate for off.
	ClientLimit RateLimit `env:"-"`
	// TrustedProxies are the parsed TRUSTED_PROXIES.
	TrustedProxies []netip.Prefix `env:"-"`

	logLevel slog.Level
}

// Environ returns the process environment as a map, for Load.
func Environ() map[string]string {
	m := make(map[string]string)
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// Load parses and validates environ. The error, if any, joins one error
// per problem, each a single line naming its variable.
func Load(environ map[string]string) (Config, error) {
	var c Config
	var problems []error
	if err := env.ParseWithOptions(&c, env.Options{Environment: environ}); err != nil {
		problems = append(problems, parseProblems(err, environ)...)
	}
	// A variable that did not parse is reported once, not again by the
	// checks of its zero value.
	reported := map[string]bool{}
	for _, p := range problems {
		name, _, _ := strings.Cut(p.Error(), ":")
		reported[name] = true
	}
	for _, p := range c.validate() {
		if name, _, _ := strings.Cut(p.Error(), ":"); !reported[name] {
			problems = append(problems, p)
		}
	}
	return c, errors.Join(problems...)
}

// parseProblems rewords env's errors as one line per variable.
func parseProblems(err error, environ map[string]string) []error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return []error{err}
	}
	var out []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			name := envName(pe.Name)
			out = append(out, fmt.Errorf("%s: %q is %s", name, environ[name], describeType(pe.Type.String())))
			continue
		}
		out = append(out, e)
	}
	return out
}

func describeType(t string) string {
	switch t {
	case "time.Duration":
		return "not a duration (e.g. 300ms, 2m)"
	case "int64", "int":
		return "not a whole number (sizes are plain integers of bytes)"
	case "float64":
		return "not a number"
	case "bool":
		return "not a boolean (true, false, 1, 0)"
	}
	return "invalid value"
}

func (c *Config) validate() []error {
	var p []error
	bad := func(format string, args ...any) { p = append(p, fmt.Errorf(format, args...)) }

	p = append(p, c.resolveApps()...)
	if u, err := url.Parse(c.APIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		bad("WECHAT_API_URL: %q is not an absolute http(s) URL without a query", c.APIURL)
	}
	c.APIURL = strings.TrimRight(c.APIURL, "/")
	if c.ListenAddr == "" {
		bad("LISTEN_ADDR: must not be empty")
	}
	if c.AdminAddr == "" || sameSocket(c.AdminAddr, c.ListenAddr) {
		bad("ADMIN_ADDR: %q must be set and differ from LISTEN_ADDR (the admin port is never the API port)", c.AdminAddr)
	}
	if c.QRCodeAddr != "" && (sameSocket(c.QRCodeAddr, c.ListenAddr) || sameSocket(c.QRCodeAddr, c.AdminAddr)) {
		bad("QRCODE_ADDR: %q must differ from LISTEN_ADDR and ADMIN_ADDR", c.QRCodeAddr)
	}
	if c.TokenMode != "stable" && c.TokenMode != "classic" {
		bad("TOKEN_MODE: %q is neither stable nor classic", c.TokenMode)
	}
	if c.TokenRefreshMargin <= 0 || c.TokenRefreshMargin >= 5*time.Minute {
		bad("TOKEN_REFRESH_MARGIN: %s must be above 0 and under 5m (WeChat's overlap of old and new token)", c.TokenRefreshMargin)
	}
	positive := func(name string, d time.Duration) {
		if d <= 0 {
			bad("%s: %s must be above 0", name, d)
		}
	}
	positive("UPSTREAM_TIMEOUT", c.UpstreamTimeout)
	positive("BODY_READ_TIMEOUT", c.BodyReadTimeout)
	positive("SHUTDOWN_TIMEOUT", c.ShutdownTimeout)
	positive("CACHE_TTL", c.CacheTTL)
	positive("LINK_EXPIRY_MARGIN", c.LinkExpiryMargin)
	positive("LINK_MAX_AGE", c.LinkMaxAge)
	for name, d := range map[string]time.Duration{"SHUTDOWN_DELAY": c.ShutdownDelay,
		"UPSTREAM_MAX_WAIT": c.UpstreamMaxWait, "QUOTA_COOLDOWN": c.QuotaCooldown} {
		if d < 0 {
			bad("%s: %s must not be negative", name, d)
		}
	}
	for name, n := range map[string]int64{"MAX_BODY_BYTES": c.MaxBodyBytes, "MAX_UPLOAD_BYTES": c.MaxUploadBytes,
		"CACHE_MAX_BYTES": c.CacheMaxBytes} {
		if n <= 0 {
			bad("%s: %d must be above 0", name, n)
		}
	}
	if level, ok := logLevels[strings.ToLower(c.LogLevelName)]; ok {
		c.logLevel = level
	} else {
		bad("LOG_LEVEL: %q is not one of debug, info, warn, error", c.LogLevelName)
	}
	var paths []string
	for _, prefix := range c.AllowedPaths {
		prefix = strings.TrimSpace(prefix)
		if prefix == "" {
			continue
		}
		if !strings.HasPrefix(prefix, "/") {
			bad("ALLOWED_PATHS: %q must start with /", prefix)
		}
		paths = append(paths, prefix)
	}
	c.AllowedPaths = paths
	if math.IsNaN(c.UpstreamRPS) || c.UpstreamRPS <= 0 {
		bad("UPSTREAM_RPS: %v must be above 0", c.UpstreamRPS)
	}
	if c.UpstreamBurst < 1 {
		bad("UPSTREAM_BURST: %d must be at least 1", c.UpstreamBurst)
	}
	limits, errs := parseLimits(c.UpstreamLimits)
	c.Limits = limits
	p = append(p, errs...)
	p = append(p, c.validatePublic()...)
	p = append(p, c.validateRedis()...)
	p = append(p, c.validateStore()...)
	return p
}

// sameSocket reports two listen addresses that cannot both be bound: the
// same text, or the same port where either binds every interface (":8080"
// and "127.0.0.1:8080"). Port 0 picks a free port and never clashes.
func sameSocket(a, b string) bool {
	hostA, portA, errA := net.SplitHostPort(a)
	hostB, portB, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil {
		return a == b
	}
	if portA != portB || portA == "0" {
		return false
	}
	return hostA == hostB || everyInterface(hostA) || everyInterface(hostB)
}

func everyInterface(host string) bool {
	ip := net.ParseIP(host)
	return host == "" || (ip != nil && ip.IsUnspecified())
}

var logLevels = map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo,
	"warn": slog.LevelWarn, "error": slog.LevelError}

// LogLevel is LOG_LEVEL as a slog level.
func (c Config) LogLevel() slog.Level { return c.logLevel }

// LogValue keeps secrets out of logs when the config is logged.
func (c Config) LogValue() slog.Value {
	ids := make([]string, len(c.Apps))
	for i, a := range c.Apps {
		ids[i] = a.ID
	}
	return slog.GroupValue(
		slog.Any("apps", ids), slog.String("api_url", c.APIURL), slog.String("listen", c.ListenAddr),
		slog.String("admin", c.AdminAddr), slog.String("qrcode", c.QRCodeAddr), slog.String("token_mode", c.TokenMode),
		// Durations as Go writes them ("30s"): a JSON number of
		// nanoseconds is unreadable.
		slog.String("token_refresh_margin", c.TokenRefreshMargin.String()),
		slog.String("upstream_timeout", c.UpstreamTimeout.String()),
		slog.String("body_read_timeout", c.BodyReadTimeout.String()),
		slog.String("shutdown_delay", c.ShutdownDelay.String()),
		slog.String("shutdown_timeout", c.ShutdownTimeout.String()),
		slog.String("cache_ttl", c.CacheTTL.String()),
		slog.String("link_expiry_margin", c.LinkExpiryMargin.String()),
		slog.String("link_max_age", c.LinkMaxAge.String()),
		slog.Bool("access_log", c.AccessLog), slog.Bool("redis", c.RedisURL != ""),
		slog.Int("fleet_size", c.FleetSize),
		slog.Bool("store", c.StoreURL != ""),
	)
}
