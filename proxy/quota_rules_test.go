package proxy

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxa-sidecar/wxa-sidecar/internal/testclock"
	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// 18:30:15 in China, where WeChat's days begin.
var (
	quotaBase     = time.Date(2026, 11, 24, 10, 30, 15, 0, time.UTC)
	midnightChina = time.Date(2026, 11, 24, 16, 0, 0, 0, time.UTC)
)

func isImage(r response) bool {
	return r.status == http.StatusOK && r.errcode() == 0 && len(r.body) > 0
}

// Past the lifetime cap WeChat refuses only parameters it has not
// generated before: one request's 45029 must not close the endpoint.
func TestLifetimeCapRefusesOnlyThatRequest(t *testing.T) {
	for _, cached := range []bool{false, true} {
		t.Run(fmt.Sprintf("cache=%v", cached), func(t *testing.T) {
			h := newHarness(t, harnessOptions{cache: cached, fakeOpt: wechattest.Options{LifetimeCap: 1}})
			const a, b, c = `{"path":"pages/a"}`, `{"path":"pages/b"}`, `{"path":"pages/c"}`
			if resp := h.postJSON(pathWxacode, a); !isImage(resp) {
				t.Fatalf("A: status %d body %s, want its image", resp.status, truncate(resp.body, 100))
			}
			if resp := h.postJSON(pathWxacode, b); resp.status != http.StatusOK || resp.errcode() != errcodeLifetimeQuota {
				t.Fatalf("B: status %d body %s, want WeChat's 45029", resp.status, resp.body)
			}
			calls := h.fake.Calls(pathWxacode)
			// The same request, spelt differently: the same cache key.
			resp := h.postJSON(pathWxacode, `{ "width": 430, "path": "pages/b" }`)
			if resp.status != http.StatusOK || resp.errcode() != errcodeLifetimeQuota ||
				resp.header.Get("Content-Type") != jsonContentType {
				t.Errorf("B again: status %d Content-Type %q body %s, want 200 JSON 45029",
					resp.status, resp.header.Get("Content-Type"), resp.body)
			}
			if ra := resp.header.Get("Retry-After"); ra != "" {
				t.Errorf("B again: Retry-After %q; no wait lifts a 45029", ra)
			}
			if got := h.fake.Calls(pathWxacode) - calls; got != 0 {
				t.Errorf("B again made %d upstream calls, want 0", got)
			}
			resp = h.postJSON(pathWxacode, a)
			if !isImage(resp) {
				t.Errorf("A again: status %d body %s, want its image", resp.status, truncate(resp.body, 100))
			}
			wantStatus, wantCalls := cacheStatusStored, 1
			if cached {
				wantStatus, wantCalls = cacheStatusHit, 0
			} else {
				wantStatus = cacheStatusMiss
			}
			if got := resp.header.Get("Cache-Status"); got != wantStatus {
				t.Errorf("A again: Cache-Status %q, want %q", got, wantStatus)
			}
			if got := h.fake.Calls(pathWxacode) - calls; got != wantCalls {
				t.Errorf("A again made %d upstream calls, want %d", got, wantCalls)
			}
			calls = h.fake.Calls(pathWxacode)
			if resp := h.postJSON(pathWxacode, c); resp.errcode() != errcodeLifetimeQuota {
				t.Errorf("C: body %s, want WeChat's 45029", resp.body)
			}
			if got := h.fake.Calls(pathWxacode) - calls; got != 1 {
				t.Errorf("C, never asked before, made %d upstream calls, want 1", got)
			}
			if got := testutil.ToFloat64(h.metrics.UpstreamErrcodes.WithLabelValues(pathWxacode, "45029")); got != 2 {
				t.Errorf("upstream_errcodes_total{errcode=45029} = %v, want 2 (B and C; B's local answer is not WeChat's)", got)
			}
			if got := testutil.ToFloat64(h.metrics.QuotaCooldown.WithLabelValues(demoApp, pathWxacode)); got != 0 {
				t.Errorf("quota_cooldown_active = %v, want 0: the endpoint stays open", got)
			}
			for _, s := range h.gate.Status() {
				if s.Cooldown {
					t.Errorf("/status shows a cool-down: %+v", s)
				}
			}
			if got := strings.Count(h.logs.String(), "lifetime cap reached"); got != 1 {
				t.Errorf("%d ERROR lines about the lifetime cap, want 1 per app and endpoint:\n%s", got, h.logs.String())
			}
			if !strings.Contains(h.logs.String(), `"level":"ERROR","msg":"lifetime cap reached`) {
				t.Errorf("the lifetime cap is not logged at ERROR:\n%s", h.logs.String())
			}
		})
	}
}

