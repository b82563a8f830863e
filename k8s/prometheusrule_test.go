package k8s

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// The alert rules have one source, deploy/prometheus/alerts.yaml (checked
// and unit-tested with promtool by the root module's deploy_test.go and by
// .ci/run); components/prometheusrule/prometheusrule.yaml is generated from
// it, comments included, so that both can be read and neither can drift.
var updatePrometheusRule = flag.Bool("update-prometheusrule", false,
	"rewrite components/prometheusrule/prometheusrule.yaml from deploy/prometheus/alerts.yaml")

const (
	alertsFile         = "../deploy/prometheus/alerts.yaml"
	alertTestsFile     = "../deploy/prometheus/alerts_test.yaml"
	prometheusRuleFile = "components/prometheusrule/prometheusrule.yaml"
	runbookPrefix      = "https://github.com/wxa-sidecar/wxa-sidecar/blob/main/docs/operations.md#runbook-"
)

// ruleGroups is a Prometheus rule file, and a PrometheusRule's spec, as far
// as we write them; decoded strictly so a misspelt field fails.
type ruleGroups struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

// prometheusRule is the part of prometheus-operator's CRD we use.
type prometheusRule struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec ruleGroups `json:"spec"`
}

// generatedPrometheusRule is alerts.yaml as a PrometheusRule: its groups,
// comments and all, under spec. The file's leading comment, which speaks of
// the file, is left out.
func generatedPrometheusRule(alerts string) string {
	_, groups, ok := strings.Cut(alerts, "\ngroups:")
	if !ok {
		return ""
	}
	var b strings.Builder
	b.WriteString(`# Generated from deploy/prometheus/alerts.yaml, where the thresholds are
# explained: edit that file, then run, in k8s/,
#   go test -run TestPrometheusRuleIsAlertsYAML -update-prometheusrule .
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: wxa-sidecar
  labels:
    app.kubernetes.io/name: wxa-sidecar
spec:
`)
	for _, line := range strings.Split("groups:"+groups, "\n") {
		if line != "" {
			b.WriteString("  " + line)
		}
		b.WriteString("\n")
	}
	return strings.TrimRight(b.String(), "\n") + "\n"
}

