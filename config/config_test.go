package config

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func base() map[string]string {
	return map[string]string{"WECHAT_APP_ID": "wx123", "WECHAT_APP_SECRET": "the-secret-value"}
}

func with(kv ...string) map[string]string {
	m := base()
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestDefaults(t *testing.T) {
	c, err := Load(base())
	if err != nil {
		t.Fatal(err)
	}
	checks := map[string][2]any{
		"APIURL":          {c.APIURL, "https://api.weixin.qq.com"},
		"ListenAddr":      {c.ListenAddr, "127.0.0.1:8080"},
		"AdminAddr":       {c.AdminAddr, ":9102"},
		"QRCodeAddr":      {c.QRCodeAddr, ""},
		"TokenMode":       {c.TokenMode, "stable"},
		"Margin":          {c.TokenRefreshMargin, 3 * time.Minute},
		"Timeout":         {c.UpstreamTimeout, 10 * time.Second},
		"MaxBody":         {c.MaxBodyBytes, int64(1048576)},
		"MaxUpload":       {c.MaxUploadBytes, int64(16 << 20)},
		"BodyReadTimeout": {c.BodyReadTimeout, 30 * time.Second},
		"ShutdownDelay":   {c.ShutdownDelay, time.Duration(0)},
		"ShutdownTimeout": {c.ShutdownTimeout, 25 * time.Second},
		"CacheMaxBytes":   {c.CacheMaxBytes, int64(268435456)},
		"CacheTTL":        {c.CacheTTL, 24 * time.Hour},
		"RPS":             {c.UpstreamRPS, 82.5},
		"Burst":           {c.UpstreamBurst, 50},
		"MaxWait":         {c.UpstreamMaxWait, 2 * time.Second},
		"QuotaCooldown":   {c.QuotaCooldown, time.Duration(0)},
		"AccessLog":       {c.AccessLog, false},
	}
	for name, v := range checks {
		if v[0] != v[1] {
			t.Errorf("%s = %v, want %v", name, v[0], v[1])
		}
	}
	if len(c.Apps) != 1 || c.Apps[0] != (App{"wx123", "the-secret-value"}) {
		t.Errorf("Apps %v", c.Apps)
	}
	// The default limit keeps every 60-second window under 5000 calls.
	if got := c.UpstreamRPS*60 + float64(c.UpstreamBurst); got > 5000 {
		t.Errorf("default rate allows %v calls a minute", got)
	}
}

func TestInvalidValuesNameTheirVariable(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string
	}{
		{with("UPSTREAM_TIMEOUT", "ten"), "UPSTREAM_TIMEOUT"},
		{with("MAX_BODY_BYTES", "1MB"), "MAX_BODY_BYTES"},
		{with("CACHE_MAX_BYTES", "-1"), "CACHE_MAX_BYTES"},
		{with("TOKEN_MODE", "fast"), "TOKEN_MODE"},
		{with("TOKEN_REFRESH_MARGIN", "10m"), "TOKEN_REFRESH_MARGIN"},
		{with("LOG_LEVEL", "loud"), "LOG_LEVEL"},
		{with("ADMIN_ADDR", ":8080"), "ADMIN_ADDR"},
		{with("QRCODE_ADDR", ":9102"), "QRCODE_ADDR"},
		{with("WECHAT_API_URL", "api.weixin.qq.com"), "WECHAT_API_URL"},
		{with("ALLOWED_PATHS", "wxa/"), "ALLOWED_PATHS"},
		{with("UPSTREAM_RPS", "0"), "UPSTREAM_RPS"},
		{with("UPSTREAM_BURST", "0"), "UPSTREAM_BURST"},
		{with("UPSTREAM_MAX_WAIT", "-1s"), "UPSTREAM_MAX_WAIT"},
		{with("UPSTREAM_LIMITS", "/wxa/x=fast"), "UPSTREAM_LIMITS"},
		{with("SHUTDOWN_TIMEOUT", "0s"), "SHUTDOWN_TIMEOUT"},
		{with("BODY_READ_TIMEOUT", "0s"), "BODY_READ_TIMEOUT"},
		{with("BODY_READ_TIMEOUT", "-1s"), "BODY_READ_TIMEOUT"},
		{with("BODY_READ_TIMEOUT", "30"), "BODY_READ_TIMEOUT"},
		{map[string]string{"WECHAT_APP_ID": "wx1"}, "WECHAT_APP_SECRET"},
		{map[string]string{}, "WECHAT_APP_ID"},
		{with("WECHAT_APP_SECRET_FILE", "/x"), "WECHAT_APP_SECRET_FILE"},
	}
	for _, tt := range tests {
		_, err := Load(tt.env)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: error %v, want one naming %s", tt.env, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "the-secret-value") {
			t.Errorf("error carries the secret: %v", err)
		}
	}
}

