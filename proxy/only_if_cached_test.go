package proxy

import (
	"net/http"
	"testing"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// Cache-Control: only-if-cached is answered from the cache or with 504
// errcode -1, and never reaches WeChat: a dry run asks it of every row.
func TestOnlyIfCachedNeverReachesWeChat(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true})
	body := []byte(`{"scene":"only-if-cached"}`)
	for _, tc := range []struct {
		name, method, path string
		body               []byte
		header             []string
	}{
		{"POST", http.MethodPost, wechat.PathUnlimited, body, []string{"Cache-Control", "only-if-cached"}},
		{"POST, among other directives", http.MethodPost, wechat.PathWxacode, []byte(`{"path":"pages/a"}`),
			[]string{"Cache-Control", "max-age=0, ONLY-IF-CACHED"}},
		{"GET /qrcode", http.MethodGet, "/qrcode?scene=only-if-cached", nil, []string{"Cache-Control", "only-if-cached"}},
		{"signed POST", http.MethodPost, wechat.PathUnlimited, body,
			[]string{"Cache-Control", "only-if-cached", "Wechatmp-Signature", "sig"}},
	} {
		resp := h.do(tc.method, tc.path, "application/json", tc.body, tc.header...)
		if resp.status != http.StatusGatewayTimeout || resp.errcode() != -1 || resp.header.Get("Content-Type") != jsonContentType {
			t.Errorf("%s uncached: %d %q (%s), want 504 errcode -1 in WeChat's JSON", tc.name, resp.status, resp.body,
				resp.header.Get("Content-Type"))
		}
	}
	if n := h.fake.TotalCalls(); n != 0 {
		t.Fatalf("only-if-cached made %d upstream calls (token included), want 0", n)
	}
	img := h.postJSON(wechat.PathUnlimited, string(body))
	if img.status != http.StatusOK {
		t.Fatalf("plain POST: %d %q", img.status, img.body)
	}
	calls := h.fake.Calls(wechat.PathUnlimited)
	post := h.do(http.MethodPost, wechat.PathUnlimited, "application/json", body, "Cache-Control", "only-if-cached")
	get := h.do(http.MethodGet, "/qrcode?scene=only-if-cached", "", nil, "Cache-Control", "only-if-cached")
	for name, resp := range map[string]response{"POST": post, "GET /qrcode": get} {
		if resp.status != http.StatusOK || string(resp.body) != string(img.body) || resp.header.Get("Cache-Status") != cacheStatusHit {
			t.Errorf("%s cached: %d, Cache-Status %q, %d bytes; want 200, a hit, the image", name, resp.status,
				resp.header.Get("Cache-Status"), len(resp.body))
		}
	}
	if got := h.fake.Calls(wechat.PathUnlimited); got != calls {
		t.Errorf("cached only-if-cached requests made %d upstream calls, want 0", got-calls)
	}
}