// renderComponentAlone builds a kustomization holding only the named
// component, as a user's overlay that wants just the rules would.
func renderComponentAlone(t *testing.T, component string) []string {
	t.Helper()
	here, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rel, err := filepath.Rel(dir, filepath.Join(here, "components", component))
	if err != nil {
		t.Fatal(err)
	}
	kz := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\ncomponents:\n  - " + rel + "\n"
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kz), 0o644); err != nil {
		t.Fatal(err)
	}
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize with %s alone: %v", component, err)
	}
	out, err := resMap.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(string(out), "\n---\n")
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestPrometheusRuleIsAlertsYAML renders the component and compares the
// PrometheusRule's groups with alerts.yaml's, both parsed: the same rules,
// whatever kustomize does to the text.
func TestPrometheusRuleIsAlertsYAML(t *testing.T) {
	alerts := readFile(t, alertsFile)
	if *updatePrometheusRule {
		generated := generatedPrometheusRule(alerts)
		if generated == "" {
			t.Fatalf("%s has no top-level groups:", alertsFile)
		}
		if err := os.WriteFile(prometheusRuleFile, []byte(generated), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	docs := renderComponentAlone(t, "prometheusrule")
	if len(docs) != 1 {
		t.Fatalf("the component renders %d objects, want the PrometheusRule alone", len(docs))
	}
	var rule prometheusRule
	strict(t, docs[0], &rule)
	if rule.APIVersion != "monitoring.coreos.com/v1" || rule.Kind != "PrometheusRule" || rule.Metadata.Name != "wxa-sidecar" {
		t.Errorf("rendered %s %s %q, want monitoring.coreos.com/v1 PrometheusRule wxa-sidecar",
			rule.APIVersion, rule.Kind, rule.Metadata.Name)
	}
	var fromAlerts ruleGroups
	strict(t, alerts, &fromAlerts)
	if len(fromAlerts.Groups) == 0 {
		t.Fatalf("%s has no groups", alertsFile)
	}
	if !reflect.DeepEqual(rule.Spec, fromAlerts) {
		t.Errorf("the PrometheusRule's groups differ from %s; regenerate it:\n"+
			"  go test -run TestPrometheusRuleIsAlertsYAML -update-prometheusrule .", alertsFile)
	}
	// Compared as untyped trees too, so a field the typed view does not
	// know (a group's interval, a rule's keep_firing_for) cannot differ
	// unseen: the strict decode above refuses those, this says which.
	var specTree, alertsTree struct {
		Spec any `json:"spec"`
	}
	if err := yaml.Unmarshal([]byte(docs[0]), &specTree); err != nil {
		t.Fatal(err)
	}
	var groupsOnly any
	if err := yaml.Unmarshal([]byte(alerts), &groupsOnly); err != nil {
		t.Fatal(err)
	}
	alertsTree.Spec = groupsOnly
	if !reflect.DeepEqual(specTree.Spec, alertsTree.Spec) {
		t.Errorf("the PrometheusRule's spec is not exactly %s's content", alertsFile)
	}
	// The text too, so the comments explaining each threshold travel with
	// the rules into the cluster's manifests.
	if got := readFile(t, prometheusRuleFile); got != generatedPrometheusRule(alerts) {
		t.Errorf("%s is not what %s generates (comments included); regenerate it with -update-prometheusrule",
			prometheusRuleFile, alertsFile)
	}
}

// TestPrometheusRuleComponentPatchesNothing: adding the component to the
// base adds the PrometheusRule and leaves every other object as it was.
func TestPrometheusRuleComponentPatchesNothing(t *testing.T) {
	kz := readFile(t, filepath.Join("components", "prometheusrule", "kustomization.yaml"))
	var k struct {
		Kind      string   `json:"kind"`
		Resources []string `json:"resources"`
		Patches   []any    `json:"patches"`
	}
	if err := yaml.Unmarshal([]byte(kz), &k); err != nil {
		t.Fatal(err)
	}
	if k.Kind != "Component" || len(k.Patches) != 0 || len(k.Resources) != 1 {
		t.Errorf("components/prometheusrule: kind %s, %d patches, %d resources; want a Component adding one resource",
			k.Kind, len(k.Patches), len(k.Resources))
	}
	without := renderBaseWith(t)
	with := renderBaseWith(t, "prometheusrule")
	var rules int
	var others []object
	for _, o := range with.others {
		if o.Kind == "PrometheusRule" {
			rules++
			continue
		}
		others = append(others, o)
	}
	if rules != 1 {
		t.Errorf("the prometheusrule component adds %d PrometheusRules, want 1", rules)
	}
	if !reflect.DeepEqual(without.deployments, with.deployments) || !reflect.DeepEqual(without.services, with.services) ||
		!reflect.DeepEqual(without.configMaps, with.configMaps) || !reflect.DeepEqual(without.monitors, with.monitors) ||
		!reflect.DeepEqual(without.others, others) {
		t.Error("the prometheusrule component changes the base's objects")
	}
}

// TestEveryAlertIsDocumentedAndTested: each alert carries a severity, a
// summary, a description and a runbook link into docs/operations.md, and
// alerts_test.yaml has a case that fires it and one where it must not.
func TestEveryAlertIsDocumentedAndTested(t *testing.T) {
	var rules ruleGroups
	strict(t, readFile(t, alertsFile), &rules)
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal([]byte(readFile(t, alertTestsFile)), &tests); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]int{}, map[string]int{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname]++
			} else {
				quiet[a.Alertname]++
			}
		}
	}
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts[r.Alert] = true
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s has no %s", r.Alert, a)
				}
			}
			if !strings.HasPrefix(r.Annotations["runbook_url"], runbookPrefix) {
				t.Errorf("%s: runbook_url %q, want a runbook of docs/operations.md %s…", r.Alert, r.Annotations["runbook_url"], runbookPrefix)
			}
			if fires[r.Alert] == 0 || quiet[r.Alert] == 0 {
				t.Errorf("%s: %d test cases fire it and %d expect it quiet in %s; want at least one of each",
					r.Alert, fires[r.Alert], quiet[r.Alert], alertTestsFile)
			}
		}
	}
	for name := range fires {
		if !alerts[name] {
			t.Errorf("%s tests an alert %s that alerts.yaml does not have", alertTestsFile, name)
		}
	}
	for _, want := range []string{"WxaSidecarTokenRefreshFailing", "WxaSidecarTokenExpiringSoon", "WxaSidecarQuotaCooldown",
		"WxaSidecarUpstreamFailing", "WxaSidecarRateLimited", "WxaSidecarMetricsAbsent", "WxaSidecarRedisDown"} {
		if !alerts[want] {
			t.Errorf("alerts.yaml lacks %s", want)
		}
	}
}
