package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// summary is what a soak found; summary.json is this.
type summary struct {
	Seed            int64              `json:"seed"`
	DurationSeconds float64            `json:"duration_s"`
	RPS             int                `json:"rps"`
	Replicas        int                `json:"replicas"`
	Limit           string             `json:"code_limit"`
	Machine         string             `json:"machine"`
	LoadAverage     string             `json:"load_average_start_end"`
	Faults          []fault            `json:"faults"`
	ViolationCount  int                `json:"violation_count"`
	Violations      map[string]int     `json:"violations"`
	Examples        []string           `json:"violation_examples,omitempty"`
	Answers         int                `json:"answers"`
	Shed            int                `json:"shed"`
	ByClass         map[string]int     `json:"answers_by_kind_status_class"`
	Transport       map[string]int     `json:"transport_errors"`
	TokenErrors     map[string]int     `json:"token_errors_by_fault,omitempty"`
	TransportOther  []string           `json:"transport_errors_unexplained,omitempty"`
	Latency         map[string]latency `json:"latency"`
	Images          int                `json:"images_checked"`
	DistinctImages  int                `json:"distinct_images_decoded"`
	Drain           []drain            `json:"sigterm_drain,omitempty"`
	Codes           codeStats          `json:"codes"`
	Rate            rateStats          `json:"rate"`
	Metrics         []metricCheck      `json:"metrics_against_wechat"`
	Resources       []resources        `json:"resources"`
	RedisOps        map[string]int     `json:"redis_ops_by_result"`
	// BreakerOpen are the spans (s) in which some replica's Redis breaker
	// was open, injected fault or not.
	BreakerOpen [][2]float64 `json:"redis_breaker_open_s"`
	Notes       []string     `json:"notes,omitempty"`
}

type latency struct {
	N                  int
	P50, P90, P99, Max float64 // milliseconds
}

// drain is what callers in flight at a SIGTERM got.
type drain struct {
	Replica  int      `json:"replica"`
	InFlight int      `json:"in_flight"`
	Answered int      `json:"answered"`
	Dropped  int      `json:"dropped"`
	Errors   []string `json:"errors,omitempty"`
}

type codeStats struct {
	DistinctAsked    int     `json:"distinct_scenes_asked"`
	WithImage        int     `json:"scenes_wechat_drew"`
	ImageCalls       int     `json:"whole_image_calls"`
	CallsPerCode     float64 `json:"whole_image_calls_per_code"`
	Repeats          int     `json:"repeat_image_calls"`
	RepeatsExplained map[string]int
	Unexplained      []string `json:"unexplained_repeats,omitempty"`
	// CallsPerCodeRedisUp leaves out the repeats a Redis kill or pause, or
	// a fetcher stopped before it could store the image, explains.
	CallsPerCodeRedisUp float64 `json:"whole_image_calls_per_code_redis_up"`
	AllCodeCalls        int     `json:"code_calls_all_outcomes"`
}

type rateStats struct {
	Max1s           int     `json:"max_calls_in_1s"`
	Max1sAt         float64 `json:"max_1s_window_at_s"`
	Limit1s         int     `json:"bound_1s"`
	Max10s          int     `json:"max_calls_in_10s"`
	Max10sAt        float64 `json:"max_10s_window_at_s"`
	Limit10s        int     `json:"bound_10s"`
	Over1s, Over10s int     `json:"-"`
}

// metricCheck compares one process's metrics with what WeChat counted
// from it, per endpoint and outcome: "ok" (an image or JSON without an
// errcode), "errcode", "failed" (HTTP 500, a truncated or corrupt image, a
// call given up during a latency spike; the sidecar's http_error, timeout
// and broken_image). Exact when all three agree. Consistent (else a
// violation) when the sidecar counts no more ok or errcode calls than
// WeChat answered and no fewer calls in all: it may count as failed a call
// WeChat answered after the sidecar gave up on it, and a call that failed
// before WeChat's handler ran (a connection that broke on the way).
type metricCheck struct {
	Slot   int            `json:"slot"`
	Inc    int            `json:"incarnation"`
	Live   bool           `json:"live_at_end"`
	WeChat map[string]int `json:"wechat"`
	Metric map[string]int `json:"metrics"`
	// MetricErrs is wxa_sidecar_upstream_errcodes_total by endpoint.
	MetricErrs map[string]int `json:"metric_errcodes"`
	Equal      bool           `json:"exact"`
	Consistent bool           `json:"consistent"`
	// Unseen is how many more calls the sidecar counted than WeChat saw.
	Unseen int `json:"counted_not_seen"`
}

