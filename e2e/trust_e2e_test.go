package e2e

// End-to-end tests of two promises, "nothing from Redis is believed" and
// "images leave only as images": real sidecar processes, a real
// redis-server, the fake WeChat behind a recorder, and a test that plays a
// Redis writer between two replicas' lives. Written against the contract
// (Redis key names, headers, metric names), not the code behind it.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"image"
	_ "image/jpeg"
	_ "image/png"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"
	"github.com/redis/go-redis/v9"

	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// tokenRecorder stands between the sidecars and the fake WeChat: it notes
// every token WeChat issued and every token a request carried.
type tokenRecorder struct {
	URL string

	mu     sync.Mutex
	issued map[string]bool
	sent   []string // access_token values of requests, as WeChat read them
	// queries holds every request's raw query, to find a parameter a
	// token smuggled in.
	queries []string
}

func newTokenRecorder(t *testing.T, fake *wechattest.Server) *tokenRecorder {
	t.Helper()
	rec := &tokenRecorder{issued: map[string]bool{}}
	target, err := url.Parse(fake.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			rec.mu.Lock()
			rec.sent = append(rec.sent, pr.In.URL.Query()["access_token"]...)
			rec.queries = append(rec.queries, pr.In.URL.RawQuery)
			rec.mu.Unlock()
		},
		ModifyResponse: func(resp *http.Response) error {
			p := resp.Request.URL.Path
			if p != "/cgi-bin/token" && p != "/cgi-bin/stable_token" {
				return nil
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			resp.Body = io.NopCloser(bytes.NewReader(body))
			if err != nil {
				return err
			}
			var ans struct {
				AccessToken string `json:"access_token"`
			}
			if json.Unmarshal(body, &ans) == nil && ans.AccessToken != "" {
				rec.mu.Lock()
				rec.issued[ans.AccessToken] = true
				rec.mu.Unlock()
			}
			return nil
		},
	}
	srv := &http.Server{Handler: rp}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	rec.URL = "http://" + ln.Addr().String()
	return rec
}

// unissued returns the tokens requests carried that WeChat never issued.
func (r *tokenRecorder) unissued() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, tok := range r.sent {
		if !r.issued[tok] {
			out = append(out, tok)
		}
	}
	return out
}

func (r *tokenRecorder) issuedTokens() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for tok := range r.issued {
		out = append(out, tok)
	}
	return out
}

func (r *tokenRecorder) queriesWith(s string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, q := range r.queries {
		if strings.Contains(q, s) {
			out = append(out, q)
		}
	}
	return out
}

// decodeScene decodes the QR code in an image answer and returns the scene
// the fake drew into it.
func decodeScene(t *testing.T, b []byte) string {
	t.Helper()
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not an image (%d bytes, starting %q): %v", len(b), b[:min(len(b), 40)], err)
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	res, err := qrcode.NewQRCodeReader().Decode(bmp, nil)
	if err != nil {
		t.Fatalf("no QR code in the image: %v", err)
	}
	u, err := url.Parse(res.GetText())
	if err != nil {
		t.Fatalf("QR text %q: %v", res.GetText(), err)
	}
	return u.Query().Get("scene")
}

// legacyImageEntry is an image entry in the format before sealing (1, the
// sha256 of the rest, content type, disposition, body): what a Redis
// writer could forge, and every replica believed.
func legacyImageEntry(contentType, body string) []byte {
	rest := binary.AppendUvarint(nil, uint64(len(contentType)))
	rest = append(rest, contentType...)
	rest = binary.AppendUvarint(rest, 0)
	rest = append(rest, body...)
	sum := sha256.Sum256(rest)
	return append(append([]byte{1}, sum[:]...), rest...)
}

