package proxy

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxa-sidecar/wxa-sidecar/upstream"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

func newLinkHarness(t *testing.T) *harness {
	t.Helper()
	return newHarness(t, harnessOptions{cache: true, proxy: func(o *Options) {
		o.Links.Hooks = o.Metrics.LinkHooks()
	}})
}

func (h *harness) linkRequests(endpoint, result string) float64 {
	return testutil.ToFloat64(h.metrics.LinkRequests.WithLabelValues(endpoint, result))
}

func TestSameLinkInThreeSpellingsIsMadeOnce(t *testing.T) {
	h := newLinkHarness(t)
	spellings := []string{
		`{"jump_wxa":{"path":"pages/index/index","query":"id=1"}}`,
		`{"jump_wxa":{"query":"id=1","path":"pages/index/index"}}`,
		`{"jump_wxa":{"path":"pages/index/index","query":"id=1","env_version":"release"},"is_expire":true}`,
	}
	var first string
	for i := range 11 {
		resp := h.postJSON(wechat.PathScheme, spellings[i%3])
		link, _ := jsonField(t, resp.body, "openlink").(string)
		want := cacheStatusHit
		if i == 0 {
			want, first = cacheStatusStored, link
		}
		if resp.status != http.StatusOK || link != first || resp.header.Get("Cache-Status") != want {
			t.Fatalf("ask %d: %d %s %q; want the first link, %q", i, resp.status, resp.body, resp.header.Get("Cache-Status"), want)
		}
		if got := resp.header.Get("Content-Type"); got != "application/json; encoding=utf-8" {
			t.Errorf("Content-Type %q, want WeChat's", got)
		}
	}
	if n := h.fake.Calls(wechat.PathScheme); n != 1 {
		t.Errorf("%d upstream calls, want 1", n)
	}
	other := h.postJSON(wechat.PathScheme, `{"jump_wxa":{"path":"pages/index/index","query":"id=2"}}`)
	if jsonField(t, other.body, "openlink") == first {
		t.Error("another query got the same link")
	}
	if got := h.linkRequests(wechat.PathScheme, "hit"); got != 10 {
		t.Errorf("link_requests_total{hit} %v, want 10", got)
	}
	if got := testutil.ToFloat64(h.metrics.CacheRequests.WithLabelValues("hit")); got != 0 {
		t.Errorf("cache_requests_total{hit} %v: links counted as code images", got)
	}
	if got := testutil.ToFloat64(h.metrics.Requests.WithLabelValues(routeLink, "200")); got != 12 {
		t.Errorf("requests_total{route=link} %v, want 12", got)
	}
}

func TestLinkCallerControls(t *testing.T) {
	h := newLinkHarness(t)
	const body = `{"path":"pages/index/index","query":"a=1"}`
	miss := h.do(http.MethodPost, wechat.PathURLLink, "application/json", []byte(body), "Cache-Control", "only-if-cached")
	if miss.status != http.StatusGatewayTimeout || miss.errcode() != -1 {
		t.Errorf("only-if-cached with nothing kept: %d %s, want 504 errcode -1", miss.status, miss.body)
	}
	if n := h.fake.Calls(wechat.PathURLLink); n != 0 {
		t.Fatalf("only-if-cached reached WeChat %d times", n)
	}
	old := jsonField(t, h.postJSON(wechat.PathURLLink, body).body, "url_link")
	fresh := h.do(http.MethodPost, wechat.PathURLLink, "application/json", []byte(body), "Cache-Control", "no-cache")
	if got := jsonField(t, fresh.body, "url_link"); got == old || fresh.header.Get("Cache-Status") != cacheStatusStored {
		t.Errorf("no-cache: %v %q, want a new link, stored", got, fresh.header.Get("Cache-Status"))
	}
	kept := h.do(http.MethodPost, wechat.PathURLLink, "application/json", []byte(body), "Cache-Control", "only-if-cached")
	if jsonField(t, kept.body, "url_link") != jsonField(t, fresh.body, "url_link") || kept.header.Get("Cache-Status") != cacheStatusHit {
		t.Errorf("after no-cache, only-if-cached: %s %q; want the new link, a hit", kept.body, kept.header.Get("Cache-Status"))
	}
	signed := h.do(http.MethodPost, wechat.PathURLLink, "application/json", []byte(body), "Wechatmp-Signature", "sig")
	if signed.header.Get("Cache-Status") != cacheStatusBypass || jsonField(t, signed.body, "url_link") == jsonField(t, fresh.body, "url_link") {
		t.Errorf("signed: %s %q, want WeChat's own answer, bypassed", signed.body, signed.header.Get("Cache-Status"))
	}
	if n := h.fake.Calls(wechat.PathURLLink); n != 3 {
		t.Errorf("%d upstream calls, want 3 (first, no-cache, signed)", n)
	}
}

func TestLinkRefusalsSpendNothingAndErrorsAreNotKept(t *testing.T) {
	h := newLinkHarness(t)
	ms := `{"expire_time":` + strconv.FormatInt(time.Now().Add(72*time.Hour).UnixMilli(), 10) + `}`
	for _, body := range []string{ms, `{"expire_type":1,"expire_interval":31}`} {
		if resp := h.postJSON(wechat.PathScheme, body); resp.status != 200 || resp.errcode() != 85401 {
			t.Errorf("%s: %d %s, want 85401", body, resp.status, resp.body)
		}
	}
	if n := h.fake.Calls(wechat.PathScheme); n != 0 {
		t.Errorf("%d upstream calls for refused requests", n)
	}
	for range 2 {
		resp := h.postJSON(wechat.PathScheme, `{"jump_wxa":{"path":"nope/missing"}}`)
		if resp.errcode() != 40165 || !strings.Contains(string(resp.body), "rid") {
			t.Errorf("an unknown page: %s, want WeChat's own 40165", resp.body)
		}
	}
	if n := h.fake.Calls(wechat.PathScheme); n != 2 {
		t.Errorf("%d upstream calls for an unknown page asked twice, want 2", n)
	}
}

