package sidecar

import (
	"encoding/json"
	"fmt"
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