// A refusal is remembered for CACHE_TTL, no longer: WeChat may lift it.
func TestLifetimeRefusalExpires(t *testing.T) {
	clock := testclock.New(quotaBase)
	h := newHarness(t, harnessOptions{fakeOpt: wechattest.Options{LifetimeCap: 1},
		now: clock.Now, cacheTTL: time.Hour})
	h.postJSON(pathQRCode, `{"path":"pages/a"}`)
	h.postJSON(pathQRCode, `{"path":"pages/b"}`)
	calls := h.fake.Calls(pathQRCode)
	h.postJSON(pathQRCode, `{"path":"pages/b"}`)
	if got := h.fake.Calls(pathQRCode) - calls; got != 0 {
		t.Fatalf("the refusal was not remembered: %d upstream calls", got)
	}
	clock.Set(quotaBase.Add(time.Hour - time.Second))
	h.postJSON(pathQRCode, `{"path":"pages/b"}`)
	if got := h.fake.Calls(pathQRCode) - calls; got != 0 {
		t.Fatalf("the refusal was forgotten before CACHE_TTL: %d upstream calls", got)
	}
	clock.Set(quotaBase.Add(time.Hour))
	if resp := h.postJSON(pathQRCode, `{"path":"pages/b"}`); resp.errcode() != errcodeLifetimeQuota {
		t.Errorf("body %s, want WeChat's 45029", resp.body)
	}
	if got := h.fake.Calls(pathQRCode) - calls; got != 1 {
		t.Errorf("after CACHE_TTL: %d upstream calls, want 1", got)
	}
}

// getwxacode's daily cap of 10,000 answers 45009: the endpoint cools down
// until midnight China time and says so in Retry-After.
func TestDailyCapOnGetwxacodeStartsCooldown(t *testing.T) {
	clock := testclock.New(quotaBase)
	h := newHarness(t, harnessOptions{cache: true, now: clock.Now})
	h.fake.FailNextErrcode(pathWxacode, 1, errcodeDailyQuota)
	if resp := h.postJSON(pathWxacode, `{"path":"pages/a"}`); resp.errcode() != errcodeDailyQuota {
		t.Fatalf("body %s, want WeChat's 45009", resp.body)
	}
	calls := h.fake.Calls(pathWxacode)
	resp := h.postJSON(pathWxacode, `{"path":"pages/other"}`)
	if resp.status != http.StatusOK || resp.errcode() != errcodeDailyQuota {
		t.Errorf("next call: status %d body %s, want 200 errcode 45009 answered locally", resp.status, resp.body)
	}
	if got := h.fake.Calls(pathWxacode) - calls; got != 0 {
		t.Errorf("%d upstream calls during the cool-down, want 0", got)
	}
	want := strconv.Itoa(int(midnightChina.Sub(quotaBase) / time.Second))
	if got := resp.header.Get("Retry-After"); got != want {
		t.Errorf("Retry-After %q, want %q (seconds to midnight China time)", got, want)
	}
	clock.Set(midnightChina)
	if resp := h.postJSON(pathWxacode, `{"path":"pages/other"}`); !isImage(resp) {
		t.Errorf("after midnight: status %d body %s, want the image", resp.status, truncate(resp.body, 100))
	}
}

// 45063 (no permission to generate) will not pass: never retried.
func TestNoPermissionIsNeverRetried(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true})
	h.fake.FailNextErrcode(pathUnlimited, 1, 45063)
	resp := h.postJSON(pathUnlimited, `{"scene":"forbidden"}`)
	if resp.status != http.StatusOK || resp.errcode() != 45063 || resp.header.Get("Content-Type") != jsonContentType {
		t.Errorf("status %d Content-Type %q body %s, want 200 JSON 45063",
			resp.status, resp.header.Get("Content-Type"), resp.body)
	}
	if got := h.fake.Calls(pathUnlimited); got != 1 {
		t.Errorf("%d upstream calls, want exactly 1", got)
	}
	if got := testutil.ToFloat64(h.metrics.UpstreamRetries.WithLabelValues(pathUnlimited)); got != 0 {
		t.Errorf("upstream_retries_total = %v, want 0", got)
	}
}