// A hostile Redis writer, between two replicas' lives: it swaps two
// codes' entries, plants HTML behind JPEG magic under a third, and puts
// its own token (FORGED&touser=attacker, until 9999) where the classic
// token is kept. A fresh replica serves each code its own image on both
// ports, labelled by its bytes and with nosniff; WeChat never sees a
// token it did not issue (B fetches one more code); and no Redis value
// holds a token in clear.
func TestRedisWriterIsNotBelieved(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	fake := newFleetFake(t, wechattest.Options{})
	rec := newTokenRecorder(t, fake)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	env := func(qrcodeAddr string) []string {
		return []string{"WECHAT_APP_ID=" + wechattest.DemoAppID, "WECHAT_APP_SECRET=" + wechattest.DemoSecret,
			"WECHAT_API_URL=" + rec.URL, "REDIS_URL=" + srv.URL, "TOKEN_MODE=classic", "QRCODE_ADDR=" + qrcodeAddr}
	}
	client := &http.Client{Timeout: 30 * time.Second}
	post := func(p *sidecarProcess, scene string) *http.Response {
		t.Helper()
		resp, err := client.Post("http://"+p.api+fleetCodePath, "application/json", strings.NewReader(`{"scene":"`+scene+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	read := func(resp *http.Response) []byte {
		t.Helper()
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	// Replica A stores three codes and the classic token.
	a := startSidecar(t, env(freePort(t)))
	scenes := []string{"alpha", "beta", "gamma"}
	keyOf := map[string]string{}
	for _, scene := range scenes {
		before, err := rdb.Keys(ctx, "wxa:{"+wechattest.DemoAppID+"}:img:*").Result()
		if err != nil {
			t.Fatal(err)
		}
		resp := post(a, scene)
		if body := read(resp); resp.StatusCode != http.StatusOK || decodeScene(t, body) != scene {
			t.Fatalf("A: %s: HTTP %d", scene, resp.StatusCode)
		}
		after, _ := rdb.Keys(ctx, "wxa:{"+wechattest.DemoAppID+"}:img:*").Result()
		for _, k := range after {
			if !strings.Contains(strings.Join(before, ","), k) {
				keyOf[scene] = k
			}
		}
		if keyOf[scene] == "" {
			t.Fatalf("A stored no image in Redis for %s (keys %v)", scene, after)
		}
	}
	tokenKey := "wxa:{" + wechattest.DemoAppID + "}:token"
	if n, _ := rdb.Exists(ctx, tokenKey).Result(); n != 1 {
		t.Fatalf("A stored no token under %s", tokenKey)
	}

	// The writer.
	alpha, _ := rdb.Get(ctx, keyOf["alpha"]).Bytes()
	beta, _ := rdb.Get(ctx, keyOf["beta"]).Bytes()
	rdb.Set(ctx, keyOf["alpha"], beta, time.Hour)
	rdb.Set(ctx, keyOf["beta"], alpha, time.Hour)
	rdb.Set(ctx, keyOf["gamma"], legacyImageEntry("text/html", "\xff\xd8\xff<script>alert('xss')</script>"), time.Hour)
	forged, _ := json.Marshal(map[string]any{"token": "FORGED&touser=attacker",
		"expiry": time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)})
	rdb.Set(ctx, tokenKey, forged, 0)

	// A fresh replica B: gamma and alpha first on the public port (what
	// browsers load), beta first on the API port; then each on the other.
	qrcodeAddr := freePort(t)
	b := startSidecar(t, env(qrcodeAddr))
	check := func(port, scene string, resp *http.Response) {
		t.Helper()
		body := read(resp)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("B %s %s: HTTP %d %.200q", port, scene, resp.StatusCode, body)
			return
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("B %s %s: X-Content-Type-Options %q, want nosniff", port, scene, got)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "image/jpeg" && ct != "image/png" {
			t.Errorf("B %s %s: Content-Type %q, want an image's", port, scene, ct)
			return
		}
		if got := decodeScene(t, body); got != scene {
			t.Errorf("B %s %s: served the image of %q", port, scene, got)
		}
	}
	qr := func(scene string) *http.Response {
		t.Helper()
		resp, err := client.Get("http://" + qrcodeAddr + "/qrcode?scene=" + scene)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for _, scene := range []string{"gamma", "alpha"} {
		check("GET /qrcode", scene, qr(scene))
		check("POST", scene, post(b, scene))
	}
	check("POST", "beta", post(b, "beta"))
	check("GET /qrcode", "beta", qr("beta"))
	// A code nobody asked yet: B calls WeChat, with the token it holds.
	check("POST", "delta", post(b, "delta"))

	if bad := rec.unissued(); len(bad) > 0 {
		t.Errorf("WeChat saw %d tokens it never issued: %q", len(bad), bad)
	}
	if smuggled := rec.queriesWith("touser"); len(smuggled) > 0 {
		t.Errorf("a token smuggled a parameter to WeChat: %q", smuggled)
	}
	m, _ := scrapeFleetMetrics(t, b)
	if v, found := m.sum("wxa_sidecar_redis_unsealed_total", `kind="image"`); v < 3 {
		t.Errorf("B counted %s unbelieved images, want at least 3", sampleString(v, found))
	}
	if v, found := m.sum("wxa_sidecar_redis_unsealed_total", `kind="token"`); v < 1 {
		t.Errorf("B counted %s unbelieved tokens, want at least 1", sampleString(v, found))
	}

	// No value in Redis holds a token WeChat issued in clear.
	issued := rec.issuedTokens()
	if len(issued) == 0 {
		t.Fatal("WeChat issued no token")
	}
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		v, err := rdb.Get(ctx, k).Result()
		if err != nil {
			continue // not a string
		}
		for _, tok := range issued {
			if strings.Contains(v, tok) {
				t.Errorf("Redis key %s holds a token in clear", k)
			}
		}
	}
}
