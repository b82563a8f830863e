package e2e

// End-to-end tests of the links: the real binary against the
// fake WeChat (in this process), one process alone and three sharing a
// real redis-server. Written against the contract: the endpoints,
// the variables, Cache-Status, the metric and WeChat's errcodes.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// The link endpoints.
const (
	schemePath    = "/wxa/generatescheme"
	urlLinkPath   = "/wxa/generate_urllink"
	shortLinkPath = "/wxa/genwxashortlink"
)

// linkAnswer is what a sidecar answered to one link request.
type linkAnswer struct {
	status      int
	cacheStatus string
	retryAfter  string
	contentType string
	body        string
	errcode     int
	link        string // openlink, url_link or link
	err         error
}

func (a linkAnswer) String() string {
	if a.err != nil {
		return "error: " + a.err.Error()
	}
	return fmt.Sprintf("HTTP %d %q Cache-Status %q: %.200s", a.status, a.contentType, a.cacheStatus, a.body)
}

var linkClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// postLink posts body to p's path with the headers given as name, value
// pairs; safe from any goroutine.
func postLink(p *sidecarProcess, path, body string, header ...string) linkAnswer {
	req, err := http.NewRequest(http.MethodPost, "http://"+p.api+path, strings.NewReader(body))
	if err != nil {
		return linkAnswer{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := linkClient.Do(req)
	if err != nil {
		return linkAnswer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	a := linkAnswer{status: resp.StatusCode, cacheStatus: resp.Header.Get("Cache-Status"),
		retryAfter: resp.Header.Get("Retry-After"), contentType: resp.Header.Get("Content-Type"), body: string(b), err: err}
	var fields struct {
		Errcode  int    `json:"errcode"`
		Openlink string `json:"openlink"`
		URLLink  string `json:"url_link"`
		Link     string `json:"link"`
	}
	if a.err == nil {
		if err := json.Unmarshal(b, &fields); err != nil {
			a.err = fmt.Errorf("HTTP %d, not JSON: %.200s", a.status, b)
		}
	}
	a.errcode, a.link = fields.Errcode, fields.Openlink+fields.URLLink+fields.Link
	return a
}

// mustLink asks for a link and fails unless one came.
func mustLink(t *testing.T, p *sidecarProcess, path, body string, header ...string) linkAnswer {
	t.Helper()
	a := postLink(p, path, body, header...)
	if a.err != nil || a.status != http.StatusOK || a.errcode != 0 || a.link == "" {
		t.Fatalf("%s %s: %v, want a link", path, body, a)
	}
	return a
}

func expireIn(d time.Duration) string { return strconv.FormatInt(time.Now().Add(d).Unix(), 10) }

func TestLinksE2ESameLinkIsMadeOnce(t *testing.T) {
	p, fake := startWithFake(t)
	for _, tc := range []struct {
		path      string
		spellings []string
		other     string
	}{
		{schemePath, []string{
			`{"jump_wxa":{"path":"pages/index/index","query":"id=42"}}`,
			`{"jump_wxa":{"query":"id=42","path":"pages/index/index"}}`,
			`{"jump_wxa":{"path":"pages/index/index","query":"id=42","env_version":"release"},"expire_type":0}`,
		}, `{"jump_wxa":{"path":"pages/index/index","query":"id=43"}}`},
		{urlLinkPath, []string{
			`{"path":"pages/index/index","query":"id=42"}`,
			`{"query":"id=42","path":"pages/index/index"}`,
			`{"path":"pages/index/index","query":"id=42","env_version":"release","is_expire":true}`,
		}, `{"path":"pages/index/index","query":"id=43"}`},
		{shortLinkPath, []string{
			`{"page_url":"pages/index/index?id=42"}`,
			`{"page_title":"","page_url":"pages/index/index?id=42"}`,
			`{"page_url":"pages/index/index?id=42","is_permanent":false}`,
		}, `{"page_url":"pages/index/index?id=43"}`},
	} {
		var first linkAnswer
		for i := range 11 {
			a := mustLink(t, p, tc.path, tc.spellings[i%3])
			switch {
			case i == 0:
				first = a
				if a.cacheStatus != csStored {
					t.Errorf("%s first ask: Cache-Status %q, want %q", tc.path, a.cacheStatus, csStored)
				}
			case a.link != first.link || a.body != first.body || a.cacheStatus != csHit:
				t.Errorf("%s ask %d: %v; want the first answer byte for byte, %q", tc.path, i+1, a, csHit)
			}
		}
		if n := len(fake.LinksMade(tc.path)); n != 1 {
			t.Errorf("%s: %d links made for 11 asks in 3 spellings, want 1", tc.path, n)
		}
		if other := mustLink(t, p, tc.path, tc.other); other.link == first.link {
			t.Errorf("%s: another query got the same link %s", tc.path, other.link)
		}
		if n := fake.Calls(tc.path); n != 2 {
			t.Errorf("%s: %d upstream calls, want 2 (one per distinct link)", tc.path, n)
		}
	}
	m, _ := scrapeFleetMetrics(t, p)
	if v, _ := m.sum("wxa_sidecar_link_requests_total", `endpoint="`+schemePath+`"`, `result="hit"`); v != 10 {
		t.Errorf("link_requests_total{endpoint=%s,result=hit} %v, want 10", schemePath, v)
	}
	if v, _ := m.sum("wxa_sidecar_cache_requests_total"); v != 0 {
		t.Errorf("cache_requests_total %v: link requests counted as code images", v)
	}
	code, body := get(t, "http://"+p.admin+"/status")
	var status struct {
		Links []struct {
			Endpoint string `json:"endpoint"`
			Hits     int    `json:"hits"`
			Misses   int    `json:"misses"`
		} `json:"links"`
	}
	if err := json.Unmarshal(body, &status); code != http.StatusOK || err != nil {
		t.Fatalf("/status: %d %v", code, err)
	}
	found := false
	for _, l := range status.Links {
		if l.Endpoint == schemePath {
			found = l.Hits == 10 && l.Misses == 2
		}
	}
	if !found {
		t.Errorf("/status links %+v, want %s with 10 hits and 2 misses", status.Links, schemePath)
	}
}

func TestLinksE2EExpiry(t *testing.T) {
	p, fake := startWithFake(t, "LINK_MAX_AGE=2s")
	soon := `{"jump_wxa":{"path":"pages/index/index"},"expire_time":` + expireIn(2*time.Minute) + `}`
	if a, b := mustLink(t, p, schemePath, soon), mustLink(t, p, schemePath, soon); a.link == b.link {
		t.Errorf("a link expiring in 2 minutes (within the 10-minute margin) was handed out again: %s", a.link)
	}
	days := `{"jump_wxa":{"path":"pages/index/index"},"expire_time":` + expireIn(72*time.Hour) + `}`
	if a, b := mustLink(t, p, schemePath, days), mustLink(t, p, schemePath, days); a.link != b.link || b.cacheStatus != csHit {
		t.Errorf("a link expiring in 3 days: %s then %v, want it handed out again", a.link, b)
	}
	relative := `{"path":"pages/index/index","expire_type":1,"expire_interval":7}`
	first := mustLink(t, p, urlLinkPath, relative)
	if again := mustLink(t, p, urlLinkPath, relative); again.link != first.link {
		t.Fatalf("a 7-day URL Link asked again at once: %s, want %s", again.link, first.link)
	}
	time.Sleep(3 * time.Second)
	later := mustLink(t, p, urlLinkPath, relative)
	if later.link == first.link || later.cacheStatus != csStored {
		t.Errorf("3 s later with LINK_MAX_AGE=2s: %v, want a new link", later)
	}
	if n := len(fake.LinksMade(schemePath)); n != 3 {
		t.Errorf("%d schemes made, want 3 (two for the 2-minute one, one for the 3-day one)", n)
	}
}

func TestLinksE2ERefusalsSpendNoQuota(t *testing.T) {
	p, fake := startWithFake(t)
	for _, body := range []string{
		`{"jump_wxa":{"path":"pages/index/index"},"expire_time":` + strconv.FormatInt(time.Now().Add(72*time.Hour).UnixMilli(), 10) + `}`,
		`{"jump_wxa":{"path":"pages/index/index"},"expire_type":1,"expire_interval":31}`,
	} {
		if a := postLink(p, schemePath, body); a.status != http.StatusOK || a.errcode != 85401 {
			t.Errorf("%s: %v, want HTTP 200 errcode 85401", body, a)
		}
	}
	if n := fake.Calls(schemePath); n != 0 {
		t.Errorf("%d upstream calls for requests refused locally", n)
	}
	for range 2 {
		a := postLink(p, schemePath, `{"jump_wxa":{"path":"nowhere/index"}}`)
		if a.errcode != 40165 || !strings.Contains(a.body, "rid:") {
			t.Errorf("an unknown page: %v, want WeChat's own 40165", a)
		}
	}
	fake.SetPages([]string{"pages/index/index"})
	if a := postLink(p, schemePath, `{"jump_wxa":{"path":"pages/other/other"}}`); a.errcode != 40165 {
		t.Errorf("a page the app does not have: %v", a)
	}
	if n := fake.Calls(schemePath); n != 3 {
		t.Errorf("%d upstream calls, want 3: an errcode is never kept", n)
	}
}

func TestLinksE2ECallerControls(t *testing.T) {
	p, fake := startWithFake(t)
	const body = `{"jump_wxa":{"path":"pages/index/index","query":"from=e2e"}}`
	if a := postLink(p, schemePath, body, "Cache-Control", "only-if-cached"); a.status != http.StatusGatewayTimeout || a.errcode != -1 {
		t.Errorf("only-if-cached with nothing kept: %v, want 504 errcode -1", a)
	}
	if n := fake.Calls(schemePath); n != 0 {
		t.Fatalf("only-if-cached spent %d calls", n)
	}
	kept := mustLink(t, p, schemePath, body)
	fresh := mustLink(t, p, schemePath, body, "Cache-Control", "no-cache")
	if fresh.link == kept.link || fresh.cacheStatus != csStored {
		t.Errorf("no-cache: %v, want a new link, stored", fresh)
	}
	for _, h := range [][]string{{"Cache-Control", "only-if-cached"}, nil} {
		if a := mustLink(t, p, schemePath, body, h...); a.link != fresh.link || a.cacheStatus != csHit {
			t.Errorf("after no-cache (%v): %v, want the new link, a hit", h, a)
		}
	}
	signed := postLink(p, schemePath, body, "Wechatmp-Signature", "c2lnbmVk", "Wechatmp-Appid", wechattest.DemoAppID,
		"Wechatmp-TimeStamp", strconv.FormatInt(time.Now().Unix(), 10))
	if signed.cacheStatus != "wxa-sidecar; fwd=bypass" || signed.link == fresh.link {
		t.Errorf("signed: %v, want WeChat's answer, bypassed", signed)
	}
	reqs := fake.Requests(schemePath)
	if len(reqs) != 3 || string(reqs[2].Body) != body || reqs[2].Header.Get("Wechatmp-Signature") != "c2lnbmVk" {
		t.Errorf("%d upstream calls; want 3, the signed one byte for byte", len(reqs))
	}
}

func TestLinksE2EDailyQuotaClosesSchemesAndURLLinks(t *testing.T) {
	p, fake := startWithFake(t)
	keptScheme := mustLink(t, p, schemePath, `{"jump_wxa":{"query":"kept=1"}}`)
	keptURL := mustLink(t, p, urlLinkPath, `{"query":"kept=1"}`)
	fake.SetLinkQuotas(wechattest.LinkQuotas{Daily: 2})
	if a := postLink(p, schemePath, `{"jump_wxa":{"query":"new=1"}}`); a.errcode != 44993 {
		t.Fatalf("past the day's 500 000: %v, want WeChat's 44993", a)
	}
	calls := fake.TotalCalls()
	now := time.Now().In(time.FixedZone("UTC+8", 8*3600))
	midnight := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, now.Location())
	for _, tc := range []struct{ path, body string }{
		{schemePath, `{"jump_wxa":{"query":"new=2"}}`}, {urlLinkPath, `{"query":"new=2"}`},
	} {
		a := postLink(p, tc.path, tc.body)
		secs, err := strconv.Atoi(a.retryAfter)
		if a.status != http.StatusOK || a.errcode != 44993 || err != nil || absDuration(time.Duration(secs)*time.Second-time.Until(midnight)) > 5*time.Second {
			t.Errorf("%s during the cool-down: %v Retry-After %q, want 44993 until midnight UTC+8 (%v)", tc.path, a, a.retryAfter, time.Until(midnight).Round(time.Second))
		}
	}
	if a := mustLink(t, p, schemePath, `{"jump_wxa":{"query":"kept=1"}}`); a.link != keptScheme.link || a.cacheStatus != csHit {
		t.Errorf("a kept scheme during the cool-down: %v", a)
	}
	if a := mustLink(t, p, urlLinkPath, `{"query":"kept=1"}`); a.link != keptURL.link {
		t.Errorf("a kept URL Link during the cool-down: %v", a)
	}
	if a := mustLink(t, p, shortLinkPath, `{"page_url":"pages/index/index"}`); a.link == "" {
		t.Errorf("a short link during the cool-down: %v", a)
	}
	resp, err := http.Post("http://"+p.api+"/wxa/getwxacodeunlimit", "application/json", strings.NewReader(`{"scene":"during"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/jpeg" {
		t.Errorf("a code during the links' cool-down: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if n := fake.TotalCalls() - calls; n != 2 {
		t.Errorf("%d upstream calls during the cool-down, want 2 (the short link and the code)", n)
	}
	m, _ := scrapeFleetMetrics(t, p)
	for _, path := range []string{schemePath, urlLinkPath} {
		if v, _ := m.sum("wxa_sidecar_quota_cooldown_active", `endpoint="`+path+`"`); v != 1 {
			t.Errorf("quota_cooldown_active{endpoint=%s} %v, want 1", path, v)
		}
	}
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// Three replicas on one Redis, thirty callers asking for one link at once,
// spread over them, WeChat slow: one upstream call, one link for all.
func TestLinksE2EFleetMakesOneLinkForThirtyCallers(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	fake := newFleetFake(t, wechattest.Options{})
	rig := startFleet(t, fake, 3, srv.URL)
	rig.warmTokens(t)
	fake.SetLatency(700 * time.Millisecond)
	const body = `{"jump_wxa":{"path":"pages/index/index","query":"campaign=spring"},"expire_type":1,"expire_interval":30}`
	answers := make([]linkAnswer, 30)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range answers {
		wg.Go(func() {
			<-start
			answers[i] = postLink(rig.replicas[i%3], schemePath, body)
		})
	}
	close(start)
	wg.Wait()
	statuses := map[string]int{}
	for i, a := range answers {
		if a.err != nil || a.errcode != 0 || a.link != answers[0].link || a.body != answers[0].body {
			t.Errorf("caller %d: %v; want caller 0's answer %s", i, a, answers[0].link)
		}
		statuses[a.cacheStatus]++
	}
	if n := fake.Calls(schemePath); n != 1 {
		t.Errorf("%d upstream calls for 30 concurrent asks over 3 replicas, want 1 (Cache-Status: %v)", n, statuses)
	}
	// Asked again anywhere, it is the same link, from memory or Redis.
	for _, p := range rig.replicas {
		if a := mustLink(t, p, schemePath, body); a.link != answers[0].link {
			t.Errorf("asked again through %s: %s", p.api, a.link)
		}
	}
	fresh := newFleetReplica(t, rig)
	if a := mustLink(t, fresh, schemePath, body); a.link != answers[0].link || a.cacheStatus != csSharedHit {
		t.Errorf("a fourth replica: %v, want the link from Redis (%q)", a, csSharedHit)
	}
	if n := fake.Calls(schemePath); n != 1 {
		t.Errorf("%d upstream calls in all, want 1", n)
	}
}

// newFleetReplica starts one more replica of rig; its token comes before
// the test asks anything of it.
func newFleetReplica(t *testing.T, rig *fleetRig) *sidecarProcess {
	t.Helper()
	p := rig.add(t)
	rig.warmTokens(t)
	return p
}