func TestLinksDailyQuotaIsAnsweredLocallyForBothEndpoints(t *testing.T) {
	h := newLinkHarness(t)
	kept := h.postJSON(wechat.PathScheme, `{"jump_wxa":{"query":"kept=1"}}`)
	h.fake.SetLinkQuotas(wechattest.LinkQuotas{Daily: 1})
	if resp := h.postJSON(wechat.PathURLLink, `{"query":"new=1"}`); resp.errcode() != 44993 {
		t.Fatalf("past the day's quota: %s, want WeChat's 44993", resp.body)
	}
	calls := h.fake.TotalCalls()
	for _, path := range []string{wechat.PathScheme, wechat.PathURLLink} {
		resp := h.postJSON(path, `{"query":"other=1"}`)
		if resp.errcode() != 44993 || resp.header.Get("Retry-After") == "" {
			t.Errorf("%s: %s Retry-After %q, want 44993 answered locally with Retry-After", path, resp.body, resp.header.Get("Retry-After"))
		}
	}
	again := h.postJSON(wechat.PathScheme, `{"jump_wxa":{"query":"kept=1"}}`)
	if again.header.Get("Cache-Status") != cacheStatusHit || jsonField(t, again.body, "openlink") != jsonField(t, kept.body, "openlink") {
		t.Errorf("a kept link during the cool-down: %s %q", again.body, again.header.Get("Cache-Status"))
	}
	if code := h.postJSON(wechat.PathUnlimited, `{"scene":"still"}`); code.status != 200 || code.header.Get("Content-Type") != "image/jpeg" {
		t.Errorf("a code during the links' cool-down: %d %s", code.status, truncate(code.body, 100))
	}
	if n := h.fake.TotalCalls() - calls; n != 1 {
		t.Errorf("%d upstream calls during the cool-down, want 1 (the code)", n)
	}
}

// An answer that is neither an errcode nor a link is a 502, and never kept.
func TestBrokenLinkAnswerIsNotKept(t *testing.T) {
	up := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"errcode":0,"errmsg":"ok"}`))
	}))
	h := newHarness(t, harnessOptions{cache: true, upstream: func(o *upstream.Options) { o.Base = up }})
	for range 2 {
		if resp := h.postJSON(wechat.PathScheme, `{}`); resp.status != http.StatusBadGateway || resp.errcode() != -1 {
			t.Errorf("a success without a link: %d %s, want 502 errcode -1", resp.status, resp.body)
		}
	}
}

// 45009 on short links closes genwxashortlink until midnight; 85400
// closes permanent short links only, for a day, answered locally.
func TestShortLinkQuotas(t *testing.T) {
	h := newLinkHarness(t)
	h.fake.SetLinkQuotas(wechattest.LinkQuotas{Permanent: 1})
	if resp := h.postJSON(wechat.PathShortLink, `{"page_url":"pages/a","is_permanent":true}`); resp.errcode() != 0 {
		t.Fatalf("the first permanent short link: %s", resp.body)
	}
	if resp := h.postJSON(wechat.PathShortLink, `{"page_url":"pages/b","is_permanent":true}`); resp.errcode() != 85400 {
		t.Fatalf("past the lifetime cap: %s, want WeChat's 85400", resp.body)
	}
	calls := h.fake.Calls(wechat.PathShortLink)
	resp := h.postJSON(wechat.PathShortLink, `{"page_url":"pages/c","is_permanent":true}`)
	if resp.errcode() != 85400 || h.fake.Calls(wechat.PathShortLink) != calls {
		t.Errorf("another permanent short link: %s after %d calls, want 85400 answered locally", resp.body, h.fake.Calls(wechat.PathShortLink)-calls)
	}
	if resp := h.postJSON(wechat.PathShortLink, `{"page_url":"pages/a","is_permanent":true}`); resp.errcode() != 0 ||
		resp.header.Get("Cache-Status") != cacheStatusHit {
		t.Errorf("the kept permanent short link: %s %q", resp.body, resp.header.Get("Cache-Status"))
	}
	if resp := h.postJSON(wechat.PathShortLink, `{"page_url":"pages/c"}`); resp.errcode() != 0 {
		t.Errorf("a temporary short link after 85400: %s", resp.body)
	}
	h.fake.SetLinkQuotas(wechattest.LinkQuotas{ShortDaily: 1})
	if resp := h.postJSON(wechat.PathShortLink, `{"page_url":"pages/d"}`); resp.errcode() != 45009 {
		t.Fatalf("past the day's short links: %s, want WeChat's 45009", resp.body)
	}
	calls = h.fake.Calls(wechat.PathShortLink)
	resp = h.postJSON(wechat.PathShortLink, `{"page_url":"pages/e"}`)
	if resp.errcode() != 45009 || resp.header.Get("Retry-After") == "" || h.fake.Calls(wechat.PathShortLink) != calls {
		t.Errorf("during the cool-down: %s Retry-After %q, want 45009 answered locally", resp.body, resp.header.Get("Retry-After"))
	}
	if resp := h.postJSON(wechat.PathScheme, `{}`); resp.errcode() != 0 {
		t.Errorf("a scheme during the short links' cool-down: %s", resp.body)
	}
}