type resources struct {
	Slot          int     `json:"slot"`
	Inc           int     `json:"incarnation"`
	Samples       int     `json:"samples"`
	RSSFirstMiB   float64 `json:"rss_first_mib"`
	RSSMaxMiB     float64 `json:"rss_max_mib"`
	RSSLastMiB    float64 `json:"rss_last_mib"`
	FDsFirst      int     `json:"fds_first"`
	FDsMax        int     `json:"fds_max"`
	FDsLast       int     `json:"fds_last"`
	GoroutinesMin int     `json:"goroutines_first"`
	GoroutinesMax int     `json:"goroutines_max"`
	GoroutinesEnd int     `json:"goroutines_last"`
}

// window is the fault time span with room for its effects: [from, to].
func (f fault) span(grace float64) (float64, float64) { return f.Started - 1, f.Ended + grace }

func (s *soak) summarize() *summary {
	answers := s.load.snapshot()
	calls := s.up.snapshot()
	sum := &summary{Seed: s.cfg.seed, DurationSeconds: s.cfg.duration.Seconds(), RPS: s.cfg.rps,
		Replicas: s.cfg.replicas, Limit: fmt.Sprintf("%d/s:%d", s.cfg.limitN, s.cfg.limitBurst),
		Machine: fmt.Sprintf("%d CPUs, %s/%s", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH),
		Faults:  s.faults, Answers: len(answers), ByClass: map[string]int{}, Transport: map[string]int{},
		Latency: map[string]latency{}, LoadAverage: s.loadAtStart + " / " + loadAverage()}
	s.load.mu.Lock()
	sum.Shed = s.load.shed
	distinctAsked := s.load.newAsked
	s.load.mu.Unlock()

	// Answers by kind, status and class.
	var all, images []float64
	for _, a := range answers {
		key := kindNames[a.Kind] + " " + a.Class
		if a.Class != "transport" {
			key = kindNames[a.Kind] + " " + strconv.Itoa(int(a.Status)) + " " + a.Class
		}
		if a.Class == "errcode" {
			key += " " + strconv.Itoa(int(a.Errcode))
		}
		sum.ByClass[key]++
		all = append(all, float64(a.Took)*1000)
		if a.Class == "image" {
			images = append(images, float64(a.Took)*1000)
		}
	}
	sum.Latency["all_answers"] = percentiles(all)
	sum.Latency["images"] = percentiles(images)

	// Token errors by the token fault whose aftermath they ended in.
	for _, a := range answers {
		if a.Class != "errcode" || !isTokenError(int(a.Errcode)) {
			continue
		}
		if sum.TokenErrors == nil {
			sum.TokenErrors = map[string]int{}
		}
		end, why := float64(a.At+a.Took), "no token fault in the 20 s before"
		for _, f := range s.faults {
			if group(f.Kind) == "token" && f.Started > 0 && in(end, f.Started, f.Ended+20) {
				why = fmt.Sprintf("%s at %.1f s (or 20 s after it ended)", f.Kind, f.Started)
			}
		}
		sum.TokenErrors[why]++
	}

	// Transport errors: at a replica's stop, or not.
	stops := s.replicaStops()
	drains := map[int]*drain{}
	for _, a := range answers {
		start, end := float64(a.At), float64(a.At+a.Took)
		for i, st := range stops {
			if int(a.Slot) != st.Replica {
				continue
			}
			if start < st.Started && end > st.Started && st.Kind == kReplicaTerm {
				d := drains[i]
				if d == nil {
					d = &drain{Replica: st.Replica}
					drains[i] = d
				}
				d.InFlight++
				if a.Class == "transport" {
					d.Dropped++
					if len(d.Errors) < 5 {
						d.Errors = append(d.Errors, fmt.Sprintf("sent %.3f s, SIGTERM %.3f s: %s", a.At, st.Started, a.Err))
					}
				} else {
					d.Answered++
				}
			}
		}
		if a.Class != "transport" {
			continue
		}
		why := "unexplained"
		for _, st := range stops {
			if int(a.Slot) != st.Replica || end < st.Started-0.5 || start > st.Ended+0.5 {
				continue
			}
			if start < st.Started {
				why = "in flight at " + st.Kind
			} else {
				why = "sent while the replica was down"
			}
			break
		}
		sum.Transport[why]++
		if why == "unexplained" && len(sum.TransportOther) < 20 {
			sum.TransportOther = append(sum.TransportOther, fmt.Sprintf("%.2f s (took %.2f s) replica %d %s: %s",
				a.At, a.Took, a.Slot, kindNames[a.Kind], a.Err))
		}
	}
	for _, i := range slices.Sorted(maps.Keys(drains)) {
		sum.Drain = append(sum.Drain, *drains[i])
	}

	sum.Codes = s.codeStats(calls, distinctAsked)
	sum.Rate = s.rateStats(calls)
	if sum.Rate.Over1s > 0 {
		s.chk.violate("rate_1s", fmt.Sprintf("%d calls to WeChat in the 1 s from %.1f s; the bound is %d",
			sum.Rate.Max1s, sum.Rate.Max1sAt, sum.Rate.Limit1s))
	}
	if sum.Rate.Over10s > 0 {
		s.chk.violate("rate_10s", fmt.Sprintf("%d calls to WeChat in the 10 s from %.1f s; the bound is %d",
			sum.Rate.Max10s, sum.Rate.Max10sAt, sum.Rate.Limit10s))
	}
	sum.Metrics = s.metricChecks(calls)
	for _, m := range sum.Metrics {
		if m.Live && !m.Consistent {
			s.chk.violate("metrics_mismatch", fmt.Sprintf("replica %d (incarnation %d): WeChat counted %v, its metrics %v, errcodes %v",
				m.Slot, m.Inc, m.WeChat, m.Metric, m.MetricErrs))
		}
	}
	sum.Resources = s.resourceStats()
	sum.BreakerOpen = s.breakerOpen()
	sum.RedisOps = map[string]int{}
	s.mu.Lock()
	for _, m := range s.metrics {
		for series, v := range m {
			if strings.HasPrefix(series, "wxa_sidecar_redis_requests_total{") {
				sum.RedisOps[label(series, "op")+" "+label(series, "result")] += int(v)
			}
		}
	}
	s.mu.Unlock()

	s.chk.mu.Lock()
	sum.Violations = maps.Clone(s.chk.violations)
	sum.Examples = slices.Clone(s.chk.examples)
	sum.Images = s.chk.images
	sum.DistinctImages = len(s.chk.decoded)
	s.chk.mu.Unlock()
	for _, v := range sum.Violations {
		sum.ViolationCount += v
	}
	s.mu.Lock()
	sum.Notes = slices.Clone(s.notes)
	s.mu.Unlock()
	return sum
}

