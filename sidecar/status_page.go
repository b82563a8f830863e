package sidecar

import (
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// statusPageData is what the page shows, already in words and units.
type statusPageData struct {
	Version, Now string
	Ready        bool
	Cache        cacheView
	Apps         []appView
	Limits       []limitView
	Redis        *redisView
	Charts       []chartView
	Others       []statusTable
}

type cacheView struct {
	HitRatio, Lookups, Used, Of string
	UsedPercent                 int
	Entries                     int64
	Results                     []resultView
}

type resultView struct {
	Name  string
	Count string
}

type appView struct {
	App, Mode, Store                         string
	Token, Expires, Fetched, NextRefresh     string
	ExpiresSoon, NoToken                     bool
	Fetches, Errors, Adopted, ForceRefreshes string
	LastError, LastErrorAt                   string
}

type limitView struct {
	App, Endpoint, Rate, Burst, Slots string
	SlotsPercent                      int
	NearEmpty, Unlimited              bool
	Cooldown                          string // "" when none
}

type redisView struct {
	Addr, Breaker string
	Up            bool
}

type chartView struct {
	Title, Total, Peak string
	Bars               []barView
	Width, Height      int
	Danger             bool
}

type barView struct {
	X, Y, W, H float64
	Tip        string
}

// pageOf turns the report into words.
func pageOf(r StatusReport, recent []interval, now time.Time) (statusPageData, error) {
	d := statusPageData{Version: r.Version, Ready: r.Ready, Now: instant(now, now)}
	c := r.Cache
	d.Cache = cacheView{
		HitRatio: "no lookups yet",
		Lookups:  count(sumValues(c.Requests)),
		Used:     bytesIEC(c.Bytes),
		Of:       bytesIEC(c.MaxBytes),
		Entries:  c.Entries,
	}
	if c.MaxBytes > 0 {
		d.Cache.UsedPercent = int(math.Round(100 * float64(c.Bytes) / float64(c.MaxBytes)))
	}
	if total := sumValues(c.Requests); total > 0 {
		d.Cache.HitRatio = strconv.FormatFloat(100*c.HitRatio, 'f', 1, 64) + " %"
	}
	for _, name := range cacheResultOrder(c.Requests) {
		d.Cache.Results = append(d.Cache.Results, resultView{cacheResultWords(name, c.Requests[name]), count(c.Requests[name])})
	}
	for _, a := range r.Apps {
		v := appView{App: a.AppID, Mode: string(a.Mode), Store: a.Store, NoToken: !a.HasToken,
			Fetches: count(float64(a.Fetches)), Errors: count(float64(a.FetchErrors)),
			Adopted: count(float64(a.Adopted)), ForceRefreshes: strconv.Itoa(a.ForceRefreshesToday),
			LastError: a.LastError}
		if a.HasToken {
			v.Token = a.TokenPrefix + "…"
			v.Expires = relative(a.Expiry, now)
			v.ExpiresSoon = !a.Expiry.IsZero() && a.Expiry.Sub(now) < 20*time.Minute
		} else {
			v.Token, v.Expires = "none yet", "—"
		}
		v.Fetched = instant(a.FetchedAt, now)
		v.NextRefresh = instant(a.NextRefresh, now)
		v.LastErrorAt = instant(a.LastErrorAt, now)
		d.Apps = append(d.Apps, v)
	}
	for _, l := range r.Limits {
		v := limitView{App: l.App, Endpoint: l.Endpoint, Unlimited: l.Rate == 0}
		if v.Unlimited {
			v.Rate, v.Burst, v.Slots = "unlimited", "—", "—"
		} else {
			v.Rate = perSecond(l.Rate)
			v.Burst = strconv.Itoa(l.Burst)
			v.Slots = strconv.FormatFloat(math.Floor(l.SlotsAvailable), 'f', 0, 64) + " of " + strconv.Itoa(l.Burst)
			if l.Burst > 0 {
				v.SlotsPercent = int(math.Round(100 * min(max(l.SlotsAvailable, 0), float64(l.Burst)) / float64(l.Burst)))
			}
			v.NearEmpty = v.SlotsPercent < 20
		}
		if l.Cooldown {
			v.Cooldown = fmt.Sprintf("%s (%d): ends %s", quotaName(l.CooldownErrcode), l.CooldownErrcode, instant(l.CooldownUntil, now))
		}
		d.Limits = append(d.Limits, v)
	}
	if r.Redis != nil {
		d.Redis = &redisView{Addr: r.Redis.Addr, Breaker: r.Redis.Breaker, Up: r.Redis.Up}
	}
	d.Charts = charts(recent)
	others, err := otherSections(r)
	if err != nil {
		return d, err
	}
	d.Others = others
	return d, nil
}

// otherSections are the report's fields the page has no layout of its own
// for, each as a generic table, so a new part of /status shows up on the
// page the day it is added.
func otherSections(r StatusReport) ([]statusTable, error) {
	raw, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	fields, err := orderedFields(raw)
	if err != nil {
		return nil, err
	}
	known := map[string]bool{"version": true, "ready": true, "apps": true, "limits": true, "cache": true, "redis": true}
	var out []statusTable
	for _, f := range fields {
		if known[f.name] {
			continue
		}
		// The raw JSON, not a decoded any: a map would sort the fields.
		var v any = f.value
		switch {
		case f.value == "":
			v = nil
		case json.Valid([]byte(f.value)):
			v = json.RawMessage(f.value)
		}
		t, err := tableOf(strings.ToUpper(f.name[:1])+strings.ReplaceAll(f.name[1:], "_", " "), v)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// charts draws requests, cache hits, upstream calls and refusals per
// interval of the last 15 minutes.
func charts(recent []interval) []chartView {
	const width, height = 280, 56
	series := []struct {
		title  string
		danger bool
		value  func(interval) float64
	}{
		{"Requests", false, func(i interval) float64 { return i.Requests }},
		{"Cache hits", false, func(i interval) float64 { return i.CacheHits }},
		{"Calls to WeChat", false, func(i interval) float64 { return i.UpstreamCalls }},
		{"Refusals (45011 locally)", true, func(i interval) float64 { return i.Refusals }},
	}
	var out []chartView
	for _, s := range series {
		c := chartView{Title: s.title, Width: width, Height: height, Danger: s.danger}
		var total, peak float64
		for _, i := range recent {
			v := s.value(i)
			total += v
			peak = max(peak, v)
		}
		c.Total = count(total)
		c.Peak = count(peak)
		slot := float64(width) / float64(historyLen)
		// The newest interval is drawn at the right edge.
		offset := float64(historyLen - len(recent))
		for k, i := range recent {
			v := s.value(i)
			h := 0.0
			if peak > 0 {
				h = math.Max(float64(height-2)*v/peak, 0)
			}
			if v > 0 {
				h = math.Max(h, 1.5)
			}
			c.Bars = append(c.Bars, barView{X: (offset + float64(k)) * slot, Y: float64(height) - h, W: math.Max(slot-1, 1), H: h,
				Tip: fmt.Sprintf("%s in the 10 s to %s UTC", count(v), i.End.UTC().Format("15:04:05"))})
		}
		out = append(out, c)
	}
	return out
}

// quotaName is what a cool-down's errcode means.
func quotaName(code wechat.Errcode) string {
	switch code {
	case wechat.MinuteQuota:
		return "minute quota reached"
	case wechat.DailyQuota:
		return "daily quota reached"
	case wechat.LinksDailyQuota:
		return "daily scheme and URL Link quota reached"
	}
	return "WeChat refused"
}

// cacheResultOrder lists the cache_requests_total results as a person
// reads them: hits first, then misses, then any result a later tier adds.
func cacheResultOrder(m map[string]float64) []string {
	known := []string{"hit", "shared_hit", "miss", "collapsed"}
	var out []string
	for _, name := range known {
		if _, ok := m[name]; ok {
			out = append(out, name)
		}
	}
	for _, name := range sortedKeys(m) {
		if !slices.Contains(known, name) {
			out = append(out, name)
		}
	}
	return out
}

// cacheResultWords names n lookups of a cache_requests_total result in
// words; the label value itself stays in the JSON and the metrics.
func cacheResultWords(result string, n float64) string {
	one := math.Round(n) == 1
	switch result {
	case "hit":
		if one {
			return "hit"
		}
		return "hits"
	case "shared_hit":
		if one {
			return "shared hit (Redis)"
		}
		return "shared hits (Redis)"
	case "miss":
		if one {
			return "miss"
		}
		return "misses"
	}
	return strings.ReplaceAll(result, "_", " ")
}

// instant is t as a person reads it: how long ago or ahead, then the
// local time and WeChat's (UTC+8), to the second.
func instant(t, now time.Time) string {
	if t.IsZero() {
		return "—"
	}
	local := t.Local().Format("2006-01-02 15:04:05 MST")
	china := t.In(wechat.ChinaTime).Format("15:04:05")
	if t.Equal(now) {
		return local + " (" + china + " UTC+8)"
	}
	return relative(t, now) + " · " + local + " (" + china + " UTC+8)"
}

// relative is "in 1 h 59 min" or "3 min ago".
func relative(t, now time.Time) string {
	if t.IsZero() {
		return "—"
	}
	d := t.Sub(now)
	if d >= 0 {
		return "in " + duration(d)
	}
	return duration(-d) + " ago"
}

// duration is d in at most two units: "1 h 59 min", "3 min 5 s", "12 s".
func duration(d time.Duration) string {
	d = d.Round(time.Second)
	units := []struct {
		name string
		size time.Duration
	}{{"d", 24 * time.Hour}, {"h", time.Hour}, {"min", time.Minute}, {"s", time.Second}}
	var parts []string
	for _, u := range units {
		if n := d / u.size; n > 0 || (u.name == "s" && len(parts) == 0) {
			parts = append(parts, fmt.Sprintf("%d %s", n, u.name))
			d -= n * u.size
		}
		if len(parts) == 2 {
			break
		}
		if len(parts) == 1 && d == 0 {
			break
		}
	}
	return strings.Join(parts, " ")
}

// bytesIEC is n in binary units: "141.6 KiB", "256 MiB".
func bytesIEC(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	value, exp := float64(n), 0
	for value >= unit && exp < 5 {
		value /= unit
		exp++
	}
	text := strconv.FormatFloat(value, 'f', 1, 64)
	text = strings.TrimSuffix(text, ".0")
	return text + " " + string("KMGTP"[exp-1]) + "iB"
}

// perSecond is a rate as people say it: "10/s", "0.5/s", "30/min".
func perSecond(r float64) string {
	if r >= 1 {
		return strconv.FormatFloat(r, 'f', -1, 64) + "/s"
	}
	if m := r * 60; m >= 1 {
		return strconv.FormatFloat(math.Round(m*10)/10, 'f', -1, 64) + "/min"
	}
	return strconv.FormatFloat(math.Round(r*3600*10)/10, 'f', -1, 64) + "/h"
}

// count is a whole number with thin spaces between thousands.
func count(v float64) string {
	s := strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteString("\u202f")
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func sumValues(m map[string]float64) float64 {
	var t float64
	for _, v := range m {
		t += v
	}
	return t
}

func sortedKeys(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

var statusPage = template.Must(template.New("status").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="30">
<title>wxa-sidecar {{.Version}}</title>
<style>
*, *::before, *::after { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; padding: 1.2em 1.5em; color: #1d2327; max-width: 1240px; }
h1 { font-size: 1.4em; margin: 0 0 .2em; } h2 { font-size: 1.1em; margin: 1.4em 0 .5em; }
.muted { color: #646970; } .ok { color: #176b2c; font-weight: 600; } .bad { color: #b00020; font-weight: 600; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: .8em; }
.card { border: 1px solid #dcdcde; border-radius: 6px; padding: .7em .9em; min-width: 0; }
.card .big { font-size: 1.6em; font-weight: 600; }
.card.trouble { border-color: #b00020; background: #fff4f4; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
th, td { border-bottom: 1px solid #e4e4e7; padding: .35em .5em; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
th { background: #f6f7f7; font-weight: 600; }
tr.trouble td { background: #fff4f4; }
.bar { height: .7em; background: #e4e4e7; border-radius: 3px; overflow: hidden; margin-top: .25em; }
.bar span { display: block; height: 100%; background: #2271b1; }
.bar.low span { background: #b00020; }
svg { display: block; width: 100%; height: auto; background: #f6f7f7; border-radius: 3px; }
svg rect { fill: #2271b1; } .danger svg rect { fill: #b00020; }
td.id { overflow-wrap: normal; word-break: keep-all; }
.card.chart { display: flex; flex-direction: column; gap: .15em; }
.card.chart .total { font-size: 1.25em; }
.card.chart svg { margin-top: auto; }
.axis { display: flex; justify-content: space-between; font-size: .8em; color: #646970; }
code { background: #f6f7f7; padding: 0 .25em; border-radius: 3px; }
</style>
</head>
<body>
<h1>wxa-sidecar {{.Version}}</h1>
<p>{{if .Ready}}<span class="ok">ready</span>{{else}}<span class="bad">not ready</span>{{end}}
<span class="muted">· {{.Now}} · refreshes every 30 s · the same facts as JSON: <code>curl /status</code></span></p>

<div class="cards">
<div class="card"><div class="muted">Cache hit ratio</div><div class="big">{{.Cache.HitRatio}}</div>
<div class="muted">of {{.Cache.Lookups}} code lookups{{range .Cache.Results}} · {{.Count}} {{.Name}}{{end}}</div></div>
<div class="card"><div class="muted">Local cache</div><div class="big">{{.Cache.Used}}</div>
<div class="muted">of {{.Cache.Of}} · {{.Cache.Entries}} images</div>
<div class="bar"><span style="width: {{.Cache.UsedPercent}}%"></span></div></div>
{{with .Redis}}<div class="card{{if not .Up}} trouble{{end}}"><div class="muted">Redis (shared tier)</div>
<div class="big">{{if .Up}}<span class="ok">up</span>{{else}}<span class="bad">down</span>{{end}}</div>
<div class="muted">{{.Addr}} · breaker {{.Breaker}}</div></div>{{end}}
</div>

<h2>The last 15 minutes</h2>
<div class="cards">
{{range .Charts}}<div class="card chart{{if .Danger}} danger{{end}}"><div class="muted">{{.Title}}</div>
<div><strong class="total">{{.Total}}</strong> <span class="muted">in 15 min · peak {{.Peak}} per 10 s</span></div>
<svg viewBox="0 0 {{.Width}} {{.Height}}" role="img" aria-label="{{.Title}} per 10 seconds">{{range .Bars}}<rect x="{{printf "%.1f" .X}}" y="{{printf "%.1f" .Y}}" width="{{printf "%.1f" .W}}" height="{{printf "%.1f" .H}}"><title>{{.Tip}}</title></rect>{{end}}</svg>
<div class="axis"><span>15 min ago</span><span>now</span></div></div>
{{end}}</div>

<h2>Apps and their tokens</h2>
<table>
<tr><th style="width:16%">app</th><th style="width:10%">mode</th><th style="width:12%">token expires</th><th>fetched</th><th>next refresh</th><th style="width:15%">fetches · errors · adopted · forced today</th></tr>
{{range .Apps}}<tr{{if or .ExpiresSoon .NoToken .LastError}} class="trouble"{{end}}><td class="id">{{.App}}</td><td>{{.Mode}} <span class="muted">({{.Store}})</span></td>
<td>{{if .ExpiresSoon}}<span class="bad">{{.Expires}}</span>{{else}}{{.Expires}}{{end}}</td><td>{{.Fetched}}</td><td>{{.NextRefresh}}</td>
<td>{{.Fetches}} · {{.Errors}} · {{.Adopted}} · {{.ForceRefreshes}}</td></tr>
{{if .LastError}}<tr class="trouble"><td></td><td colspan="5"><span class="bad">last error</span> {{.LastErrorAt}}: {{.LastError}}</td></tr>{{end}}
{{end}}</table>

<h2>Rate limits and cool-downs</h2>
{{if .Limits}}<table>
<tr><th style="width:16%">app</th><th style="width:22%">endpoint</th><th style="width:8%">rate</th><th style="width:6%">burst</th><th style="width:14%">free slots</th><th>cool-down</th></tr>
{{range .Limits}}<tr{{if or .Cooldown .NearEmpty}} class="trouble"{{end}}><td class="id">{{.App}}</td><td>{{.Endpoint}}</td><td>{{.Rate}}</td><td>{{.Burst}}</td>
<td>{{.Slots}}{{if not .Unlimited}}<div class="bar{{if .NearEmpty}} low{{end}}"><span style="width: {{.SlotsPercent}}%"></span></div>{{end}}</td>
<td>{{if .Cooldown}}<span class="bad">{{.Cooldown}}</span>{{else}}<span class="muted">none</span>{{end}}</td></tr>
{{end}}</table>{{else}}<p class="muted">No call has gone upstream yet.</p>{{end}}

{{range .Others}}<h2>{{.Title}}</h2>
{{if .Rows}}<table>
<tr>{{range .Columns}}<th>{{.}}</th>{{end}}</tr>
{{range .Rows}}<tr>{{range .}}<td>{{.}}</td>{{end}}</tr>
{{end}}</table>
{{else}}<p class="muted">none</p>
{{end}}{{end}}
</body>
</html>
`))
