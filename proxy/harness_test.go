package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	_ "image/jpeg"
	_ "image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/metrics"
	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/token"
	"github.com/wxa-sidecar/wxa-sidecar/upstream"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// harness is the proxy in front of the fake WeChat, over real HTTP, with
// the fewest parts it needs and every clock injectable: a unit-test rig,
// not a second wiring. What the service wires (sidecar.New) is tested
// where it lives, in sidecar/, and as the real binary, in e2e/.
type harness struct {
	t       *testing.T
	fake    *wechattest.Server
	proxy   *Proxy
	srv     *httptest.Server
	logs    *wechattest.LogBuffer
	metrics *metrics.Metrics
	tokens  map[string]*token.Manager
	cache   *cache.Memory
	gate    *quota.Local
}

type harnessOptions struct {
	apps    map[string]string // appid -> secret; default the fake's demo app
	mode    token.Mode
	cache   bool
	proxy   func(*Options)
	fakeOpt wechattest.Options
	// quota configures the gate (its Now and Hooks are the harness's).
	quota quota.Options
	// upstream overrides the upstream client's options.
	upstream func(*upstream.Options)
	// now is the clock of every part; default time.Now.
	now func() time.Time
	// cacheTTL is CACHE_TTL: images, 45029 refusals, max-age; default 24h.
	cacheTTL time.Duration
}

func newHarness(t *testing.T, ho harnessOptions) *harness {
	t.Helper()
	if ho.apps == nil {
		ho.apps = map[string]string{wechattest.DemoAppID: wechattest.DemoSecret}
	}
	if ho.now == nil {
		ho.now = time.Now
	}
	fo := ho.fakeOpt
	fo.Apps = ho.apps
	fake := wechattest.NewServer(fo)
	t.Cleanup(fake.Close)
	h := &harness{t: t, fake: fake, logs: &wechattest.LogBuffer{}, metrics: metrics.New(), tokens: map[string]*token.Manager{}}
	log := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	qo := ho.quota
	qo.Now, qo.Logger, qo.Hooks = ho.now, log, h.metrics.QuotaHooks()
	h.gate = quota.NewLocal(qo)
	t.Cleanup(h.gate.Close)
	uo := upstream.Options{Base: fake.URL, Timeout: 10 * time.Second, Gate: h.gate, Hooks: h.metrics.UpstreamHooks(),
		Logger: log, Now: ho.now}
	if ho.upstream != nil {
		ho.upstream(&uo)
	}
	up, err := upstream.New(uo)
	if err != nil {
		t.Fatal(err)
	}
	// Tokens always come from the fake, even when a test points API calls
	// at an upstream of its own.
	tokenUp, err := upstream.New(upstream.Options{Base: fake.URL, Hooks: h.metrics.UpstreamHooks()})
	if err != nil {
		t.Fatal(err)
	}
	var apps []App
	for id, secret := range ho.apps {
		m, err := token.New(token.Options{AppID: id, Secret: secret, BaseURL: fake.URL, Mode: ho.mode, Logger: log,
			Client: &http.Client{Transport: tokenUp.Transport(), Timeout: 10 * time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		h.tokens[id] = m
		apps = append(apps, App{Secret: secret, Tokens: m})
	}
	opts := Options{Apps: apps, Upstream: up, Quota: h.gate, Logger: log, Metrics: h.metrics, Now: ho.now,
		CacheTTL: ho.cacheTTL, Codes: codes.Options{RetryBackoff: time.Millisecond, RefusalTTL: ho.cacheTTL,
			Now: ho.now, Logger: log, Hooks: h.metrics.CodesHooks()}}
	if ho.cache {
		c, err := cache.NewMemory(cache.Options{MaxBytes: 64 << 20, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		h.cache = c
		opts.Codes.L1 = c
	}
	if ho.proxy != nil {
		ho.proxy(&opts)
	}
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.proxy = p
	h.srv = httptest.NewServer(p)
	t.Cleanup(h.srv.Close)
	return h
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) errcode() int { return errcodeOf(r.body) }

func (h *harness) do(method, path, contentType string, body []byte, header ...string) response {
	h.t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (h *harness) postJSON(path, body string) response {
	h.t.Helper()
	return h.do(http.MethodPost, path, "application/json", []byte(body))
}

func (h *harness) get(path string) response {
	h.t.Helper()
	return h.do(http.MethodGet, path, "", nil)
}

// upstreamToken is the access_token WeChat saw on the last call to path.
func (h *harness) upstreamToken(path string) string {
	h.t.Helper()
	reqs := h.fake.Requests(path)
	if len(reqs) == 0 {
		h.t.Fatalf("no upstream request on %s", path)
	}
	return reqs[len(reqs)-1].Query.Get("access_token")
}

// currentToken is the managed token of app.
func (h *harness) currentToken(app string) string {
	h.t.Helper()
	tok, err := h.tokens[app].Token(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return tok.Value
}

// decodeQR decodes an image (JPEG or PNG, whatever its label) to its text.
func decodeQR(t *testing.T, b []byte) string {
	t.Helper()
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not an image (%d bytes, starts %q): %v", len(b), truncate(b, 40), err)
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	res, err := qrcode.NewQRCodeReader().Decode(bmp, nil)
	if err != nil {
		t.Fatalf("no QR code in the image: %v", err)
	}
	return res.GetText()
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

func jsonField(t *testing.T, body []byte, field string) any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("body %q is not JSON: %v", truncate(body, 200), err)
	}
	return m[field]
}

func containsAny(s string, subs ...string) string {
	for _, sub := range subs {
		if sub != "" && strings.Contains(s, sub) {
			return sub
		}
	}
	return ""
}

func newServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