// loadAverage is /proc/loadavg's 1, 5 and 15 minute figures: what else
// the machine was doing is in every figure.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(data)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

func percentiles(ms []float64) latency {
	if len(ms) == 0 {
		return latency{}
	}
	slices.Sort(ms)
	q := func(p float64) float64 { return round1(ms[min(len(ms)-1, int(p*float64(len(ms))))]) }
	return latency{N: len(ms), P50: q(0.5), P90: q(0.9), P99: q(0.99), Max: round1(ms[len(ms)-1])}
}

func round1(x float64) float64 { return math.Round(x*10) / 10 }

func (s *soak) replicaStops() []fault {
	var out []fault
	for _, f := range s.faults {
		if group(f.Kind) == "replica" && f.Started > 0 {
			out = append(out, f)
		}
	}
	return out
}

// codeStats counts the whole images WeChat drew per scene and explains
// each repeat: Redis lost the entry (a kill between the two calls), Redis
// was in trouble at either call, or the process that made the earlier call
// was stopped soon after it (before it could store the image).
func (s *soak) codeStats(calls []call, asked int) codeStats {
	cs := codeStats{DistinctAsked: asked, RepeatsExplained: map[string]int{}}
	breaker := s.breakerOpen()
	last := map[string]call{}
	for _, c := range calls {
		if c.Path != codePath {
			continue
		}
		cs.AllCodeCalls++
		if c.Outcome != "image" || c.At < 0 {
			continue
		}
		cs.ImageCalls++
		prev, seen := last[c.Scene]
		last[c.Scene] = c
		if !seen {
			cs.WithImage++
			continue
		}
		cs.Repeats++
		why := s.explain(prev, c, breaker)
		if why == "" {
			why = "unexplained"
			if len(cs.Unexplained) < 20 {
				cs.Unexplained = append(cs.Unexplained, fmt.Sprintf("scene %s: replica %d at %.2f s, again replica %d at %.2f s",
					c.Scene, prev.Slot, prev.At, c.Slot, c.At))
			}
		}
		cs.RepeatsExplained[why]++
	}
	if cs.WithImage > 0 {
		cs.CallsPerCode = float64(cs.ImageCalls) / float64(cs.WithImage)
		redisUp := cs.ImageCalls
		for why, n := range cs.RepeatsExplained {
			if strings.HasPrefix(why, "redis") || why == "the earlier fetcher was stopped" {
				// "redis ..." includes a breaker open without a fault.
				redisUp -= n
			}
		}
		cs.CallsPerCodeRedisUp = float64(redisUp) / float64(cs.WithImage)
	}
	return cs
}

