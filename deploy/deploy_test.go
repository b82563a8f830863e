package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/wxa-sidecar/wxa-sidecar/fleet"
	"github.com/wxa-sidecar/wxa-sidecar/metrics"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

const (
	alertsFile     = "prometheus/alerts.yaml"
	alertTestsFile = "prometheus/alerts_test.yaml"
	dashboardFile  = "grafana/wxa-sidecar.json"
	// operationsDoc holds the metrics reference, the alerts, the dashboard
	// and the runbooks the alerts link to.
	operationsDoc = "../docs/operations.md"
	// runbookBase is where runbook links point: operationsDoc on GitHub.
	runbookBase = "https://github.com/wxa-sidecar/wxa-sidecar/blob/main/docs/operations.md"
)

// promtoolOrSkip finds promtool on PATH. CI must have it (.ci/run unpacks
// the Debian prometheus package, which ships it); elsewhere the test skips.
func promtoolOrSkip(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is not installed; .ci/run installs it with prometheus")
		}
		t.Skip("promtool not installed (apt-get download prometheus; dpkg -x)")
	}
	return p
}

func runPromtool(t *testing.T, promtool string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(promtool, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// TestAlertRulesPassPromtool: the rules load, and every firing and quiet
// case of alerts_test.yaml holds. .ci/run runs the same two commands as
// steps of their own.
func TestAlertRulesPassPromtool(t *testing.T) {
	promtool := promtoolOrSkip(t)
	if out, err := runPromtool(t, promtool, "check", "rules", alertsFile); err != nil {
		t.Fatalf("promtool check rules %s: %v\n%s", alertsFile, err, out)
	}
	if out, err := runPromtool(t, promtool, "test", "rules", alertTestsFile); err != nil {
		t.Fatalf("promtool test rules %s: %v\n%s", alertTestsFile, err, out)
	}
}

// githubSlug is the anchor GitHub gives a Markdown heading: lower case,
// punctuation dropped, spaces turned into hyphens.
func githubSlug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestRunbookLinksReachTheRunbooks: every runbook_url of the alerts, and
// the dashboard's runbook link, opens a heading of docs/operations.md, and
// no link is left pointing anywhere else in the repository.
func TestRunbookLinksReachTheRunbooks(t *testing.T) {
	doc, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(doc), "\n") {
		if heading, ok := strings.CutPrefix(strings.TrimLeft(line, "#"), " "); ok && strings.HasPrefix(line, "#") {
			anchors[githubSlug(heading)] = true
		}
	}
	if !slices.ContainsFunc(slices.Collect(mapKeys(anchors)), func(a string) bool { return strings.HasPrefix(a, "runbook") }) {
		t.Fatalf("%s has no runbook headings", operationsDoc)
	}
	var links []string
	for _, f := range []string{alertsFile, alertTestsFile, dashboardFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`https://github\.com/wxa-sidecar/wxa-sidecar[^"\s]*`).FindAllString(string(b), -1) {
			anchor, ok := strings.CutPrefix(m, runbookBase+"#")
			if !ok {
				t.Errorf("%s links to %s, want %s#…", f, m, runbookBase)
				continue
			}
			if f != alertTestsFile {
				links = append(links, f+" → #"+anchor)
			}
			if !anchors[anchor] {
				t.Errorf("%s links to #%s, which no heading of %s has", f, anchor, operationsDoc)
			}
		}
	}
	if len(links) < 9 {
		t.Errorf("found %d runbook links, want one per alert and the dashboard's: %v", len(links), links)
	}
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// exportedMetricNames is every name the sidecar's /metrics can show, with
// every part of it registered: the shared tier's, the cache's and token's
// scrape-time gauges, build info, and the Go and process collectors. A
// histogram is its _bucket, _sum and _count series.
func exportedMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	m := metrics.New()
	m.Init([]string{"wxdemo"}, append(wechat.KnownEndpoints(), wechat.EndpointOther))
	m.BuildInfo("test")
	m.ObserveRedis(fleet.Ops, fleet.Results)
	// The durable store's: its latency histogram is not a field of
	// Metrics, so one child makes Gather show it.
	m.ObserveStore(func() float64 { return 0 }).RequestDuration.WithLabelValues("get")
	m.ObserveCache(func() float64 { return 0 }, func() float64 { return 0 })
	m.ObserveTokenExpiry("wxdemo", func() float64 { return 0 })
	names := map[string]bool{}
	add := func(name string, histogram, summary bool) {
		// A histogram has no series under its own name; a summary's
		// quantiles have.
		names[name] = !histogram
		if histogram || summary {
			names[name+"_sum"], names[name+"_count"] = true, true
		}
		if histogram {
			names[name+"_bucket"] = true
		}
	}
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		add(f.GetName(), f.GetType() == dto.MetricType_HISTOGRAM, f.GetType() == dto.MetricType_SUMMARY)
	}
	// A vector nobody has observed yet (the latency histograms) gathers
	// nothing, so the collectors of Metrics are asked for their
	// descriptions too. Desc has no accessor for its name; its String
	// spells it as fqName: "…".
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		c, ok := v.Field(i).Interface().(prometheus.Collector)
		if !ok || v.Field(i).IsNil() {
			continue
		}
		_, histogram := c.(*prometheus.HistogramVec)
		descs := make(chan *prometheus.Desc, 16)
		go func() { c.Describe(descs); close(descs) }()
		for d := range descs {
			match := fqName.FindStringSubmatch(d.String())
			if match == nil {
				t.Fatalf("cannot read the name of %s", d)
			}
			add(match[1], histogram, false)
		}
	}
	return names
}

