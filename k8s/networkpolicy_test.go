package k8s

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// policyLabel is the pod label the networkpolicy component sets and its
// policy selects.
const policyLabel = "wxa-sidecar.io/networkpolicy"

// appSettings is the data of the ConfigMap the sidecar reads its app id
// from: the user's settings, by its generated name.
func appSettings(t *testing.T, r rendered, sc corev1.Container) map[string]string {
	t.Helper()
	ref := envOf(sc)["WECHAT_APP_ID"].ValueFrom.ConfigMapKeyRef
	for _, c := range r.configMaps {
		if c.Name == ref.Name {
			return c.Data
		}
	}
	t.Fatalf("no ConfigMap %s rendered", ref.Name)
	return nil
}

// portKey is a policy port as protocol/port, for comparing sets.
func portKey(p networkingv1.NetworkPolicyPort) string {
	proto := corev1.ProtocolTCP
	if p.Protocol != nil {
		proto = *p.Protocol
	}
	if p.Port == nil {
		return string(proto) + "/every port"
	}
	return string(proto) + "/" + p.Port.String()
}

// checkNetworkPolicy asserts what the networkpolicy component promises in
// a rendering r of the injected Deployment d.
func checkNetworkPolicy(t *testing.T, name string, r rendered, d appsv1.Deployment) {
	t.Helper()
	if len(r.policies) != 1 {
		t.Fatalf("%s: %d NetworkPolicies, want 1", name, len(r.policies))
	}
	sc := sidecarOf(t, d.Spec.Template.Spec, isNative(d))
	for _, p := range networkPolicyProblems(r.policies[0], r.deployments, d, sc, appSettings(t, r, sc)) {
		t.Errorf("%s: %s", name, p)
	}
}

// matches says whether a label selector picks pods with these labels; an
// empty or invalid one picks none here.
func matches(sel *metav1.LabelSelector, podLabels map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && !s.Empty() && s.Matches(labels.Set(podLabels))
}

// networkPolicyProblems lists how p falls short for the injected
// Deployment d (sidecar sc, the user's settings), among deployments.
func networkPolicyProblems(p networkingv1.NetworkPolicy, deployments []appsv1.Deployment, d appsv1.Deployment,
	sc corev1.Container, settings map[string]string) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	if !matches(&p.Spec.PodSelector, d.Spec.Template.Labels) {
		bad("the policy selects %v, not the injected pods (labels %v)", p.Spec.PodSelector, d.Spec.Template.Labels)
	}
	for _, other := range deployments {
		if _, injected := other.Labels[injectLabel]; !injected && matches(&p.Spec.PodSelector, other.Spec.Template.Labels) {
			bad("the policy selects %s, which has no sidecar", other.Name)
		}
	}
	if !slices.Equal(p.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}) {
		bad("policyTypes %v, want Ingress and Egress", p.Spec.PolicyTypes)
	}

	// Ingress: each named port from exactly the namespace the user named;
	// the API port from nowhere. A rule without ports would open every
	// port, one without from every source.
	containerPorts := map[string]int32{}
	for _, cp := range sc.Ports {
		containerPorts[cp.Name] = cp.ContainerPort
	}
	if containerPorts["admin"] == 0 {
		bad("the sidecar has no port named admin")
	}
	want := map[string]string{"qrcode": settings["qrcode-from-namespace"], "admin": settings["monitoring-namespace"]}
	got := map[string]string{}
	for _, rule := range p.Spec.Ingress {
		if len(rule.Ports) == 0 || len(rule.From) == 0 {
			bad("an ingress rule without ports or sources opens the pod: %+v", rule)
			continue
		}
		var from []string
		for _, peer := range rule.From {
			ns := peer.NamespaceSelector
			if peer.PodSelector != nil || peer.IPBlock != nil || ns == nil || len(ns.MatchExpressions) != 0 || len(ns.MatchLabels) != 1 {
				bad("an ingress source other than one namespace by name: %+v", peer)
				continue
			}
			from = append(from, ns.MatchLabels["kubernetes.io/metadata.name"])
		}
		for _, port := range rule.Ports {
			if port.Port == nil || port.Port.StrVal == "" || port.EndPort != nil {
				bad("ingress to %s: only the sidecar's named ports qrcode and admin may be opened", portKey(port))
				continue
			}
			if port.Port.StrVal == "api" || port.Port.StrVal == strconv.Itoa(int(containerPorts["api"])) {
				bad("ingress to the API port")
			}
			if _, ok := want[port.Port.StrVal]; !ok {
				bad("ingress to port %s", port.Port.StrVal)
			}
			got[port.Port.StrVal] = strings.Join(from, ",")
		}
	}
	for port, ns := range want {
		if ns == "" {
			bad("the ConfigMap %v lacks the namespace for port %s", settings, port)
		}
		if got[port] != ns {
			bad("ingress to %s from namespace %q, want %q from the ConfigMap", port, got[port], ns)
		}
	}

	// Egress: DNS, Redis, WeChat (or the proxy) and the store, by port,
	// each a number (a port "3128" as a string is a port name, matching
	// nothing).
	var egress []string
	for _, rule := range p.Spec.Egress {
		if len(rule.Ports) == 0 {
			bad("an egress rule without ports opens every port: %+v", rule)
		}
		for _, port := range rule.Ports {
			if port.Port != nil && port.Port.Type != intstr.Int {
				bad("egress port %q is a name, not a number", port.Port.StrVal)
			}
			egress = append(egress, portKey(port))
		}
	}
	wantEgress := []string{"UDP/53", "TCP/53"}
	for _, k := range []string{"redis-port", "upstream-port", "store-port"} {
		if _, err := strconv.Atoi(settings[k]); err != nil {
			bad("the ConfigMap's %s is %q, not a port", k, settings[k])
		}
		wantEgress = append(wantEgress, "TCP/"+settings[k])
	}
	if !slices.Equal(egress, wantEgress) {
		bad("egress to %v, want %v", egress, wantEgress)
	}
	return problems
}