// breakerOpen returns the spans in which some replica's Redis breaker was
// open (wxa_sidecar_redis_up 0), merged, from the once-a-second samples.
func (s *soak) breakerOpen() [][2]float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var at []float64
	for _, smp := range s.samples {
		if !smp.RedisUp {
			at = append(at, smp.At)
		}
	}
	sort.Float64s(at)
	var spans [][2]float64
	for _, t := range at {
		if n := len(spans); n > 0 && t <= spans[n-1][1]+1.5 {
			spans[n-1][1] = t
			continue
		}
		spans = append(spans, [2]float64{t, t})
	}
	return spans
}

// explain says why WeChat drew a scene again at c after prev, or "".
func (s *soak) explain(prev, c call, breaker [][2]float64) string {
	// Redis first: it is what the fleet shares images through.
	for _, f := range s.faults {
		if f.Kind == kRedisKill && f.Started > prev.At && f.Started <= c.At {
			return "redis killed between the calls"
		}
	}
	for _, f := range s.faults {
		from, to := f.span(10)
		if (f.Kind == kRedisKill || f.Kind == kRedisPause) && f.Started > 0 && (in(c.At, from, to) || in(prev.At, from, to)) {
			return "redis in trouble (" + f.Kind + ", or 10 s after)"
		}
	}
	for _, b := range breaker {
		if in(c.At, b[0]-1, b[1]+10) || in(prev.At, b[0]-1, b[1]+10) {
			return "redis breaker open in a replica (or 10 s after)"
		}
	}
	for _, f := range s.faults {
		if group(f.Kind) == "replica" && f.Started > 0 && f.Replica == prev.Slot && in(f.Started, prev.At-1, prev.At+15) {
			return "the earlier fetcher was stopped"
		}
	}
	for _, f := range s.faults {
		from, to := f.span(5)
		if f.Started > 0 && group(f.Kind) != "redis" && (in(c.At, from, to) || in(prev.At, from, to)) {
			return "during " + f.Kind + " (or 5 s after)"
		}
	}
	return ""
}

func in(x, from, to float64) bool { return x >= from && x <= to }

