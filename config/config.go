// Package config reads the sidecar's one Config from the environment,
// parsed once and validated, with a clear line for every problem. Only main
// imports it; every other package takes its own small options struct.
//
// Its errors never contain a secret.
package config

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
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

// validateStore checks the durable store's variables and reads its key
// files; the errors never carry what the files hold.
func (c *Config) validateStore() []error {
	var p []error
	if c.StoreTimeout <= 0 {
		p = append(p, fmt.Errorf("STORE_TIMEOUT: %s must be above 0", c.StoreTimeout))
	}
	if c.StoreTTL < 0 {
		p = append(p, fmt.Errorf("STORE_TTL: %s must not be negative", c.StoreTTL))
	}
	if c.StoreMaxBytes <= 0 {
		p = append(p, fmt.Errorf("STORE_MAX_BYTES: %d must be above 0", c.StoreMaxBytes))
	}
	if c.StoreURL == "" {
		if c.StoreEndpoint != "" || c.StoreAccessKeyFile != "" || c.StoreSecretKeyFile != "" || c.StoreKeyFile != "" {
			p = append(p, errors.New("STORE_ENDPOINT, STORE_ACCESS_KEY_FILE, STORE_SECRET_KEY_FILE, STORE_KEY_FILE: set STORE_URL too, or none"))
		}
		return p
	}
	u, err := url.Parse(c.StoreURL)
	switch {
	case err != nil:
		p = append(p, errors.New("STORE_URL: does not parse; want file:///DIR or s3://BUCKET/PREFIX"))
	case u.Scheme == "file":
		if (u.Host != "" && u.Host != "localhost") || !strings.HasPrefix(u.Path, "/") || u.RawQuery != "" {
			p = append(p, fmt.Errorf("STORE_URL: %q: want file:///ABSOLUTE/DIR (three slashes)", c.StoreURL))
		}
		if c.StoreEndpoint != "" || c.StoreAccessKeyFile != "" || c.StoreSecretKeyFile != "" {
			p = append(p, errors.New("STORE_ENDPOINT, STORE_ACCESS_KEY_FILE, STORE_SECRET_KEY_FILE: for an s3:// STORE_URL only"))
		}
	case u.Scheme == "s3":
		if u.Host == "" || u.User != nil || u.RawQuery != "" {
			// Never echo it: someone may have put credentials in it.
			p = append(p, errors.New("STORE_URL: want s3://BUCKET/PREFIX, credentials in STORE_ACCESS_KEY_FILE and STORE_SECRET_KEY_FILE"))
		}
		if c.StoreEndpoint != "" {
			e, err := url.Parse(c.StoreEndpoint)
			if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" || strings.Trim(e.Path, "/") != "" || e.User != nil {
				p = append(p, errors.New("STORE_ENDPOINT: want http(s)://HOST[:PORT], e.g. https://cos.ap-guangzhou.myqcloud.com"))
			}
		}
	default:
		p = append(p, errors.New("STORE_URL: want file:///DIR or s3://BUCKET/PREFIX"))
	}
	if (c.StoreAccessKeyFile == "") != (c.StoreSecretKeyFile == "") {
		p = append(p, errors.New("STORE_ACCESS_KEY_FILE, STORE_SECRET_KEY_FILE: set both or neither"))
	}
	read := func(name, file string) string {
		if file == "" {
			return ""
		}
		b, err := os.ReadFile(file)
		if err != nil {
			p = append(p, fmt.Errorf("%s: cannot read %s: %w", name, file, errors.Unwrap(err)))
			return ""
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			p = append(p, fmt.Errorf("%s: %s is empty", name, file))
		}
		return v
	}
	c.StoreAccessKey = read("STORE_ACCESS_KEY_FILE", c.StoreAccessKeyFile)
	c.StoreSecretKey = read("STORE_SECRET_KEY_FILE", c.StoreSecretKeyFile)
	if key := read("STORE_KEY_FILE", c.StoreKeyFile); key != "" {
		if len(key) < 32 {
			p = append(p, fmt.Errorf("STORE_KEY_FILE: %s holds %d bytes; want at least 32 (head -c 32 /dev/urandom | base64)", c.StoreKeyFile, len(key)))
		}
		c.StoreKey = []byte(key)
	}
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