// The policy takes every value from the user's ConfigMap, numbers as
// numbers (a port "3128" as a string would be a port name, matching
// nothing), and selects the classic sidecar's pods as the native's.
func TestNetworkPolicyTakesTheUsersSettings(t *testing.T) {
	for _, f := range []userFixture{{injectNative, false}, {injectClassic, true}} {
		dir := materialize(t, variant{user: &f, components: []string{"sidecar", "qrcode-service", "networkpolicy"}}, t.TempDir())
		kz := filepath.Join(dir, "kustomization.yaml")
		b, err := os.ReadFile(kz)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for old, new := range map[string]string{
			"qrcode-from-namespace=ingress-nginx": "qrcode-from-namespace=web",
			"monitoring-namespace=monitoring":     "monitoring-namespace=observability",
			"redis-port=6379":                     "redis-port=6380",
			"upstream-port=443":                   "upstream-port=3128",
			"store-port=443":                      "store-port=9000",
		} {
			if !strings.Contains(s, old) {
				t.Fatalf("the fixture lacks %s", old)
			}
			s = strings.Replace(s, old, new, 1)
		}
		if err := os.WriteFile(kz, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		r := render(t, dir)
		shop := deploymentNamed(t, r, "shop")
		checkNetworkPolicy(t, f.String(), r, shop)
		p := r.policies[0]
		got := fmt.Sprintf("%v %v %s %s %s", p.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels, p.Spec.Ingress[1].From[0].NamespaceSelector.MatchLabels,
			portKey(p.Spec.Egress[1].Ports[0]), portKey(p.Spec.Egress[2].Ports[0]), portKey(p.Spec.Egress[3].Ports[0]))
		want := "map[kubernetes.io/metadata.name:web] map[kubernetes.io/metadata.name:observability] TCP/6380 TCP/3128 TCP/9000"
		if got != want {
			t.Errorf("%s: the policy says %s, want %s", f, got, want)
		}
		checkUsersKept(t, f, r)
	}
}

// A setting left out stops the build, naming it, rather than applying a
// policy that opens the qrcode port to a placeholder namespace.
func TestNetworkPolicyWithoutASettingDoesNotBuild(t *testing.T) {
	f := userFixture{injectNative, true}
	dir := materialize(t, variant{user: &f, components: []string{"sidecar", "networkpolicy"}}, t.TempDir())
	kz := filepath.Join(dir, "kustomization.yaml")
	b, err := os.ReadFile(kz)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "      - monitoring-namespace=monitoring\n", "", 1)
	if s == string(b) {
		t.Fatal("the fixture lacks monitoring-namespace")
	}
	if err := os.WriteFile(kz, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = build(dir)
	if err == nil || !strings.Contains(err.Error(), "monitoring-namespace") {
		t.Errorf("built without monitoring-namespace: %v", err)
	}
}

// The model has teeth: a policy opening the API port, a rule without
// ports, a port turned into a name, or one selecting every pod, is caught.
func TestNetworkPolicyCheckCatchesMistakes(t *testing.T) {
	f := userFixture{injectNative, false}
	r := renderUser(t, f, "sidecar", "qrcode-service", "networkpolicy")
	shop := deploymentNamed(t, r, "shop")
	sc := sidecarOf(t, shop.Spec.Template.Spec, true)
	settings := appSettings(t, r, sc)
	if p := networkPolicyProblems(r.policies[0], r.deployments, shop, sc, settings); len(p) != 0 {
		t.Fatalf("the rendered policy has problems: %v", p)
	}
	for name, mutate := range map[string]func(p *networkingv1.NetworkPolicy){
		"the api port": func(p *networkingv1.NetworkPolicy) { p.Spec.Ingress[0].Ports[0].Port.StrVal = "api" },
		"port 8080":    func(p *networkingv1.NetworkPolicy) { p.Spec.Ingress[0].Ports[0].Port.StrVal = "8080" },
		"no ports":     func(p *networkingv1.NetworkPolicy) { p.Spec.Ingress[1].Ports = nil },
		"any source":   func(p *networkingv1.NetworkPolicy) { p.Spec.Ingress[0].From = nil },
		"a port as name": func(p *networkingv1.NetworkPolicy) {
			x := intstr.FromString("6379")
			p.Spec.Egress[1].Ports[0].Port = &x
		},
		"every pod": func(p *networkingv1.NetworkPolicy) { p.Spec.PodSelector = metav1.LabelSelector{} },
		"egress open": func(p *networkingv1.NetworkPolicy) {
			p.Spec.Egress = append(p.Spec.Egress, networkingv1.NetworkPolicyEgressRule{})
		},
		"ingress only": func(p *networkingv1.NetworkPolicy) { p.Spec.PolicyTypes = p.Spec.PolicyTypes[:1] },
	} {
		p := r.policies[0].DeepCopy()
		mutate(p)
		if len(networkPolicyProblems(*p, r.deployments, shop, sc, settings)) == 0 {
			t.Errorf("a policy with %s passed the check", name)
		}
	}
}
