package e2e

// The status page in a real browser (issue 21): Debian's chromium, driven
// by chromedp, loads /status of a running replica of a two-replica fleet
// on Redis after some traffic, and the test reads what a person would see:
// the rendered text, the page's width at 1280 px, the charts' bars.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"github.com/wxa-sidecar/wxa-sidecar/sidecar"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// updateScreenshot writes the test's screenshot over README's:
//
//	go test -count=1 -run TestStatusPage ./e2e -update-screenshot
var updateScreenshot = flag.Bool("update-screenshot", false, "write the status page's screenshot to docs/img/status-page.png")

// chromium returns Debian's chromium (or another Chromium-like browser),
// skipping t without one, failing it under CI=true, where .ci/run
// installs it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed; .ci/run installs it (apt-get install chromium)")
	}
	t.Skip("chromium not installed (apt-get install chromium)")
	return ""
}

// browse starts a headless chromium that reaches nothing but loopback, in
// a fresh profile, and returns a context for its first tab.
func browse(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	// chromedp's defaults (Puppeteer's: headless, no first run, no
	// background networking, no sync, ...), and more silence.
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		// The closed network refuses Google: ask it nothing.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,AutofillServerCommunication"),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	tab, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancelTab)
	// Start the browser now, so a missing library fails here, named.
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return tab
}

// chartState is one chart as the browser drew it.
type chartState struct {
	Label string `json:"label"`
	Bars  int    `json:"bars"`
	Drawn int    `json:"drawn"` // bars of a height above zero
}

// pageState is what the test reads off the rendered page.
type pageState struct {
	Text         string       `json:"text"`
	ScrollWidth  int          `json:"scrollWidth"`
	ClientWidth  int          `json:"clientWidth"`
	ScrollHeight int          `json:"scrollHeight"`
	Overflowing  []string     `json:"overflowing"` // elements wider than the page
	Charts       []chartState `json:"charts"`
	Trouble      int          `json:"trouble"` // rows and cards marked as trouble
}

const readPage = `(() => {
  const root = document.documentElement;
  const overflowing = [];
  for (const e of document.body.querySelectorAll('*')) {
    const r = e.getBoundingClientRect();
    if (r.right > root.clientWidth + 0.5) overflowing.push(e.tagName.toLowerCase() + (e.className ? '.' + e.className : '') + ' right=' + Math.round(r.right));
  }
  return {
    text: document.body.innerText,
    scrollWidth: root.scrollWidth,
    clientWidth: root.clientWidth,
    scrollHeight: root.scrollHeight,
    overflowing: overflowing.slice(0, 10),
    charts: [...document.querySelectorAll('svg')].map(s => ({
      label: s.getAttribute('aria-label') || '',
      bars: s.querySelectorAll('rect').length,
      drawn: [...s.querySelectorAll('rect')].filter(r => r.getBoundingClientRect().height > 0).length,
    })),
    trouble: document.querySelectorAll('.trouble').length,
  };
})()`