// validateRedis checks the shared tier's variables; the URL's own form is
// go-redis's to judge (redis://, rediss://, or a Cluster's addr= list).
func (c *Config) validateRedis() []error {
	var p []error
	if c.FleetSize < 1 {
		p = append(p, fmt.Errorf("FLEET_SIZE: %d must be at least 1", c.FleetSize))
	}
	if c.RedisTimeout <= 0 {
		p = append(p, fmt.Errorf("REDIS_TIMEOUT: %s must be above 0", c.RedisTimeout))
	}
	if c.RedisURL == "" {
		if c.RedisPasswordFile != "" || c.RedisCAFile != "" {
			p = append(p, errors.New("REDIS_PASSWORD_FILE, REDIS_CA_FILE: set REDIS_URL too, or neither"))
		}
		return p
	}
	// The URL's form (scheme, host, port, database) is checked where
	// go-redis is known: sidecar.Validate, which says which part is wrong.
	if u, err := url.Parse(c.RedisURL); err == nil && skipsVerify(u) {
		p = append(p, errors.New("REDIS_URL: skip_verify turns off the check of the Redis server's certificate, "+
			"so anyone on the path could read and answer as Redis; not allowed (for a private CA, set REDIS_CA_FILE)"))
	}
	if c.RedisPasswordFile != "" {
		b, err := os.ReadFile(c.RedisPasswordFile)
		if err != nil {
			p = append(p, fmt.Errorf("REDIS_PASSWORD_FILE: cannot read %s: %w", c.RedisPasswordFile, errors.Unwrap(err)))
		} else {
			c.RedisPassword = strings.TrimSpace(string(b))
		}
	}
	if c.RedisCAFile != "" {
		if _, err := os.Stat(c.RedisCAFile); err != nil {
			p = append(p, fmt.Errorf("REDIS_CA_FILE: cannot read %s: %w", c.RedisCAFile, errors.Unwrap(err)))
		}
	}
	return p
}

// skipsVerify reports a REDIS_URL asking go-redis not to verify a
// rediss:// server's certificate: skip_verify, whatever its value or
// case (go-redis rejects what it does not know, so a misspelt one fails
// there).
func skipsVerify(u *url.URL) bool {
	for name := range u.Query() {
		if strings.EqualFold(name, "skip_verify") {
			return true
		}
	}
	return false
}

var logLevels = map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo,
	"warn": slog.LevelWarn, "error": slog.LevelError}

// LogLevel is LOG_LEVEL as a slog level.
func (c Config) LogLevel() slog.Level { return c.logLevel }

// resolveApps fills Apps from single-app or multi-app variables.
func (c *Config) resolveApps() []error {
	if c.AppsFile != "" {
		if c.AppID != "" || c.AppSecret != "" || c.AppSecretFile != "" {
			return []error{errors.New("WECHAT_APPS_FILE: set either it or WECHAT_APP_ID with its secret, not both")}
		}
		apps, errs := readAppsFile(c.AppsFile)
		c.Apps = apps
		return errs
	}
	if c.AppID == "" {
		return []error{errors.New("WECHAT_APP_ID: required (or WECHAT_APPS_FILE for several apps)")}
	}
	switch {
	case c.AppSecret != "" && c.AppSecretFile != "":
		return []error{errors.New("WECHAT_APP_SECRET_FILE: set either it or WECHAT_APP_SECRET, not both")}
	case c.AppSecretFile != "":
		b, err := os.ReadFile(c.AppSecretFile)
		if err != nil {
			return []error{fmt.Errorf("WECHAT_APP_SECRET_FILE: cannot read %s: %w", c.AppSecretFile, errors.Unwrap(err))}
		}
		c.AppSecret = strings.TrimSpace(string(b))
		if c.AppSecret == "" {
			return []error{fmt.Errorf("WECHAT_APP_SECRET_FILE: %s is empty", c.AppSecretFile)}
		}
	case c.AppSecret == "":
		return []error{errors.New("WECHAT_APP_SECRET: required, or WECHAT_APP_SECRET_FILE naming a file that holds it")}
	}
	c.Apps = []App{{ID: c.AppID, Secret: c.AppSecret}}
	return nil
}