func TestEveryProblemGetsItsOwnLine(t *testing.T) {
	_, err := Load(with("UPSTREAM_TIMEOUT", "ten", "MAX_BODY_BYTES", "1MB", "TOKEN_MODE", "x"))
	if err == nil {
		t.Fatal("want an error")
	}
	if lines := strings.Split(err.Error(), "\n"); len(lines) != 3 {
		t.Errorf("got %d lines, want 3: %q", len(lines), lines)
	}
}

func TestSecretFileIsTrimmed(t *testing.T) {
	f := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(f, []byte("  s3cret\n\n"), 0o600)
	c, err := Load(map[string]string{"WECHAT_APP_ID": "wx1", "WECHAT_APP_SECRET_FILE": f})
	if err != nil || c.Apps[0].Secret != "s3cret" {
		t.Errorf("secret %q, err %v; want it trimmed", c.Apps[0].Secret, err)
	}
	os.WriteFile(f, []byte(" \n"), 0o600)
	if _, err := Load(map[string]string{"WECHAT_APP_ID": "wx1", "WECHAT_APP_SECRET_FILE": f}); err == nil {
		t.Error("an empty secret file was accepted")
	}
}

func TestAppsFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "apps")
	os.WriteFile(f, []byte("# apps\n\nwxa:secret-a\n  wxb : secret-b  \n"), 0o600)
	c, err := Load(map[string]string{"WECHAT_APPS_FILE": f})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Apps) != 2 || c.Apps[1] != (App{"wxb", "secret-b"}) {
		t.Errorf("Apps %v", c.Apps)
	}
	os.WriteFile(f, []byte("wxa:secret-a\nbroken-line-secret-x\nwxa:secret-c\n"), 0o600)
	_, err = Load(map[string]string{"WECHAT_APPS_FILE": f})
	if err == nil || !strings.Contains(err.Error(), ":2:") || !strings.Contains(err.Error(), ":3:") {
		t.Errorf("error %v, want lines 2 and 3 named", err)
	}
	if err != nil && (strings.Contains(err.Error(), "secret-c") || strings.Contains(err.Error(), "broken-line-secret-x")) {
		t.Errorf("error carries a secret: %v", err)
	}
	if _, err := Load(map[string]string{"WECHAT_APPS_FILE": f, "WECHAT_APP_ID": "wx1"}); err == nil {
		t.Error("both modes at once were accepted")
	}
}

