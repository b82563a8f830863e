package sidecar

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/fleet"
	"github.com/wxa-sidecar/wxa-sidecar/metrics"
	"github.com/wxa-sidecar/wxa-sidecar/quota"

	"github.com/wxa-sidecar/wxa-sidecar/token"
)

func TestPrefersHTMLOnlyWhenTextHTMLComesFirst(t *testing.T) {
	for accept, want := range map[string]bool{
		browserAccept:                            true,
		"text/html":                              true,
		"text/html, application/json":            true,
		"":                                       false,
		"*/*":                                    false,
		"application/json":                       false,
		"application/json, text/html":            false,
		"text/html;q=0, application/json":        false,
		"text/*":                                 false,
		"application/xml;q=0.9, text/html;q=0.8": true, // listed before JSON, which is not listed
	} {
		if got := prefersHTML([]string{accept}); got != want {
			t.Errorf("Accept %q: HTML %v, want %v", accept, got, want)
		}
	}
}

// TestStatusPageEscapesWhatItShows: a last error holds WeChat's errmsg,
// text the sidecar did not write.
func TestStatusPageEscapesWhatItShows(t *testing.T) {
	w := httptest.NewRecorder()
	now := time.Date(2026, 12, 6, 5, 48, 27, 994377193, time.UTC)
	writeStatusHTML(w, StatusReport{Version: "v<b>1</b>", Ready: true,
		Apps: []token.Status{{AppID: "wx1", LastError: `<script>alert("x")</script>`, LastErrorAt: now, Store: "memory"}}}, nil, now)
	page := w.Body.String()
	if strings.Contains(page, "<script>") || strings.Contains(page, "<b>1</b>") {
		t.Errorf("the page carries unescaped markup:\n%s", page)
	}
	for _, want := range []string{"&lt;script&gt;", "v&lt;b&gt;1&lt;/b&gt;", `<td class="id">wx1</td>`, "last error", "Cache hit ratio"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(page, "Redis (shared tier)") {
		t.Error("a Redis section without a shared tier")
	}
}

// TestStatusPageSpeaksInUnits: no nanoseconds, no nine decimals, no raw
// byte counts; a hit ratio, free slots as a bar, cool-downs and a down
// Redis marked, and a chart per series.
func TestStatusPageSpeaksInUnits(t *testing.T) {
	now := time.Date(2026, 12, 6, 5, 48, 27, 994377193, time.UTC)
	report := StatusReport{Version: "v1", Ready: true,
		Apps: []token.Status{{AppID: "wx1", Mode: "stable", HasToken: true, TokenPrefix: "83_x", Store: "redis",
			FetchedAt: now.Add(-(2*time.Minute + 3*time.Second + 225*time.Millisecond)), Expiry: now.Add(7197190739225 * time.Nanosecond),
			ExpiresInSeconds: 7197.190739225}},
		Limits: []quota.Status{
			{App: "wx1", Endpoint: "/wxa/getwxacodeunlimit", Rate: 78, Burst: 50, SlotsAvailable: 49.6},
			{App: "wx1", Endpoint: "/wxa/getwxacode", Rate: 0.1, Burst: 10, SlotsAvailable: 1, Cooldown: true,
				CooldownErrcode: 45009, CooldownUntil: time.Date(2026, 12, 6, 16, 0, 0, 0, time.UTC)}},
		Cache: CacheStatus{Stats: cache.Stats{Entries: 3, Bytes: 144960, MaxBytes: 268435456},
			Requests: map[string]float64{"hit": 90, "shared_hit": 5, "miss": 5}, HitRatio: 0.95},
		Redis: &fleet.Status{Addr: "127.0.0.1:6379", Up: false, Breaker: "open"},
	}
	var recent []interval
	for i := range 20 {
		recent = append(recent, interval{End: now.Add(time.Duration(i-20) * historyStep), Requests: float64(i), CacheHits: 1, UpstreamCalls: 2, Refusals: float64(i % 2)})
	}
	w := httptest.NewRecorder()
	writeStatusHTML(w, report, recent, now)
	page := w.Body.String()
	for _, want := range []string{"in 1 h 59 min", "2 min 3 s ago", "141.6 KiB", "256 MiB", "95.0 %",
		"of 100 code lookups · 90 hits · 5 shared hits (Redis) · 5 misses", "78/s", "6/min",
		"49 of 50", `class="bar low"`, "daily quota reached (45009): ends in 10 h 11 min", "13:48:27 UTC&#43;8", `<span class="bad">down</span>`,
		"Requests</div>\n<div><strong class=\"total\">190</strong>", "Refusals (45011 locally)</div>\n<div><strong class=\"total\">10</strong>", "<svg"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	for _, unwanted := range []string{"994377193", "7197.190739225", "144960", "268435456"} {
		if strings.Contains(page, unwanted) {
			t.Errorf("the page shows a raw value %q", unwanted)
		}
	}
	if n := strings.Count(page, "<svg"); n != 4 {
		t.Errorf("%d charts, want 4", n)
	}
	if n := strings.Count(page, "<rect"); n != 4*20 {
		t.Errorf("%d bars, want one per interval per chart (80)", n)
	}
}

// TestStatusPageKeepsASectionsOwnOrder: a part of the report the page has
// no layout for is a table whose columns come in the JSON's order, the
// row's name first, in words.
func TestStatusPageKeepsASectionsOwnOrder(t *testing.T) {
	w := httptest.NewRecorder()
	now := time.Date(2026, 12, 6, 5, 48, 27, 0, time.UTC)
	writeStatusHTML(w, StatusReport{Version: "v1", Ready: true,
		Links: []codes.LinkStats{{Endpoint: "/wxa/generatescheme", Hits: 2, SharedHits: 1, Misses: 1}}}, nil, now)
	page := w.Body.String()
	want := "<tr><th>endpoint</th><th>hits</th><th>shared hits</th><th>store hits</th><th>misses</th><th>collapsed</th><th>stored</th></tr>\n" +
		"<tr><td>/wxa/generatescheme</td><td>2</td><td>1</td><td>0</td><td>1</td><td>0</td><td>0</td></tr>"
	if !strings.Contains(page, want) {
		t.Errorf("the links table is not in the JSON's order, want\n%s\nin\n%s", want, page)
	}
	w = httptest.NewRecorder()
	writeStatusHTML(w, StatusReport{Version: "v1", Cache: CacheStatus{Requests: map[string]float64{"hit": 1, "miss": 1, "shared_hit": 1, "stale_hit": 2}}}, nil, now)
	if want := "of 5 code lookups · 1 hit · 1 shared hit (Redis) · 1 miss · 2 stale hit</div>"; !strings.Contains(w.Body.String(), want) {
		t.Errorf("the lookups are not in words, want %q in\n%s", want, w.Body.String())
	}
}

func TestHumanUnits(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "0 s", 12 * time.Second: "12 s", 185 * time.Second: "3 min 5 s",
		7140 * time.Second: "1 h 59 min", 2 * time.Hour: "2 h", 26*time.Hour + 3*time.Minute: "1 d 2 h", 1499 * time.Millisecond: "1 s"} {
		if got := duration(d); got != want {
			t.Errorf("duration(%v) = %q, want %q", d, got, want)
		}
	}
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1 KiB", 144960: "141.6 KiB", 268435456: "256 MiB", 10 << 30: "10 GiB"} {
		if got := bytesIEC(n); got != want {
			t.Errorf("bytesIEC(%d) = %q, want %q", n, got, want)
		}
	}
	for r, want := range map[float64]string{100: "100/s", 1.5: "1.5/s", 0.5: "30/min", 1.0 / 3600: "1/h"} {
		if got := perSecond(r); got != want {
			t.Errorf("perSecond(%v) = %q, want %q", r, got, want)
		}
	}
	if got := count(1234567); got != "1\u202f234\u202f567" {
		t.Errorf("count = %q", got)
	}
}

func TestHistoryKeepsTheLastFifteenMinutes(t *testing.T) {
	var h history
	start := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	if got := h.intervals(); len(got) != 0 {
		t.Fatalf("empty history has %d intervals", len(got))
	}
	for i := range 200 {
		h.add(start.Add(time.Duration(i)*historyStep), metrics.Totals{Requests: float64(i * i), Refusals: float64(i)})
	}
	got := h.intervals()
	if len(got) != historyLen {
		t.Fatalf("%d intervals, want %d", len(got), historyLen)
	}
	last := got[len(got)-1]
	if last.Requests != float64(199*199-198*198) || last.Refusals != 1 || !last.End.Equal(start.Add(199*historyStep)) {
		t.Errorf("the newest interval is %+v", last)
	}
	if first := got[0]; !first.End.Equal(start.Add(time.Duration(200-historyLen) * historyStep)) {
		t.Errorf("the oldest interval ends %v", first.End)
	}
}

// browserAccept is the Accept header Chromium sends for a page.
const browserAccept = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