// readAppsFile reads `appid:secret` lines; errors name the line, never
// the secret.
func readAppsFile(name string) ([]App, []error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, []error{fmt.Errorf("WECHAT_APPS_FILE: cannot read %s: %w", name, errors.Unwrap(err))}
	}
	defer f.Close()
	var apps []App
	var problems []error
	seen := map[string]bool{}
	s := bufio.NewScanner(f)
	for n := 1; s.Scan(); n++ {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, secret, ok := strings.Cut(line, ":")
		id, secret = strings.TrimSpace(id), strings.TrimSpace(secret)
		switch {
		case !ok || id == "" || secret == "":
			problems = append(problems, fmt.Errorf("WECHAT_APPS_FILE: %s:%d: want appid:secret", name, n))
		case seen[id]:
			problems = append(problems, fmt.Errorf("WECHAT_APPS_FILE: %s:%d: app %s listed twice", name, n, id))
		default:
			seen[id] = true
			apps = append(apps, App{ID: id, Secret: secret})
		}
	}
	if err := s.Err(); err != nil {
		problems = append(problems, fmt.Errorf("WECHAT_APPS_FILE: %s: %w", name, err))
	}
	if len(apps) == 0 && len(problems) == 0 {
		problems = append(problems, fmt.Errorf("WECHAT_APPS_FILE: %s lists no app", name))
	}
	return apps, problems
}

var limitUnits = map[string]float64{"s": 1, "m": 60, "h": 3600, "d": 86400}

// parseLimits reads UPSTREAM_LIMITS: comma-separated PATH=N/UNIT[:BURST],
// UNIT one of s, m, h, d. So that no window of one UNIT ever carries more
// than N calls, the bucket refills at (N − BURST) per UNIT; BURST defaults
// to a tenth of N (at least 1) and must stay below N.
//
//	/wxa/getwxacodeunlimit=5000/m:50  →  rate (5000−50)/60 = 82.5/s, burst 50
func parseLimits(s string) (map[string]RateLimit, []error) {
	limits := map[string]RateLimit{}
	var problems []error
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		bad := func(why string) {
			problems = append(problems, fmt.Errorf("UPSTREAM_LIMITS: %q: %s (want PATH=N/UNIT[:BURST], e.g. /wxa/generatescheme=100/s)", entry, why))
		}
		path, spec, ok := strings.Cut(entry, "=")
		if !ok || !strings.HasPrefix(path, "/") {
			bad("the path must start with /")
			continue
		}
		lim, why := parseRate(spec)
		if why != "" {
			bad(why)
			continue
		}
		if _, dup := limits[path]; dup {
			bad("path listed twice")
			continue
		}
		limits[path] = lim
	}
	return limits, problems
}

// parseRate reads one N/UNIT[:BURST] (see parseLimits), or says why it
// cannot.
func parseRate(spec string) (RateLimit, string) {
	spec, burstText, hasBurst := strings.Cut(spec, ":")
	countText, unit, ok := strings.Cut(spec, "/")
	seconds, unitOK := limitUnits[unit]
	count, err := strconv.Atoi(countText)
	if !ok || !unitOK || err != nil || count < 2 {
		return RateLimit{}, "N must be a whole number of at least 2 and UNIT one of s, m, h, d"
	}
	burst := max(count/10, 1)
	if hasBurst {
		if burst, err = strconv.Atoi(burstText); err != nil || burst < 1 || burst >= count {
			return RateLimit{}, "BURST must be a whole number from 1 to N-1"
		}
	}
	return RateLimit{Rate: float64(count-burst) / seconds, Burst: burst}, ""
}

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
