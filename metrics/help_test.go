package metrics

import (
	"strings"
	"testing"

	"github.com/wxa-sidecar/wxa-sidecar/fleet"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// TestEveryHelpListsItsLabelValues: a label whose values come from a
// bounded set of ours (result, outcome, reason, op, kind, route) has every
// value it can take named in its family's HELP, so /metrics documents
// itself.
func TestEveryHelpListsItsLabelValues(t *testing.T) {
	m := New()
	m.Init([]string{"wx1"}, append(wechat.KnownEndpoints(), wechat.EndpointOther))
	m.ObserveRedis(fleet.Ops, fleet.Results)
	m.ObserveUnsealed(fleet.UnsealedKinds)
	m.ObserveStore(func() float64 { return 0 })
	for _, r := range LeaseResults {
		m.FleetLeases.WithLabelValues(r)
	}
	for _, r := range QRCodeRefusalReasons {
		m.QRCodeRefusals.WithLabelValues(r)
	}
	for _, route := range []string{"wxacode", "qrcode", "token", "passthrough", "link"} {
		m.Requests.WithLabelValues(route, "200")
	}
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	bounded := map[string]bool{"result": true, "outcome": true, "reason": true, "op": true, "kind": true, "route": true}
	checked := 0
	for _, f := range families {
		seen := map[string]bool{}
		for _, series := range f.GetMetric() {
			for _, l := range series.GetLabel() {
				if !bounded[l.GetName()] || seen[l.GetValue()] {
					continue
				}
				seen[l.GetValue()] = true
				checked++
				if !strings.Contains(f.GetHelp(), l.GetValue()) {
					t.Errorf("%s: HELP does not name %s=%q: %q", f.GetName(), l.GetName(), l.GetValue(), f.GetHelp())
				}
			}
		}
	}
	if checked < 40 {
		t.Errorf("checked %d label values; the test sets up fewer families than it should", checked)
	}
}
