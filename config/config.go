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
type Config struct {
	AppID         string `env:"WECHAT_APP_ID"`
	AppSecret     string `env:"WECHAT_APP_SECRET"`
	AppSecretFile string `env:"WECHAT_APP_SECRET_FILE"`
	AppsFile      string `env:"WECHAT_APPS_FILE"`
	APIURL        string `env:"WECHAT_API_URL" envDefault:"https://api.weixin.qq.com"`

	ListenAddr string `env:"LISTEN_ADDR" envDefault:":8080"`
	AdminAddr  string `env:"ADMIN_ADDR" envDefault:":9102"`
	QRCodeAddr string `env:"QRCODE_ADDR"`

	TokenMode          string        `env:"TOKEN_MODE" envDefault:"stable"`
	TokenRefreshMargin time.Duration `env:"TOKEN_REFRESH_MARGIN" envDefault:"3m"`

	UpstreamTimeout time.Duration `env:"UPSTREAM_TIMEOUT" envDefault:"10s"`
	MaxBodyBytes    int64         `env:"MAX_BODY_BYTES" envDefault:"1048576"`
	MaxUploadBytes  int64         `env:"MAX_UPLOAD_BYTES" envDefault:"16777216"`
	BodyReadTimeout time.Duration `env:"BODY_READ_TIMEOUT" envDefault:"30s"`
	AllowedPaths    []string      `env:"ALLOWED_PATHS" envSeparator:","`

	ShutdownDelay   time.Duration `env:"SHUTDOWN_DELAY" envDefault:"0s"`
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"25s"`
	LogLevelName    string        `env:"LOG_LEVEL" envDefault:"info"`

	CacheMaxBytes int64         `env:"CACHE_MAX_BYTES" envDefault:"268435456"`
	CacheTTL      time.Duration `env:"CACHE_TTL" envDefault:"24h"`

	UpstreamRPS     float64       `env:"UPSTREAM_RPS" envDefault:"82.5"`
	UpstreamBurst   int           `env:"UPSTREAM_BURST" envDefault:"50"`
	UpstreamMaxWait time.Duration `env:"UPSTREAM_MAX_WAIT" envDefault:"2s"`
	UpstreamLimits  string        `env:"UPSTREAM_LIMITS"`
	// QuotaCooldown 0 means until the next midnight China time.
	QuotaCooldown time.Duration `env:"QUOTA_COOLDOWN" envDefault:"0s"`

	// RedisURL, when set, makes the fleet share one Redis: images, leases,
	// limits, cool-downs and tokens. Empty: every replica on its own.
	RedisURL          string        `env:"REDIS_URL"`
	RedisPasswordFile string        `env:"REDIS_PASSWORD_FILE"`
	RedisCAFile       string        `env:"REDIS_CA_FILE"`
	RedisKeyPrefix    string        `env:"REDIS_KEY_PREFIX" envDefault:"wxa:"`
	RedisTimeout      time.Duration `env:"REDIS_TIMEOUT" envDefault:"100ms"`
	// FleetSize is how many replicas share the limits: while Redis is
	// unreachable each keeps 1/FleetSize of them locally.
	FleetSize int `env:"FLEET_SIZE" envDefault:"1"`
	// RedisPassword is read from RedisPasswordFile; it wins over a
	// password in RedisURL. Never logged.
	RedisPassword string `env:"-"`

	// Apps are the managed apps, from WECHAT_APP_ID and its secret or
	// from WECHAT_APPS_FILE.
	Apps []App `env:"-"`
	// Limits are the parsed UPSTREAM_LIMITS, by WeChat path.
	Limits map[string]RateLimit `env:"-"`

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

// envName maps a Config field to its variable for error messages.
func envName(field string) string {
	names := map[string]string{
		"TokenRefreshMargin": "TOKEN_REFRESH_MARGIN", "UpstreamTimeout": "UPSTREAM_TIMEOUT",
		"MaxBodyBytes": "MAX_BODY_BYTES", "MaxUploadBytes": "MAX_UPLOAD_BYTES", "BodyReadTimeout": "BODY_READ_TIMEOUT",
		"ShutdownDelay": "SHUTDOWN_DELAY", "ShutdownTimeout": "SHUTDOWN_TIMEOUT",
		"CacheMaxBytes": "CACHE_MAX_BYTES", "CacheTTL": "CACHE_TTL", "UpstreamRPS": "UPSTREAM_RPS",
		"UpstreamBurst": "UPSTREAM_BURST", "UpstreamMaxWait": "UPSTREAM_MAX_WAIT", "QuotaCooldown": "QUOTA_COOLDOWN",
		"RedisTimeout": "REDIS_TIMEOUT", "FleetSize": "FLEET_SIZE",
	}
	if n, ok := names[field]; ok {
		return n
	}
	return field
}

func describeType(t string) string {
	switch t {
	case "time.Duration":
		return "not a duration (e.g. 300ms, 2m)"
	case "int64", "int":
		return "not a whole number (sizes are plain integers of bytes)"
	case "float64":
		return "not a number"
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
	if c.AdminAddr == "" || c.AdminAddr == c.ListenAddr {
		bad("ADMIN_ADDR: %q must be set and differ from LISTEN_ADDR (the admin port is never the API port)", c.AdminAddr)
	}
	if c.QRCodeAddr != "" && (c.QRCodeAddr == c.ListenAddr || c.QRCodeAddr == c.AdminAddr) {
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
	p = append(p, c.validateRedis()...)
	return p
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
	if u, err := url.Parse(c.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
		// Never echo the URL: it may hold the password.
		p = append(p, errors.New("REDIS_URL: not a redis:// or rediss:// URL"))
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
		spec, burstText, hasBurst := strings.Cut(spec, ":")
		countText, unit, ok := strings.Cut(spec, "/")
		seconds, unitOK := limitUnits[unit]
		count, err := strconv.Atoi(countText)
		if !ok || !unitOK || err != nil || count < 2 {
			bad("N must be a whole number of at least 2 and UNIT one of s, m, h, d")
			continue
		}
		burst := max(count/10, 1)
		if hasBurst {
			if burst, err = strconv.Atoi(burstText); err != nil || burst < 1 || burst >= count {
				bad("BURST must be a whole number from 1 to N-1")
				continue
			}
		}
		if _, dup := limits[path]; dup {
			bad("path listed twice")
			continue
		}
		limits[path] = RateLimit{Rate: float64(count-burst) / seconds, Burst: burst}
	}
	return limits, problems
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
		slog.Duration("body_read_timeout", c.BodyReadTimeout), slog.Bool("redis", c.RedisURL != ""),
		slog.Int("fleet_size", c.FleetSize),
	)
}
