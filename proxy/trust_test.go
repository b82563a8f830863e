package proxy

import (
	"bytes"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"github.com/wxa-sidecar/wxa-sidecar/wxacode"
)

// Every image answer, on the API port and on QRCODE_ADDR, carries nosniff.
// GET /qrcode, what browsers load, is labelled by the image's bytes; a
// POST keeps WeChat's own label (SDKs check it).
func TestImagesLeaveOnlyAsImages(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true})
	public := newServer(t, h.proxy.QRCodeHandler())
	for _, tc := range []struct {
		name, ask string
		resp      func() response
		wantType  string
	}{
		{"POST, a JPEG", "jpeg", func() response { return h.postJSON(pathUnlimited, `{"scene":"jpeg"}`) }, "image/jpeg"},
		{"POST, a PNG WeChat labels image/jpeg", "png", func() response {
			return h.postJSON(pathUnlimited, `{"scene":"png","is_hyaline":true}`)
		}, "image/jpeg"},
		{"GET /qrcode on the API port, a PNG", "png", func() response { return h.get("/qrcode?scene=png&is_hyaline=true") }, "image/png"},
		{"GET /qrcode on QRCODE_ADDR, a PNG", "png", func() response {
			return getFrom(t, public+"/qrcode?scene=png&is_hyaline=true")
		}, "image/png"},
		{"GET /qrcode on QRCODE_ADDR, a JPEG", "jpeg", func() response { return getFrom(t, public+"/qrcode?scene=jpeg") }, "image/jpeg"},
	} {
		resp := tc.resp()
		if resp.status != http.StatusOK {
			t.Fatalf("%s: status %d %s", tc.name, resp.status, truncate(resp.body, 100))
		}
		if got := resp.header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s: X-Content-Type-Options %q, want nosniff", tc.name, got)
		}
		if got := resp.header.Get("Content-Type"); got != tc.wantType {
			t.Errorf("%s: Content-Type %q, want %q", tc.name, got, tc.wantType)
		}
	}
}

// Whatever label a cached image carries, GET /qrcode labels it by its
// bytes, and a body that is no image is not served there at all.
func TestQRCodeNeverServesAStoredLabel(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true})
	public := newServer(t, h.proxy.QRCodeHandler())
	jpeg := h.postJSON(pathUnlimited, `{"scene":"labelled"}`)
	if jpeg.status != http.StatusOK {
		t.Fatalf("status %d", jpeg.status)
	}
	keyOf := func(scene string) cache.Key {
		_, canonical, err := wxacode.FromQuery(url.Values{"scene": {scene}})
		if err != nil {
			t.Fatal(err)
		}
		return cache.Key(wxacode.KeyOf(demoApp, wechat.PathUnlimited, canonical))
	}
	if !h.cache.Set(keyOf("html"), cache.NewEntry(jpeg.body, "text/html", "")) ||
		!h.cache.Set(keyOf("page"), cache.NewEntry([]byte("<script>alert(1)</script>"), "image/jpeg", "")) {
		t.Fatal("the cache declined an entry")
	}
	resp := getFrom(t, public+"/qrcode?scene=html")
	if resp.status != http.StatusOK || resp.header.Get("Content-Type") != "image/jpeg" || !bytes.Equal(resp.body, jpeg.body) {
		t.Errorf("a JPEG stored as text/html: %d %q, want the JPEG as image/jpeg", resp.status, resp.header.Get("Content-Type"))
	}
	resp = getFrom(t, public+"/qrcode?scene=page")
	if resp.status != http.StatusBadGateway || bytes.Contains(resp.body, []byte("<script>")) {
		t.Errorf("a page stored as an image: %d %q %s, want 502 without it", resp.status, resp.header.Get("Content-Type"), truncate(resp.body, 60))
	}
}

// Retry-After is whole seconds rounded up, for any duration: the largest
// does not overflow into a negative or tiny value.
func TestRetryAfterNeverOverflows(t *testing.T) {
	for d, want := range map[int64]string{0: "1", 1: "1", 1e9: "1", 1e9 + 1: "2", math.MaxInt64: "9223372037", -5e9: "1"} {
		if got := retryAfterSeconds(durationOf(d)); got != want {
			t.Errorf("retryAfterSeconds(%d) = %s, want %s", d, got, want)
		}
	}
}

// An errcode answer with a status no answer of ours has (a forged 999999
// would make the handler panic) goes out as 502.
func TestErrcodeWithAnImpossibleStatusIs502(t *testing.T) {
	for _, status := range []int{999999, -1, 0, 99, 600} {
		w := httptest.NewRecorder()
		writeErrcode(w, status, wechat.SystemBusy, "system error")
		if w.Code != http.StatusBadGateway {
			t.Errorf("status %d went out as %d, want 502", status, w.Code)
		}
	}
}

func durationOf(ns int64) time.Duration { return time.Duration(ns) }