func TestUpstreamLimits(t *testing.T) {
	c, err := Load(with("UPSTREAM_LIMITS", "/wxa/getwxacodeunlimit=5000/m:50, /wxa/generatescheme=100/s", "ALLOWED_PATHS", " /wxa/ ,/cgi-bin/wxaapp/"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Limits["/wxa/getwxacodeunlimit"]; got != (RateLimit{Rate: 82.5, Burst: 50}) {
		t.Errorf("5000/m:50 = %+v, want rate 82.5 burst 50", got)
	}
	if got := c.Limits["/wxa/generatescheme"]; got != (RateLimit{Rate: 90, Burst: 10}) {
		t.Errorf("100/s = %+v, want rate 90 burst 10", got)
	}
	if len(c.AllowedPaths) != 2 || c.AllowedPaths[0] != "/wxa/" {
		t.Errorf("AllowedPaths %q", c.AllowedPaths)
	}
	for _, bad := range []string{"wxa=1/s", "/x=1/s", "/x=10/w", "/x=10/s:10", "/x=10/s,/x=5/s"} {
		if _, err := Load(with("UPSTREAM_LIMITS", bad)); err == nil {
			t.Errorf("UPSTREAM_LIMITS=%q accepted", bad)
		}
	}
}

func TestBodyReadTimeout(t *testing.T) {
	c, err := Load(with("BODY_READ_TIMEOUT", "750ms"))
	if err != nil || c.BodyReadTimeout != 750*time.Millisecond {
		t.Errorf("BODY_READ_TIMEOUT=750ms: %v, err %v", c.BodyReadTimeout, err)
	}
	// A value that does not parse is one problem, not also "must be above 0".
	_, err = Load(with("BODY_READ_TIMEOUT", "soon"))
	if err == nil || strings.Count(err.Error(), "BODY_READ_TIMEOUT") != 1 || !strings.Contains(err.Error(), "not a duration") {
		t.Errorf("BODY_READ_TIMEOUT=soon: error %v, want one line naming it as not a duration", err)
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("start", "config", c)
	if !strings.Contains(logged.String(), `"body_read_timeout":"750ms"`) {
		t.Errorf("config log lacks body_read_timeout: %s", logged.String())
	}
}

func TestEveryVariableHasHelp(t *testing.T) {
	vars := Variables()
	if len(vars) < 30 {
		t.Fatalf("Variables() lists %d variables; want every env field of Config", len(vars))
	}
	seen := map[string]bool{}
	for _, v := range vars {
		if strings.TrimSpace(v.Help) == "" {
			t.Errorf("%s has no help tag: --help would not say what it means", v.Name)
		}
		if seen[v.Name] {
			t.Errorf("%s listed twice", v.Name)
		}
		seen[v.Name] = true
	}
	for _, name := range []string{"WECHAT_APP_ID", "LISTEN_ADDR", "ACCESS_LOG", "REDIS_URL", "FLEET_SIZE"} {
		if !seen[name] {
			t.Errorf("Variables() lacks %s", name)
		}
	}
	for _, v := range vars {
		if v.Name == "LISTEN_ADDR" && v.Default != "127.0.0.1:8080" {
			t.Errorf("LISTEN_ADDR default %q, want 127.0.0.1:8080", v.Default)
		}
	}
}

func TestAccessLog(t *testing.T) {
	for value, want := range map[string]bool{"true": true, "1": true, "TRUE": true, "false": false, "0": false} {
		c, err := Load(with("ACCESS_LOG", value))
		if err != nil || c.AccessLog != want {
			t.Errorf("ACCESS_LOG=%s: %v, err %v; want %v", value, c.AccessLog, err, want)
		}
	}
	_, err := Load(with("ACCESS_LOG", "yes"))
	if err == nil || !strings.Contains(err.Error(), "ACCESS_LOG") || !strings.Contains(err.Error(), "not a boolean") {
		t.Errorf("ACCESS_LOG=yes: error %v, want one naming ACCESS_LOG as not a boolean", err)
	}
}

// TestConfigLogsDurationsAsStrings: a JSON number of nanoseconds
// (25000000000) is unreadable in a log.
func TestConfigLogsDurationsAsStrings(t *testing.T) {
	c, err := Load(base())
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("start", "config", c)
	var line struct {
		Config map[string]any `json:"config"`
	}
	if err := json.Unmarshal(logged.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"token_refresh_margin": "3m0s", "upstream_timeout": "10s", "body_read_timeout": "30s",
		"shutdown_delay": "0s", "shutdown_timeout": "25s", "cache_ttl": "24h0m0s"}
	for k, v := range want {
		if got, ok := line.Config[k].(string); !ok || got != v {
			t.Errorf("config.%s = %#v, want the string %q", k, line.Config[k], v)
		}
	}
}

// TestPortsThatCannotBothBeBound: with LISTEN_ADDR on loopback by default,
// an ADMIN_ADDR of ":8080" would fail only at bind time.
func TestPortsThatCannotBothBeBound(t *testing.T) {
	for _, tt := range []struct {
		listen, admin string
		ok            bool
	}{
		{"127.0.0.1:8080", ":8080", false},
		{"127.0.0.1:8080", "0.0.0.0:8080", false},
		{"[::]:8080", "127.0.0.1:8080", false},
		{"127.0.0.1:8080", "127.0.0.1:8080", false},
		{"127.0.0.1:8080", "127.0.0.2:8080", true},
		{"127.0.0.1:8080", ":9102", true},
		{"127.0.0.1:0", "127.0.0.1:0", true},
	} {
		_, err := Load(with("LISTEN_ADDR", tt.listen, "ADMIN_ADDR", tt.admin))
		if (err == nil) != tt.ok {
			t.Errorf("LISTEN_ADDR=%s ADMIN_ADDR=%s: error %v, want ok=%v", tt.listen, tt.admin, err, tt.ok)
		}
	}
}

func TestRedisURLMustVerifyTheServer(t *testing.T) {
	for _, u := range []string{
		"rediss://:pw-in-url@redis.internal:6380/0?skip_verify=true",
		"rediss://redis.internal:6380/0?skip_verify=1",
		"rediss://redis.internal:6380/0?SKIP_VERIFY=true",
		"rediss://redis.internal:6380/0?skip_verify=false",
		"redis://redis.internal:6379/0?skip_verify=true",
	} {
		_, err := Load(with("REDIS_URL", u))
		if err == nil {
			t.Errorf("%s: accepted, want a config error", u)
			continue
		}
		if lines := strings.Split(err.Error(), "\n"); len(lines) != 1 || !strings.Contains(err.Error(), "REDIS_URL") ||
			!strings.Contains(err.Error(), "skip_verify") {
			t.Errorf("%s: error %q, want one line naming REDIS_URL and skip_verify", u, err)
		}
		if strings.Contains(err.Error(), "pw-in-url") {
			t.Errorf("error carries the URL's password: %v", err)
		}
	}
	for _, u := range []string{"rediss://redis.internal:6380/0", "redis://redis.internal:6379/0?dial_timeout=1s"} {
		if _, err := Load(with("REDIS_URL", u)); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
}