// SDKs tell an error from an image by the Content-Type; some save an error
// labelled otherwise as the image.
func TestErrcodeAnswerIsAlwaysLabelledJSON(t *testing.T) {
	for _, label := range []string{"text/plain", "application/json:UTF-8", "image/jpeg", "application/json"} {
		t.Run(label, func(t *testing.T) {
			h := newHarness(t, harnessOptions{cache: true})
			h.fake.FailNextErrcodeAs(pathWxacode, 1, 40159, label)
			resp := h.postJSON(pathWxacode, `{"path":"pages/x"}`)
			if resp.errcode() != 40159 || resp.header.Get("Content-Type") != jsonContentType {
				t.Errorf("POST: Content-Type %q body %s, want %q and WeChat's 40159", resp.header.Get("Content-Type"), resp.body, jsonContentType)
			}
			h.fake.FailNextErrcodeAs(pathUnlimited, 1, 41030, label)
			resp = h.get("/qrcode?scene=x&page=pages/new")
			if resp.errcode() != 41030 || resp.header.Get("Content-Type") != jsonContentType {
				t.Errorf("GET /qrcode: Content-Type %q body %s, want %q and WeChat's 41030", resp.header.Get("Content-Type"), resp.body, jsonContentType)
			}
		})
	}
}

// A client told when to come back can pace itself.
func TestLocalQuotaAnswersCarryRetryAfter(t *testing.T) {
	clock := testclock.New(quotaBase)
	h := newHarness(t, harnessOptions{cache: true, now: clock.Now,
		quota: quota.Options{Default: quota.Limit{Rate: 0.01, Burst: 1}}}) // one slot per 100 s
	h.currentToken(demoApp)
	for _, path := range []string{"/wxa/msg_sec_check", pathUnlimited} {
		body := `{"content":"x","scene":"x"}`
		if path == pathUnlimited {
			body = `{"scene":"x"}`
		}
		if resp := h.postJSON(path, body); resp.errcode() != 0 {
			t.Fatalf("%s: first call refused: %s", path, resp.body)
		}
		resp := h.postJSON(path, strings.Replace(body, `"x"`, `"y"`, 1))
		if resp.status != http.StatusOK || resp.errcode() != errcodeMinuteQuota {
			t.Errorf("%s: status %d body %s, want 200 and 45011", path, resp.status, resp.body)
		}
		if got := resp.header.Get("Retry-After"); got != "100" {
			t.Errorf("%s: Retry-After %q, want \"100\" (the next slot)", path, got)
		}
	}
}

// GET /qrcode relays WeChat's own 45009 with the end of the cool-down it
// starts, not a fixed minute.
func TestQRCodeRetryAfterIsTheCooldownsEnd(t *testing.T) {
	clock := testclock.New(quotaBase)
	h := newHarness(t, harnessOptions{cache: true, now: clock.Now})
	h.fake.FailNextErrcode(pathUnlimited, 1, errcodeDailyQuota)
	resp := h.get("/qrcode?scene=first")
	// On getwxacodeunlimit the first 45009 may be the per-minute limit.
	if resp.status != http.StatusTooManyRequests || resp.header.Get("Retry-After") != "45" {
		t.Errorf("first 45009: status %d Retry-After %q, want 429 and 45 (to the next minute)",
			resp.status, resp.header.Get("Retry-After"))
	}
	next := quotaBase.Truncate(time.Minute).Add(time.Minute + time.Second)
	clock.Set(next)
	h.fake.FailNextErrcode(pathUnlimited, 1, errcodeDailyQuota)
	resp = h.get("/qrcode?scene=second")
	want := strconv.Itoa(int(midnightChina.Sub(next) / time.Second))
	if resp.status != http.StatusTooManyRequests || resp.errcode() != errcodeDailyQuota || resp.header.Get("Retry-After") != want {
		t.Errorf("45009 again: status %d errcode %d Retry-After %q, want 429 45009 and %s (to midnight China time)",
			resp.status, resp.errcode(), resp.header.Get("Retry-After"), want)
	}
	// And the cool-down's local answers say the same.
	resp = h.get("/qrcode?scene=third")
	if resp.status != http.StatusTooManyRequests || resp.header.Get("Retry-After") != want {
		t.Errorf("during the cool-down: status %d Retry-After %q, want 429 and %s", resp.status, resp.header.Get("Retry-After"), want)
	}
}
