package k8s

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// A variant is one way to deploy: a root (the base, an overlay, or a
// Deployment of the user's own, as in their kustomization) with a set of
// components added on top, the sidecar component first as docs/kubernetes.md says.
type variant struct {
	name       string
	root       string       // a kustomization here, or "" for the user's
	user       *userFixture // the user's Deployment when root is ""
	components []string     // names under components/
}

// componentNames lists components/, so a component added there (one that
// patches the sidecar or, like a PrometheusRule, only adds an object) is
// in every combination without touching this file. The sidecar component
// comes first: the others patch what it injects.
func componentNames(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("components")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join("components", e.Name(), "kustomization.yaml")); e.IsDir() && err == nil {
			names = append(names, e.Name())
		}
	}
	sort.SliceStable(names, func(i, j int) bool { return names[i] == "sidecar" && names[j] != "sidecar" })
	if len(names) == 0 || names[0] != "sidecar" {
		t.Fatalf("components/ has no sidecar component: %v", names)
	}
	return names
}

// subsets returns every subset of names, each in the order of names.
func subsets(names []string) [][]string {
	var out [][]string
	for mask := 0; mask < 1<<len(names); mask++ {
		var s []string
		for i, n := range names {
			if mask&(1<<i) != 0 {
				s = append(s, n)
			}
		}
		out = append(out, s)
	}
	return out
}

// variantSpecs enumerates every overlay (and the base) with every subset
// of the components it does not have yet, and the user's Deployment (native and classic, with
// an fsGroup and without) with every subset that includes the sidecar
// component.
func variantSpecs(t *testing.T) []variant {
	t.Helper()
	names := componentNames(t)
	var out []variant
	for _, root := range kustomizations(t) {
		// A component the root already has cannot be added again (its
		// objects would be added twice).
		has := componentsIn(t, root)
		rest := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return slices.Contains(has, n) })
		for _, s := range subsets(rest) {
			out = append(out, variant{name: strings.Join(append([]string{root}, s...), "+"), root: root, components: s})
		}
	}
	for _, f := range userFixtures() {
		for _, s := range subsets(names[1:]) {
			s = append([]string{"sidecar"}, s...)
			out = append(out, variant{name: strings.Join(append([]string{f.String()}, s...), "+"), user: &f, components: s})
		}
	}
	return out
}