// rateStats finds the most calls to the code endpoint in any window of
// 1 s and 10 s (each window starting at a call).
func (s *soak) rateStats(calls []call) rateStats {
	var at []float64
	for _, c := range calls {
		if c.Path == codePath && c.At >= 0 {
			at = append(at, c.At)
		}
	}
	sort.Float64s(at)
	refill := s.cfg.limitN - s.cfg.limitBurst
	rs := rateStats{Limit1s: refill + s.cfg.limitBurst + 2, Limit10s: 10*refill + s.cfg.limitBurst + 2}
	rs.Max1s, rs.Max1sAt, rs.Over1s = maxWindow(at, 1, rs.Limit1s)
	rs.Max10s, rs.Max10sAt, rs.Over10s = maxWindow(at, 10, rs.Limit10s)
	return rs
}

// maxWindow returns the most events of sorted at in any window [t, t+w),
// where the first such window starts, and how many windows exceed bound.
func maxWindow(at []float64, w float64, bound int) (most int, from float64, over int) {
	j := 0
	for i := range at {
		for j < len(at) && at[j] < at[i]+w {
			j++
		}
		if n := j - i; n > most {
			most, from = n, at[i]
		}
		if j-i > bound {
			over++
		}
	}
	return most, round1(from), over
}

// metricChecks compares each process's upstream metrics, as last scraped,
// with the calls WeChat received from it. Only the processes alive at the
// end were scraped after their last call; a stopped one may have made
// calls after its last scrape.
func (s *soak) metricChecks(calls []call) []metricCheck {
	wechat := map[incarnation]map[string]int{}
	for _, c := range calls {
		k := incarnation{c.Slot, c.Inc}
		if wechat[k] == nil {
			wechat[k] = map[string]int{}
		}
		class := "failed"
		switch c.Outcome {
		case "image", "ok_json":
			class = "ok"
		case "errcode":
			class = "errcode"
		}
		wechat[k][c.Path+" "+class]++
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := slices.Collect(maps.Keys(s.metrics))
	for k := range wechat {
		if _, ok := s.metrics[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b incarnation) int { return cmp.Or(cmp.Compare(a.Slot, b.Slot), cmp.Compare(a.Inc, b.Inc)) })
	var out []metricCheck
	for _, k := range keys {
		mc := metricCheck{Slot: k.Slot, Inc: k.Inc, WeChat: wechat[k], Metric: map[string]int{},
			MetricErrs: toInts(s.metrics[k].byLabel("wxa_sidecar_upstream_errcodes_total", "endpoint"))}
		if mc.WeChat == nil {
			mc.WeChat = map[string]int{}
		}
		for series, v := range s.metrics[k] {
			if !strings.HasPrefix(series, "wxa_sidecar_upstream_requests_total{") || v == 0 {
				continue
			}
			class := label(series, "outcome")
			if class != "ok" && class != "errcode" {
				class = "failed"
			}
			mc.Metric[label(series, "endpoint")+" "+class] += int(v)
		}
		r := s.reps[k.Slot]
		r.mu.Lock()
		mc.Live = r.inc == k.Inc && r.p != nil && r.p.alive()
		r.mu.Unlock()
		if mc.Live && s.scrapedAt[k].Before(s.quiet) {
			mc.Live = false
			s.notes = append(s.notes, fmt.Sprintf("replica %d: its metrics could not be read at the end", k.Slot))
		}
		mc.Equal, mc.Consistent = maps.Equal(mc.WeChat, mc.Metric), true
		totals := map[string][2]int{}
		for key, w := range mc.WeChat {
			ep, class, _ := strings.Cut(key, " ")
			m := mc.Metric[key]
			if class != "failed" && m > w {
				mc.Consistent = false
			}
			t := totals[ep]
			totals[ep] = [2]int{t[0] + w, t[1]}
		}
		for key, m := range mc.Metric {
			ep, class, _ := strings.Cut(key, " ")
			if class != "failed" && m > mc.WeChat[key] {
				mc.Consistent = false
			}
			t := totals[ep]
			totals[ep] = [2]int{t[0], t[1] + m}
		}
		for _, t := range totals {
			if t[1] < t[0] {
				mc.Consistent = false
			}
			mc.Unseen += t[1] - t[0]
		}
		// The errcodes counted by endpoint are the calls with an errcode
		// outcome: the sidecar's two metrics agree with each other.
		for ep, n := range mc.MetricErrs {
			if mc.Metric[ep+" errcode"] != n {
				mc.Equal, mc.Consistent = false, false
			}
		}
		out = append(out, mc)
	}
	return out
}

func toInts(m map[string]float64) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		if v != 0 {
			out[k] = int(v)
		}
	}
	return out
}