// TestStatusPageInABrowser: after hits, misses, refusals and a cool-down
// on a two-replica fleet, the page fits 1280 px, speaks in units (expiry
// "in 1 h 59 min", KiB and MiB, a hit ratio in %, instants in UTC+8),
// marks the cool-down, shows Redis up, and draws four charts with bars
// once a sample interval has passed; curl still gets the JSON.
func TestStatusPageInABrowser(t *testing.T) {
	buildSidecar(t)
	chromium(t)
	fake := newFleetFake(t, wechattest.Options{})
	rs := redistest.Start(t, redistest.Options{})
	// A small burst and no queueing: the fourth new code in a row is
	// refused (45011 locally), so the refusals chart has a bar.
	rig := startFleet(t, fake, 2, rs.URL, "UPSTREAM_LIMITS="+fleetCodePath+"=60/m:3", "UPSTREAM_MAX_WAIT=0s")
	rig.warmTokens(t)
	p := rig.replicas[0]
	started := time.Now()

	// A code the other replica fetched: a shared hit here, from Redis.
	if a := rig.ask(rig.replicas[1], "browser-shared"); !a.image() {
		t.Fatalf("replica 1: %s", a)
	}
	if a := rig.ask(p, "browser-shared"); !a.image() {
		t.Fatalf("replica 0 after replica 1: %s", a)
	} else if a.cacheStatus != csSharedHit {
		t.Logf("replica 0 after replica 1: Cache-Status %q, not a shared hit", a.cacheStatus)
	}
	var images []string
	refused := 0
	for i := range 6 {
		scene := fmt.Sprintf("browser-%d", i)
		a := rig.ask(p, scene)
		switch {
		case a.image():
			images = append(images, scene)
		case a.errcode == 45011:
			refused++
		default:
			t.Fatalf("code %d: %s", i, a)
		}
	}
	if len(images) == 0 || refused == 0 {
		t.Fatalf("%d images, %d refused: want both, for the charts", len(images), refused)
	}
	for i := range 6 { // hits
		if a := rig.ask(p, images[i%len(images)]); !a.image() {
			t.Fatalf("hit: %s", a)
		}
	}
	// 45009 on getwxacode: the endpoint cools down until midnight UTC+8.
	fake.FailNextErrcode("/wxa/getwxacode", 1, 45009)
	resp, err := rig.client.Post("http://"+p.api+"/wxa/getwxacode", "application/json", strings.NewReader(`{"path":"pages/index?from=browser"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tab := browse(t, ctx)
	if err := chromedp.Do(tab, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatal(err)
	}

	// The history samples every 10 s, the first at start: the traffic
	// above lands in the first interval, drawn once it ends.
	status := "http://" + p.admin + "/status"
	var page pageState
	deadline := started.Add(45 * time.Second)
	for {
		if err := chromedp.Do(tab, chromedp.Navigate(status), chromedp.WaitReady("body")); err != nil {
			t.Fatalf("loading %s: %v", status, err)
		}
		var err error
		if page, err = chromedp.Run(tab, chromedp.Evaluate[pageState](readPage)); err != nil {
			t.Fatalf("reading %s: %v", status, err)
		}
		if len(page.Charts) == 4 && page.Charts[0].Drawn > 0 && page.Charts[3].Drawn > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no bars in the charts %.0f s after the traffic: %+v\n%s", time.Since(started).Seconds(), page.Charts, page.Text)
		}
		time.Sleep(time.Second)
	}
	t.Logf("page %d×%d px, charts %+v", page.ClientWidth, page.ScrollHeight, page.Charts)

	if page.ScrollWidth > page.ClientWidth || len(page.Overflowing) > 0 {
		t.Errorf("the page scrolls sideways at 1280 px: scrollWidth %d > clientWidth %d; too wide: %v",
			page.ScrollWidth, page.ClientWidth, page.Overflowing)
	}
	for _, c := range page.Charts {
		if c.Bars == 0 {
			t.Errorf("chart %q has no bars", c.Label)
		}
	}
	for _, want := range []struct{ what, re string }{
		{"the token's expiry in hours and minutes", `token expires[\s\S]*\bin (1 h 59 min|2 h)\b`},
		{"the cache's size in KiB of its limit in MiB", `Local cache\s+\d+(\.\d)? KiB\s+of \d+ MiB`},
		{"the hit ratio in %", `Cache hit ratio\s+\d+(\.\d)? %`},
		{"instants in UTC+8", `\d\d:\d\d:\d\d UTC\+8`},
		{"the cool-down named, until midnight UTC+8", `daily quota reached \(45009\): ends in [^\n]*\(00:00:00 UTC\+8\)`},
		{"the free slots of a limit", `\d+ of 3\b`},
		{"Redis up", `Redis \(shared tier\)\s+up`},
		{"four charts with their totals", `Requests\s+\d+ in 15 min[\s\S]*Cache hits\s+\d+ in 15 min[\s\S]*Calls to WeChat\s+\d+ in 15 min[\s\S]*Refusals \(45011 locally\)\s+[1-9]\d* in 15 min`},
	} {
		if !regexp.MustCompile(want.re).MatchString(page.Text) {
			t.Errorf("the page lacks %s (/%s/):\n%s", want.what, want.re, page.Text)
		}
	}
	for _, unwanted := range []struct{ what, re string }{
		{"fractions of a second in an instant", `\d\d:\d\d:\d\d\.\d`},
		{"a number with many decimals", `\d\.\d{4,}`},
		{"a raw byte count", `(^|[\s(])\d{6,}`},
		{"an RFC 3339 timestamp", `\d{4}-\d\d-\d\dT\d\d:`},
	} {
		if m := regexp.MustCompile(unwanted.re).FindString(page.Text); m != "" {
			t.Errorf("the page shows %s: %q\n%s", unwanted.what, m, page.Text)
		}
	}
	if page.Trouble == 0 {
		t.Error("nothing marked as trouble, with an endpoint cooling down")
	}

	shot, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(t.TempDir(), "status-page.png")
	if *updateScreenshot {
		name = filepath.Join("..", "docs", "img", "status-page.png")
	}
	if err := os.WriteFile(name, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s, %d KiB", name, len(shot)/1024)

	// curl still gets the JSON, in its own units.
	resp2, body := getWithAccept(t, status, "*/*")
	var report sidecar.StatusReport
	if ct := resp2.Header.Get("Content-Type"); resp2.StatusCode != http.StatusOK || ct != "application/json" {
		t.Fatalf("Accept */*: %d %q, want 200 application/json", resp2.StatusCode, ct)
	}
	if err := json.Unmarshal(body, &report); err != nil {
		t.Fatalf("Accept */*: %v\n%s", err, body)
	}
	var raw struct {
		Apps []struct {
			Expiry           string  `json:"expiry"`
			ExpiresInSeconds float64 `json:"expires_in_seconds"`
		} `json:"apps"`
		Cache struct {
			Bytes    int64 `json:"bytes"`
			MaxBytes int64 `json:"max_bytes"`
		} `json:"cache"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw.Apps) != 1 || raw.Cache.Bytes <= 0 || raw.Cache.MaxBytes <= 0 || raw.Apps[0].ExpiresInSeconds <= 0 || report.Redis == nil || !report.Redis.Up {
		t.Errorf("the JSON lost its raw figures (expiry, seconds, bytes, redis):\n%s", body)
	}
	if _, err := time.Parse(time.RFC3339Nano, raw.Apps[0].Expiry); err != nil {
		t.Errorf("the JSON's expiry %q is no longer RFC 3339: %v", raw.Apps[0].Expiry, err)
	}
	if strings.Contains(string(body), "KiB") || strings.Contains(string(body), "UTC+8") {
		t.Errorf("the JSON carries the page's words:\n%s", body)
	}
}