// materialize writes the variant's kustomization into dir and returns it.
func materialize(t *testing.T, v variant, dir string) string {
	t.Helper()
	here, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	// kustomize refuses absolute paths to other kustomizations.
	rel := func(p string) string {
		r, err := filepath.Rel(dir, filepath.Join(here, p))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	var components []string
	for _, c := range v.components {
		components = append(components, rel(filepath.Join("components", c)))
	}
	var kz string
	if v.user != nil {
		kz = v.user.kustomization(components)
		if err := os.WriteFile(filepath.Join(dir, "deployment.yaml"), []byte(v.user.deployments()), 0o644); err != nil {
			t.Fatal(err)
		}
	} else {
		kz = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - " + rel(v.root) + "\n" +
			settingsMerge(components) + "components:\n"
		for _, c := range components {
			kz += "  - " + c + "\n"
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kz), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// renderBaseWith renders the base with the named components, as an overlay
// of the user's would.
func renderBaseWith(t *testing.T, components ...string) rendered {
	t.Helper()
	return render(t, materialize(t, variant{root: "base", components: components}, t.TempDir()))
}

// The renders are the same for every test that reads them: made once.
var variantCache struct {
	sync.Mutex
	rendered map[string]rendered
}

// variants renders every variant (see variantSpecs), strictly decoded.
func variants(t *testing.T) map[string]rendered {
	t.Helper()
	variantCache.Lock()
	defer variantCache.Unlock()
	if variantCache.rendered != nil {
		return variantCache.rendered
	}
	out := map[string]rendered{}
	for _, v := range variantSpecs(t) {
		out[v.name] = render(t, materialize(t, v, t.TempDir()))
	}
	variantCache.rendered = out
	return out
}

// injected are the Deployments the sidecar component was asked to inject.
func injected(r rendered) []appsv1.Deployment {
	var out []appsv1.Deployment
	for _, d := range r.deployments {
		if _, ok := d.Labels[injectLabel]; ok {
			out = append(out, d)
		}
	}
	return out
}

// componentsIn lists the components a kustomization uses, through its
// resources too (overlays/full has the sidecar through the base).
func componentsIn(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var kz struct {
		Resources  []string `json:"resources"`
		Components []string `json:"components"`
	}
	if err := yaml.Unmarshal(b, &kz); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range kz.Components {
		out = append(out, filepath.Base(c))
	}
	for _, r := range kz.Resources {
		if st, err := os.Stat(filepath.Join(dir, r)); err == nil && st.IsDir() {
			out = append(out, componentsIn(t, filepath.Join(dir, r))...)
		}
	}
	return out
}

// Every overlay with every set of components renders, strictly decoded,
// and each component does its part on the sidecar wherever it is; before,
// classic-sidecar + qrcode-service failed ("doc is missing path
// .../initContainers/0/env/-") and the components broke on a user's own
// init containers.
func TestEveryOverlayWithEveryComponentSet(t *testing.T) {
	all := variants(t)
	for _, v := range variantSpecs(t) {
		t.Run(v.name, func(t *testing.T) {
			r := all[v.name]
			has := slices.Clone(v.components)
			if v.root != "" {
				has = append(has, componentsIn(t, v.root)...)
			}
			deps := injected(r)
			if len(deps) != 1 {
				t.Fatalf("%d Deployments labelled %s, want 1", len(deps), injectLabel)
			}
			d := deps[0]
			native := isNative(d)
			spec := d.Spec.Template.Spec
			var sc corev1.Container
			if v.user != nil {
				if native != (v.user.inject == injectNative) {
					t.Errorf("the user asked for %q, got native %v", v.user.inject, native)
				}
				sc = checkSidecar(t, spec, native)
				checkUsersKept(t, *v.user, r)
			} else {
				sc = checkPod(t, d, native)
			}

			seen := map[string]bool{}
			for _, e := range sc.Env {
				if seen[e.Name] {
					t.Errorf("%s is set twice", e.Name)
				}
				seen[e.Name] = true
			}
			ports := map[string]bool{}
			for _, p := range sc.Ports {
				if ports[p.Name] {
					t.Errorf("port %s is listed twice", p.Name)
				}
				ports[p.Name] = true
			}
			names := map[string]bool{}
			for _, vol := range spec.Volumes {
				if names[vol.Name] {
					t.Errorf("volume %s is listed twice", vol.Name)
				}
				names[vol.Name] = true
			}

			// The app id's ConfigMap is one the kustomization renders, by
			// its generated name.
			ref := envOf(sc)["WECHAT_APP_ID"].ValueFrom.ConfigMapKeyRef
			var appID bool
			for _, c := range r.configMaps {
				if c.Name == ref.Name && strings.HasPrefix(c.Data[ref.Key], "wx") {
					appID = true
				}
			}
			if !appID {
				t.Errorf("WECHAT_APP_ID reads ConfigMap %s key %s, which the kustomization does not render", ref.Name, ref.Key)
			}

			if slices.Contains(has, "podmonitor") {
				ann := d.Spec.Template.Annotations
				if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != "9102" || ann["prometheus.io/path"] != "/metrics" {
					t.Errorf("prometheus.io annotations %v", ann)
				}
				if len(r.monitors) != 1 || !selects(t, &r.monitors[0].Spec.Selector, d.Spec.Template.Labels) {
					t.Errorf("the PodMonitor does not select the injected pods (labels %v)", d.Spec.Template.Labels)
				}
			} else if len(r.monitors) != 0 || d.Spec.Template.Annotations["prometheus.io/scrape"] != "" {
				t.Error("scraping was set up without the podmonitor component")
			}
			if slices.Contains(has, "qrcode-service") {
				if envOf(sc)["QRCODE_ADDR"].Value != ":8081" || !ports["qrcode"] {
					t.Error("the qrcode component's QRCODE_ADDR and port were not set on the sidecar")
				}
				if len(r.services) != 1 {
					t.Fatalf("%d Services, want the qrcode one", len(r.services))
				}
				if !selects(t, &metav1.LabelSelector{MatchLabels: r.services[0].Spec.Selector}, d.Spec.Template.Labels) {
					t.Errorf("the qrcode Service selects %v, not the injected pods (labels %v)", r.services[0].Spec.Selector, d.Spec.Template.Labels)
				}
				for _, other := range r.deployments {
					if _, injected := other.Labels[injectLabel]; !injected &&
						selects(t, &metav1.LabelSelector{MatchLabels: r.services[0].Spec.Selector}, other.Spec.Template.Labels) {
						t.Errorf("the qrcode Service selects %s, which has no sidecar", other.Name)
					}
				}
			} else if seen["QRCODE_ADDR"] || len(r.services) != 0 {
				t.Error("QRCODE_ADDR or a Service without the qrcode component")
			}
			if slices.Contains(has, "networkpolicy") {
				checkNetworkPolicy(t, v.name, r, d)
			} else if len(r.policies) != 0 || d.Spec.Template.Labels[policyLabel] != "" {
				t.Error("a NetworkPolicy or its pod label without the networkpolicy component")
			}
			if slices.Contains(has, "redis") {
				checkRedisComponent(t, v.name, r, d)
			} else {
				for _, e := range []string{"REDIS_URL", "REDIS_PASSWORD_FILE", "FLEET_SIZE"} {
					if seen[e] {
						t.Errorf("%s is set without the redis component", e)
					}
				}
			}
		})
	}
}

// objectsOf decodes a multi-document rendering into generic objects,
// sorted, for comparing two renderers' outputs whatever their formatting.
func objectsOf(out []byte) ([]any, error) {
	var objs []any
	for _, doc := range bytes.Split(out, []byte("\n---\n")) {
		var o any
		if err := yaml.Unmarshal(doc, &o); err != nil {
			return nil, err
		}
		if o != nil {
			objs = append(objs, o)
		}
	}
	key := func(o any) string {
		m, _ := o.(map[string]any)
		meta, _ := m["metadata"].(map[string]any)
		return fmt.Sprint(m["kind"], "/", meta["name"])
	}
	sort.Slice(objs, func(i, j int) bool { return key(objs[i]) < key(objs[j]) })
	return objs, nil
}

// Users apply with kubectl: its kustomize must render every variant as
// the krusty the other tests check does. CI has no kubectl, so this skips
// there.
func TestKubectlKustomizeRendersEveryVariant(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("no kubectl on PATH")
	}
	for _, v := range variantSpecs(t) {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			dir := materialize(t, v, t.TempDir())
			var stderr bytes.Buffer
			cmd := exec.Command(kubectl, "kustomize", dir)
			cmd.Stderr = &stderr
			theirs, err := cmd.Output()
			if err != nil {
				t.Fatalf("kubectl kustomize: %v\n%s", err, stderr.String())
			}
			ours, err := build(dir)
			if err != nil {
				t.Fatal(err)
			}
			a, err := objectsOf(theirs)
			if err != nil {
				t.Fatal(err)
			}
			b, err := objectsOf(ours)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(a, b) {
				t.Errorf("kubectl kustomize renders differently from krusty:\nkubectl:\n%s\nkrusty:\n%s", theirs, ours)
			}
		})
	}
}