func (s *soak) resourceStats() []resources {
	s.mu.Lock()
	defer s.mu.Unlock()
	by := map[incarnation][]sample{}
	for _, smp := range s.samples {
		k := incarnation{smp.Slot, smp.Inc}
		by[k] = append(by[k], smp)
	}
	var out []resources
	keys := slices.SortedFunc(maps.Keys(by), func(a, b incarnation) int {
		return cmp.Or(cmp.Compare(a.Slot, b.Slot), cmp.Compare(a.Inc, b.Inc))
	})
	mib := func(b int64) float64 { return round1(float64(b) / (1 << 20)) }
	for _, k := range keys {
		ss := by[k]
		first, last := ss[0], ss[len(ss)-1]
		r := resources{Slot: k.Slot, Inc: k.Inc, Samples: len(ss), RSSFirstMiB: mib(first.RSS), RSSLastMiB: mib(last.RSS),
			FDsFirst: first.FDs, FDsLast: last.FDs, GoroutinesMin: first.Goroutines, GoroutinesEnd: last.Goroutines}
		for _, x := range ss {
			r.RSSMaxMiB = max(r.RSSMaxMiB, mib(x.RSS))
			r.FDsMax = max(r.FDsMax, x.FDs)
			r.GoroutinesMax = max(r.GoroutinesMax, x.Goroutines)
		}
		out = append(out, r)
	}
	return out
}

