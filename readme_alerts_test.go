package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// readmeAlertRules returns the sample alert rules README.md shows, exactly
// as an operator would copy them, or "" when README shows none and points
// at deploy/prometheus/alerts.yaml instead.
func readmeAlertRules(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), "Sample alert rules:\n\n```yaml\n")
	if !ok {
		return ""
	}
	rules, _, ok := strings.Cut(after, "```")
	if !ok {
		t.Fatal("README.md's alert rules block is not closed")
	}
	return rules
}

// TestReadmeTokenRefreshAlertFires runs the alert rules README offers
// through promtool with a token whose refreshes fail while it runs out: the
// alert must fire. Joined without ignoring(result), it never could. README
// either shows sample rules, tested here, or points at
// deploy/prometheus/alerts.yaml, whose unit tests (deploy_test.go) have
// this case and one per alert more.
func TestReadmeTokenRefreshAlertFires(t *testing.T) {
	rules := readmeAlertRules(t)
	if rules == "" {
		readme, err := os.ReadFile("README.md")
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{alertsFile, dashboardFile} {
			if !bytes.Contains(readme, []byte(f)) {
				t.Errorf("README.md shows no sample alert rules and does not point at %s", f)
			}
		}
		return
	}
	promtool := promtoolOrSkip(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yml"), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	// One sample a minute: fetch errors rise from minute 5 while the
	// token's remaining life falls from 3000 s by 60 s a minute; it is
	// under 1200 s from minute 31 on.
	tests := `rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'wxa_sidecar_token_fetches_total{app="wxdemo",result="error",job="wxa",instance="pod-1"}'
        values: '0x5 1+1x40'
      - series: 'wxa_sidecar_token_fetches_total{app="wxdemo",result="ok",job="wxa",instance="pod-1"}'
        values: '1x45'
      - series: 'wxa_sidecar_token_expiry_seconds{app="wxdemo",job="wxa",instance="pod-1"}'
        values: '3000-60x45'
    alert_rule_test:
      - eval_time: 20m
        alertname: WxaSidecarTokenRefreshFailing
        exp_alerts: []
      - eval_time: 40m
        alertname: WxaSidecarTokenRefreshFailing
        exp_alerts:
          - exp_labels: {app: wxdemo, result: error, job: wxa, instance: pod-1}
            exp_annotations:
              summary: "wxa-sidecar cannot refresh the access_token of wxdemo; see /status"
`
	if err := os.WriteFile(filepath.Join(dir, "rules_test.yml"), []byte(tests), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool, "test", "rules", "rules_test.yml")
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out.String())
	}
}