// promSelector is a metric name in a PromQL expression and the label
// matchers between its braces, as written.
type promSelector struct {
	name, matchers string
}

// promqlKeywords are the words of PromQL that are no metric: binary
// operators and modifiers, and the aggregations, whose parenthesis may come
// after a by (…) or without (…).
var promqlKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"atan2": true, "inf": true, "nan": true, "group_left": true, "group_right": true,
	"sum": true, "min": true, "max": true, "avg": true, "count": true, "group": true, "stddev": true, "stdvar": true,
	"topk": true, "bottomk": true, "quantile": true, "count_values": true, "limitk": true, "limit_ratio": true}

// promqlLabelLists are the words followed by a parenthesised list of label
// names, not of expressions.
var promqlLabelLists = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true}

// metricSelectors lists the metric names an expression reads. It is no
// PromQL parser (promtool checks the syntax): it skips strings, label
// matchers, ranges, numbers and durations, function calls, keywords and
// label lists, and what is left is a metric name.
func metricSelectors(expr string) ([]promSelector, error) {
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	// closing finds the byte that closes the bracket at open, skipping
	// quoted strings.
	closing := func(open int, close byte) (int, error) {
		for i := open + 1; i < len(expr); i++ {
			switch c := expr[i]; {
			case c == close:
				return i, nil
			case c == '"' || c == '\'' || c == '`':
				end := strings.IndexByte(expr[i+1:], c)
				if end < 0 {
					return 0, fmt.Errorf("unclosed string at %d in %q", i, expr)
				}
				i += end + 1
			}
		}
		return 0, fmt.Errorf("unclosed %q at %d in %q", expr[open], open, expr)
	}
	var out []promSelector
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			end := strings.IndexByte(expr[i+1:], c)
			if end < 0 {
				return nil, fmt.Errorf("unclosed string at %d in %q", i, expr)
			}
			i += end + 2
		case c == '{':
			return nil, fmt.Errorf("a selector without a metric name at %d in %q", i, expr)
		case c == '[':
			end, err := closing(i, ']')
			if err != nil {
				return nil, err
			}
			i = end + 1
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '.') {
				i++
			}
		case isIdentStart(c):
			j := i
			for j < len(expr) && isIdent(expr[j]) {
				j++
			}
			word := expr[i:j]
			k := j
			for k < len(expr) && expr[k] == ' ' {
				k++
			}
			var next byte
			if k < len(expr) {
				next = expr[k]
			}
			switch {
			case promqlLabelLists[word] && next == '(':
				end, err := closing(k, ')')
				if err != nil {
					return nil, err
				}
				i = end + 1
			case next == '(' || promqlKeywords[word]:
				i = j
			case next == '{':
				end, err := closing(k, '}')
				if err != nil {
					return nil, err
				}
				out = append(out, promSelector{name: word, matchers: expr[k+1 : end]})
				i = end + 1
			default:
				out = append(out, promSelector{name: word})
				i = j
			}
		default:
			i++
		}
	}
	return out, nil
}

// grafanaVariables are the values the dashboard's variables take for the
// check: Grafana's own and the dashboard's template variables.
var grafanaVariables = strings.NewReplacer(
	"$__rate_interval", "1m",
	"${__rate_interval}", "1m",
	"$__interval", "30s",
	"${__interval}", "30s",
	"$__range", "6h",
	"${__range}", "6h",
	"${namespace}", "shop",
	"$namespace", "shop",
	"${pod}", "shop-api-1|shop-api-2",
	"$pod", "shop-api-1|shop-api-2",
)

type grafanaDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type grafanaPanel struct {
	ID         int                `json:"id"`
	Type       string             `json:"type"`
	Title      string             `json:"title"`
	Datasource *grafanaDatasource `json:"datasource"`
	Targets    []struct {
		Expr       string             `json:"expr"`
		Datasource *grafanaDatasource `json:"datasource"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"` // a collapsed row's
}

type grafanaDashboard struct {
	Title      string `json:"title"`
	UID        string `json:"uid"`
	Templating struct {
		List []struct {
			Name       string             `json:"name"`
			Type       string             `json:"type"`
			Query      json.RawMessage    `json:"query"`
			Datasource *grafanaDatasource `json:"datasource"`
			IncludeAll bool               `json:"includeAll"`
			AllValue   string             `json:"allValue"`
		} `json:"list"`
	} `json:"templating"`
	Panels []grafanaPanel `json:"panels"`
}

// dashboardExpr is one PromQL expression of the dashboard and where.
type dashboardExpr struct {
	where, expr string
	filtered    bool // must select on $namespace and $pod
}

// dashboardExprs checks the dashboard's structure (every query goes to
// $datasource, the namespace and pod variables exist) and returns every
// PromQL expression in it: the panels' and the variables' label_values
// selectors.
func dashboardExprs(raw []byte) ([]dashboardExpr, []string) {
	var d grafanaDashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, []string{fmt.Sprintf("%s: %v", dashboardFile, err)}
	}
	var exprs []dashboardExpr
	var problems []string
	vars := map[string]bool{}
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_]+)\)$`)
	for _, v := range d.Templating.List {
		vars[v.Name+"/"+v.Type] = true
		if v.Type != "query" {
			continue
		}
		if v.Datasource == nil || v.Datasource.UID != "${datasource}" {
			problems = append(problems, fmt.Sprintf("variable %s does not query ${datasource}", v.Name))
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			if err := json.Unmarshal(v.Query, &q.Query); err != nil {
				problems = append(problems, fmt.Sprintf("variable %s: query %s", v.Name, v.Query))
				continue
			}
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			problems = append(problems, fmt.Sprintf("variable %s: %q is not label_values(selector, label)", v.Name, q.Query))
			continue
		}
		exprs = append(exprs, dashboardExpr{where: "variable " + v.Name, expr: m[1]})
	}
	for _, want := range []string{"datasource/datasource", "namespace/query", "pod/query"} {
		if !vars[want] {
			problems = append(problems, "the dashboard lacks the variable "+want)
		}
	}
	ids := map[int]string{}
	var walk func([]grafanaPanel)
	walk = func(panels []grafanaPanel) {
		for _, p := range panels {
			if other, dup := ids[p.ID]; dup {
				problems = append(problems, fmt.Sprintf("panels %q and %q share id %d", other, p.Title, p.ID))
			}
			ids[p.ID] = p.Title
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if len(p.Targets) == 0 {
				problems = append(problems, fmt.Sprintf("panel %q has no query", p.Title))
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				problems = append(problems, fmt.Sprintf("panel %q does not query ${datasource}", p.Title))
			}
			for i, target := range p.Targets {
				if target.Datasource != nil && target.Datasource.UID != "${datasource}" {
					problems = append(problems, fmt.Sprintf("panel %q query %d does not use ${datasource}", p.Title, i))
				}
				exprs = append(exprs, dashboardExpr{where: fmt.Sprintf("panel %q query %d", p.Title, i), expr: target.Expr, filtered: true})
			}
		}
	}
	walk(d.Panels)
	return exprs, problems
}

// dashboardProblems is everything wrong with the dashboard that needs no
// promtool: a metric the sidecar does not export, a selector that ignores
// the namespace or pod chosen, a variable the check does not know, and an
// exported wxa_sidecar family no panel shows.
func dashboardProblems(raw []byte, exported map[string]bool) ([]dashboardExpr, []string) {
	exprs, problems := dashboardExprs(raw)
	shown := map[string]bool{}
	for _, e := range exprs {
		selectors, err := metricSelectors(e.expr)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", e.where, err))
			continue
		}
		if len(selectors) == 0 {
			problems = append(problems, fmt.Sprintf("%s reads no metric: %s", e.where, e.expr))
		}
		for _, s := range selectors {
			if !exported[s.name] {
				problems = append(problems, fmt.Sprintf("%s reads %s, which the sidecar does not export", e.where, s.name))
			}
			shown[s.name] = true
			if e.filtered && (!strings.Contains(s.matchers, `namespace="$namespace"`) || !strings.Contains(s.matchers, `pod=~"$pod"`)) {
				problems = append(problems, fmt.Sprintf(`%s selects %s{%s} without namespace="$namespace" and pod=~"$pod"`, e.where, s.name, s.matchers))
			}
		}
		if rest := grafanaVariables.Replace(e.expr); strings.Contains(rest, "$") {
			problems = append(problems, fmt.Sprintf("%s uses a variable the check does not know: %s", e.where, e.expr))
		}
	}
	for name := range exported {
		family := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if !strings.HasPrefix(name, "wxa_sidecar_") || shown[name] || shown[family+"_bucket"] || shown[family+"_count"] || shown[family] {
			continue
		}
		problems = append(problems, fmt.Sprintf("no panel shows %s", name))
	}
	slices.Sort(problems)
	return exprs, slices.Compact(problems)
}

// promtoolCheckExprs writes the expressions, their variables replaced, as
// recording rules and runs promtool check rules on them; it returns
// promtool's complaint, with which expression each rule was.
func promtoolCheckExprs(t *testing.T, promtool string, exprs []dashboardExpr) error {
	t.Helper()
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []rule
	var legend strings.Builder
	for i, e := range exprs {
		name := fmt.Sprintf("dashboard:expr_%d", i)
		rules = append(rules, rule{Record: name, Expr: grafanaVariables.Replace(e.expr)})
		fmt.Fprintf(&legend, "  %s = %s\n", name, e.where)
	}
	// A rule file is YAML, and JSON is YAML.
	file, err := json.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(path, file, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runPromtool(t, promtool, "check", "rules", path); err != nil {
		return fmt.Errorf("promtool check rules: %v\n%s\n%s", err, out, legend.String())
	}
	return nil
}

// TestDashboard: every expression of the Grafana dashboard, its variables
// replaced by plain values, is valid PromQL to promtool; every metric it
// reads is one the sidecar exports; every selector follows the namespace
// and pod chosen; and every wxa_sidecar family has a panel.
func TestDashboard(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	exprs, problems := dashboardProblems(raw, exportedMetricNames(t))
	for _, p := range problems {
		t.Error(p)
	}
	if len(exprs) < 20 {
		t.Errorf("the dashboard has %d expressions; want the panels the metrics reference calls for", len(exprs))
	}
	promtool := promtoolOrSkip(t)
	if err := promtoolCheckExprs(t, promtool, exprs); err != nil {
		t.Error(err)
	}
}

// TestDashboardCheckCatchesMistakes feeds the checks a dashboard with one
// mistake each: each must be reported.
func TestDashboardCheckCatchesMistakes(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	exported := exportedMetricNames(t)
	const good = `sum by (route) (rate(wxa_sidecar_requests_total{namespace=\"$namespace\", pod=~\"$pod\"}[$__rate_interval]))`
	if !bytes.Contains(raw, []byte(good)) {
		t.Fatalf("%s no longer has the expression this test alters: %s", dashboardFile, good)
	}
	for _, tc := range []struct{ mistake, bad, want string }{
		{"a misspelt metric", `sum by (route) (rate(wxa_sidecar_request_total{namespace=\"$namespace\", pod=~\"$pod\"}[$__rate_interval]))`,
			"wxa_sidecar_request_total, which the sidecar does not export"},
		{"a histogram without its suffix", `sum by (route) (rate(wxa_sidecar_request_duration_seconds{namespace=\"$namespace\", pod=~\"$pod\"}[$__rate_interval]))`,
			"wxa_sidecar_request_duration_seconds, which the sidecar does not export"},
		{"no pod filter", `sum by (route) (rate(wxa_sidecar_requests_total{namespace=\"$namespace\"}[$__rate_interval]))`,
			`without namespace="$namespace" and pod=~"$pod"`},
		{"an unknown variable", `sum by (route) (rate(wxa_sidecar_requests_total{namespace=\"$namespace\", pod=~\"$pod\", app=\"$app\"}[$__rate_interval]))`,
			"uses a variable the check does not know"},
	} {
		_, problems := dashboardProblems(bytes.Replace(raw, []byte(good), []byte(tc.bad), 1), exported)
		if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
			t.Errorf("%s was not reported (want %q); got %q", tc.mistake, tc.want, problems)
		}
	}
	// A family no panel shows.
	_, problems := dashboardProblems(raw, map[string]bool{"wxa_sidecar_newly_added_total": true})
	if !slices.Contains(problems, "no panel shows wxa_sidecar_newly_added_total") {
		t.Errorf("a family without a panel was not reported: %q", problems)
	}
	promtool := promtoolOrSkip(t)
	exprs, _ := dashboardExprs(raw)
	broken := append(slices.Clone(exprs), dashboardExpr{where: "broken", expr: `sum(rate(wxa_sidecar_requests_total[$__rate_interval])`})
	if err := promtoolCheckExprs(t, promtool, broken); err == nil {
		t.Error("promtool accepted an unbalanced expression")
	}
}

func TestMetricSelectors(t *testing.T) {
	for expr, want := range map[string]string{
		`histogram_quantile(0.99, sum by (route, le) (rate(a_bucket{x="}"}[5m])))`:        "a_bucket",
		`a{p="1"} and on (namespace, pod) b or ignoring(result) c > bool 0.5`:             "a b c",
		`sum without (pod) (rate(a[1m] offset 5m)) / on() group_left(app) b{q='x'} * 1e3`: "a b",
		`max by (app, endpoint) (q{ns="$namespace"}) > 0`:                                 "q",
		`absent(wxa_sidecar_build_info)`:                                                  "wxa_sidecar_build_info",
	} {
		selectors, err := metricSelectors(expr)
		if err != nil {
			t.Errorf("%s: %v", expr, err)
			continue
		}
		var names []string
		for _, s := range selectors {
			names = append(names, s.name)
		}
		if got := strings.Join(names, " "); got != want {
			t.Errorf("metricSelectors(%s) = %q, want %q", expr, got, want)
		}
	}
}

// TestDocsPointAtTheAlertsAndDashboard: the documents show no sample rules
// of their own (they would drift); docs/operations.md points at the files
// tested above.
func TestDocsPointAtTheAlertsAndDashboard(t *testing.T) {
	doc, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{alertsFile, dashboardFile} {
		if !bytes.Contains(doc, []byte("deploy/"+f)) {
			t.Errorf("%s does not point at deploy/%s", operationsDoc, f)
		}
	}
}

// TestDashboardPanelsDoNotOverlap: two panels merged from two changes can
// land on the same grid cells; Grafana then draws one over the other.
func TestDashboardPanelsDoNotOverlap(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			ID      int    `json:"id"`
			Title   string `json:"title"`
			GridPos struct{ H, W, X, Y int }
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	owner := map[[2]int]string{}
	for _, p := range d.Panels {
		g := p.GridPos
		if g.X+g.W > 24 {
			t.Errorf("panel %q is wider than the grid: x %d + w %d", p.Title, g.X, g.W)
		}
		for y := g.Y; y < g.Y+g.H; y++ {
			for x := g.X; x < g.X+g.W; x++ {
				if other, ok := owner[[2]int{x, y}]; ok {
					t.Fatalf("panels %q and %q overlap at x %d, y %d", other, p.Title, x, y)
				}
				owner[[2]int{x, y}] = p.Title
			}
		}
	}
}

// TestDocsListEveryMetric: the metrics reference of docs/operations.md has
// a row for every wxa_sidecar_ metric the sidecar exports, and no row for
// a metric it does not.
func TestDocsListEveryMetric(t *testing.T) {
	doc, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	exported := exportedMetricNames(t)
	// Registered only with REDIS_URL, beside the shared tier's others.
	// (exportedMetricNames leaves it out: the dashboard has no panel for
	// it yet.)
	exported["wxa_sidecar_redis_unsealed_total"] = true
	documented := map[string]bool{}
	for line := range strings.SplitSeq(string(doc), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 3 {
			continue
		}
		for _, m := range regexp.MustCompile("`(wxa_sidecar_[a-z_]+)`").FindAllStringSubmatch(cells[1], -1) {
			documented[m[1]] = true
			if _, ok := exported[m[1]]; !ok {
				t.Errorf("%s documents %s, which the sidecar does not export", operationsDoc, m[1])
			}
		}
	}
	for name := range exported {
		if !strings.HasPrefix(name, "wxa_sidecar_") || documented[name] {
			continue
		}
		if base, ok := cutAnySuffix(name, "_bucket", "_sum", "_count"); ok && documented[base] {
			continue // a histogram's series
		}
		t.Errorf("%s has no row for %s", operationsDoc, name)
	}
}

func cutAnySuffix(s string, suffixes ...string) (string, bool) {
	for _, suffix := range suffixes {
		if base, ok := strings.CutSuffix(s, suffix); ok {
			return base, true
		}
	}
	return s, false
}