// print writes the summary for a reader.
func (s *soak) print(sum *summary) {
	p := func(format string, args ...any) { fmt.Fprintf(s.w, format+"\n", args...) }
	p("\n## Soak: seed %d, %.0f s, %d requests/s, %d replicas, code limit %s (%s; load average %s)", sum.Seed,
		sum.DurationSeconds, sum.RPS, sum.Replicas, sum.Limit, sum.Machine, sum.LoadAverage)
	p("\nfaults:")
	for _, f := range sum.Faults {
		p("  %6.1f-%6.1f s  %-17s %s %s", f.Started, f.Ended, f.Kind, describeFault(f), f.Note)
	}
	p("\nanswers: %d (%d not sent: every worker busy or no replica up)", sum.Answers, sum.Shed)
	for _, k := range slices.Sorted(maps.Keys(sum.ByClass)) {
		p("  %-40s %7d", k, sum.ByClass[k])
	}
	if len(sum.Transport) > 0 {
		p("transport errors:")
		for _, k := range slices.Sorted(maps.Keys(sum.Transport)) {
			p("  %-40s %7d", k, sum.Transport[k])
		}
		for _, e := range sum.TransportOther {
			p("    %s", e)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(sum.TokenErrors)) {
		p("token errors seen by callers, %s: %d", k, sum.TokenErrors[k])
	}
	for _, d := range sum.Drain {
		p("SIGTERM of replica %d: %d requests in flight, %d answered, %d dropped", d.Replica, d.InFlight, d.Answered, d.Dropped)
		for _, e := range d.Errors {
			p("    %s", e)
		}
	}
	p("latency (ms):")
	for _, k := range slices.Sorted(maps.Keys(sum.Latency)) {
		l := sum.Latency[k]
		p("  %-12s n=%d p50 %.1f  p90 %.1f  p99 %.1f  max %.1f", k, l.N, l.P50, l.P90, l.P99, l.Max)
	}
	c := sum.Codes
	p("codes: %d scenes asked, %d drawn by WeChat, %d whole-image calls (%.4f per code; %.4f leaving out the repeats Redis trouble or a stopped fetcher explains), %d code calls in all",
		c.DistinctAsked, c.WithImage, c.ImageCalls, c.CallsPerCode, c.CallsPerCodeRedisUp, c.AllCodeCalls)
	for _, k := range slices.Sorted(maps.Keys(c.RepeatsExplained)) {
		p("  repeats, %-38s %d", k+":", c.RepeatsExplained[k])
	}
	for _, u := range c.Unexplained {
		p("    %s", u)
	}
	r := sum.Rate
	p("rate of code calls reaching WeChat: max %d in 1 s (at %.1f s; bound %d), max %d in 10 s (at %.1f s; bound %d)",
		r.Max1s, r.Max1sAt, r.Limit1s, r.Max10s, r.Max10sAt, r.Limit10s)
	p("metrics against WeChat's counts:")
	for _, m := range sum.Metrics {
		state := "stopped or not read at the end (calls after its last scrape are not in it)"
		if m.Live {
			state = "live"
		}
		verdict := fmt.Sprintf("exact=%v consistent=%v, counted but not seen by WeChat %d", m.Equal, m.Consistent, m.Unseen)
		if !m.Live {
			verdict = "not judged"
		}
		p("  replica %d #%d %s: %s\n    WeChat  %v\n    metrics %v", m.Slot, m.Inc, state, verdict, m.WeChat, m.Metric)
	}
	p("resources (RSS MiB first/max/last, fds, goroutines):")
	for _, x := range sum.Resources {
		p("  replica %d #%d: RSS %.1f/%.1f/%.1f  fds %d/%d/%d  goroutines %d/%d/%d  (%d samples)", x.Slot, x.Inc,
			x.RSSFirstMiB, x.RSSMaxMiB, x.RSSLastMiB, x.FDsFirst, x.FDsMax, x.FDsLast, x.GoroutinesMin, x.GoroutinesMax,
			x.GoroutinesEnd, x.Samples)
	}
	var ops []string
	for _, k := range slices.Sorted(maps.Keys(sum.RedisOps)) {
		if sum.RedisOps[k] > 0 {
			ops = append(ops, fmt.Sprintf("%s %d", k, sum.RedisOps[k]))
		}
	}
	p("redis operations (every process's last scrape): %s", strings.Join(ops, ", "))
	var spans []string
	for _, b := range sum.BreakerOpen {
		spans = append(spans, fmt.Sprintf("%.0f-%.0f s", b[0], b[1]))
	}
	p("a replica's Redis breaker open (wxa_sidecar_redis_up 0, sampled each second): %s", strings.Join(spans, ", "))
	for _, n := range sum.Notes {
		p("note: %s", n)
	}
	p("images checked: %d (%d distinct, each decoded)", sum.Images, sum.DistinctImages)
	if sum.ViolationCount == 0 {
		p("\nviolations: none")
		return
	}
	var kinds []string
	for _, k := range slices.Sorted(maps.Keys(sum.Violations)) {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, sum.Violations[k]))
	}
	p("\nVIOLATIONS: %d (%s)", sum.ViolationCount, strings.Join(kinds, ", "))
	for _, e := range sum.Examples {
		p("  %s", e)
	}
}

// write saves summary.json and the plots in cfg.out.
func (s *soak) write(sum *summary) error {
	b, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return fmt.Errorf("soak: %w", err)
	}
	if err := os.WriteFile(filepath.Join(s.cfg.out, "summary.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("soak: %w", err)
	}
	if err := s.dump(); err != nil {
		return err
	}
	return s.plot(sum)
}

// dump writes every call WeChat received and every answer as JSON lines
// into the logs directory, for a closer look.
func (s *soak) dump() error {
	var b strings.Builder
	for _, c := range s.up.snapshot() {
		j, _ := json.Marshal(c)
		b.Write(j)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(filepath.Join(s.dir, "calls.jsonl"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("soak: %w", err)
	}
	b.Reset()
	for _, a := range s.load.snapshot() {
		j, _ := json.Marshal(a)
		b.Write(j)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(filepath.Join(s.dir, "answers.jsonl"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("soak: %w", err)
	}
	return nil
}
