package proxy

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// limitsHarness is a proxy whose gate has its own limit for
// getwxacodeunlimit, shown on PathLimits.
func limitsHarness(t *testing.T, apps map[string]string, allowed ...string) *harness {
	t.Helper()
	qo := quota.Options{Default: quota.Limit{Rate: 20, Burst: 10},
		Endpoints: map[string]quota.Limit{pathUnlimited: {Rate: 2, Burst: 3}, "/wxa/msg_sec_check": {}},
		MaxWait:   1500 * time.Millisecond}
	var h *harness
	h = newHarness(t, harnessOptions{apps: apps, quota: qo, proxy: func(o *Options) {
		o.AllowedPaths = allowed
		o.Limits = &Limits{Options: qo, FleetSize: 1, Status: func() []quota.Status { return h.gate.Status() }}
	}})
	return h
}

func decodeLimits(t *testing.T, r response) limitsAnswer {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d %s, want 200", r.status, r.body)
	}
	var ans limitsAnswer
	dec := json.NewDecoder(strings.NewReader(string(r.body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ans); err != nil {
		t.Fatalf("%s: %v", r.body, err)
	}
	return ans
}

// TestLimitsAnswerShowsTheConfiguredLimits: GET /wxa-sidecar/limits is the
// gate's own limits, per app and endpoint, answered by the sidecar, never
// forwarded to WeChat, with no secret or token in it.
func TestLimitsAnswerShowsTheConfiguredLimits(t *testing.T) {
	h := limitsHarness(t, nil)
	tok := h.currentToken(demoApp)
	r := h.get(PathLimits + "?endpoint=" + pathUnlimited)
	ans := decodeLimits(t, r)
	if ans.MaxWaitSeconds != 1.5 || ans.Shared || ans.FleetSize != 1 {
		t.Errorf("answer %s: want max_wait_seconds 1.5, not shared, fleet_size 1", r.body)
	}
	if len(ans.Limits) != 1 || ans.Limits[0] != (limitAnswer{App: demoApp, Endpoint: pathUnlimited, RatePerSecond: 2, Burst: 3}) {
		t.Errorf("limits %+v, want 2/s burst 3 for %s", ans.Limits, pathUnlimited)
	}
	if got := r.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", got)
	}
	all := decodeLimits(t, h.get(PathLimits))
	byEndpoint := map[string]limitAnswer{}
	for _, l := range all.Limits {
		byEndpoint[l.Endpoint] = l
	}
	if len(all.Limits) != len(wechat.KnownEndpoints())+1 {
		t.Errorf("%d limits, want every known endpoint and %q", len(all.Limits), wechat.EndpointOther)
	}
	if l := byEndpoint[wechat.PathWxacode]; l.RatePerSecond != 20 || l.Burst != 10 {
		t.Errorf("getwxacode %+v, want the default 20/s burst 10", l)
	}
	if l := byEndpoint["/wxa/msg_sec_check"]; !l.Unlimited || l.RatePerSecond != 0 {
		t.Errorf("msg_sec_check %+v, want unlimited", l)
	}
	if n := h.fake.TotalCalls(); n != 1 { // the token fetch above
		t.Errorf("%d calls reached WeChat, want only the token fetch", n)
	}
	for _, secret := range []string{wechattest.DemoSecret, tok} {
		if strings.Contains(string(r.body)+string(h.get(PathLimits).body), secret) {
			t.Errorf("the answer holds a secret or the token")
		}
	}
	if r := h.get(PathLimits + "?endpoint=/wxa/nope"); r.status != http.StatusBadRequest || r.errcode() != int(wechat.InvalidArgs) {
		t.Errorf("unknown endpoint: %d %s, want 400 errcode %d", r.status, r.body, wechat.InvalidArgs)
	}
	if r := h.postJSON(PathLimits, `{}`); r.status != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d %s, want 405", r.status, r.body)
	}
}

// TestLimitsAnswerShowsCooldowns: a cool-down WeChat's 45011 started shows
// with its errcode and end, for its app and endpoint only.
func TestLimitsAnswerShowsCooldowns(t *testing.T) {
	h := limitsHarness(t, map[string]string{demoApp: wechattest.DemoSecret, "wx2222222222222222": "secret2"})
	h.fake.FailNextErrcode(pathUnlimited, 1, int(wechat.MinuteQuota))
	if r := h.postJSON("/apps/"+demoApp+pathUnlimited, `{"scene":"a"}`); r.errcode() != int(wechat.MinuteQuota) {
		t.Fatalf("want WeChat's 45011, got %s", r.body)
	}
	ans := decodeLimits(t, h.get("/apps/"+demoApp+PathLimits+"?endpoint="+pathUnlimited))
	if len(ans.Limits) != 1 || ans.Limits[0].Cooldown == nil {
		t.Fatalf("limits %+v, want one with a cool-down", ans.Limits)
	}
	cd := ans.Limits[0].Cooldown
	if cd.Errcode != wechat.MinuteQuota || cd.SecondsLeft <= 0 || cd.SecondsLeft > 60 || cd.Until.Location() != time.UTC {
		t.Errorf("cool-down %+v, want 45011 ending within the minute, in UTC", cd)
	}
	other := decodeLimits(t, h.get("/apps/wx2222222222222222"+PathLimits+"?endpoint="+pathUnlimited))
	if len(other.Limits) != 1 || other.Limits[0].App != "wx2222222222222222" || other.Limits[0].Cooldown != nil {
		t.Errorf("the other app: %+v, want its own limit and no cool-down", other.Limits)
	}
	if both := decodeLimits(t, h.get(PathLimits+"?endpoint="+pathUnlimited)); len(both.Limits) != 2 {
		t.Errorf("without a prefix: %+v, want both apps", both.Limits)
	}
}

// TestLimitsAnswerIsNeverForwarded: without Limits the path is the
// sidecar's 404, not a call to WeChat; ALLOWED_PATHS governs it like every
// path of the API port.
func TestLimitsAnswerIsNeverForwarded(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	if r := h.get(PathLimits); r.status != http.StatusNotFound || r.errcode() != int(wechat.InvalidURL) {
		t.Errorf("no Limits: %d %s, want 404 errcode %d", r.status, r.body, wechat.InvalidURL)
	}
	if n := h.fake.TotalCalls(); n != 0 {
		t.Errorf("%d calls reached WeChat, want none", n)
	}
	h = limitsHarness(t, nil, "/wxa/")
	if r := h.get(PathLimits); r.status != http.StatusForbidden {
		t.Errorf("outside ALLOWED_PATHS: %d %s, want 403", r.status, r.body)
	}
	h = limitsHarness(t, nil, "/wxa/", PathLimits)
	decodeLimits(t, h.get(PathLimits))
}
