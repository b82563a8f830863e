package k8s

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// appKustomization writes a user's kustomization as docs/kubernetes.md shows it for
// one app among several in a namespace: their Deployments (the shop
// fixture, and the ConfigMap it mounts), our settings and Secrets from
// generators (the secret files stay out of git), every component, and a
// namePrefix of its own (none when prefix is empty).
func appKustomization(t *testing.T, prefix, appID string) string {
	t.Helper()
	here, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := userFixture{injectNative, false}
	files := map[string]string{
		"deployment.yaml":    f.deployments(),
		"app-secret.txt":     "not-a-real-secret-" + appID,
		"redis-password.txt": "not-a-real-password-" + appID,
	}
	names := componentNames(t)
	kz := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
	if prefix != "" {
		kz += "namePrefix: " + prefix + "\n"
	}
	kz += `resources:
  - deployment.yaml
configMapGenerator:
  - name: shop-config
    literals:
      - greeting=hello
  - name: wxa-sidecar
    literals:
      - app-id=` + appID + "\n" + literals(settingsFor(names)) + `secretGenerator:
  - name: wxa-sidecar
    files:
      - app-secret=app-secret.txt
  - name: wxa-sidecar-redis
    files:
      - password=redis-password.txt
images:
  - name: wxa-sidecar
    newName: ghcr.io/wxa-sidecar/wxa-sidecar
    newTag: latest
components:
`
	for _, c := range names {
		rel, err := filepath.Rel(dir, filepath.Join(here, "components", c))
		if err != nil {
			t.Fatal(err)
		}
		kz += "  - " + rel + "\n"
	}
	files["kustomization.yaml"] = kz
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// podSpecs are the pod templates of a rendering, by Deployment.
func podSpecs(r rendered) map[string]corev1.PodSpec {
	out := map[string]corev1.PodSpec{}
	for _, d := range r.deployments {
		out[d.Name] = d.Spec.Template.Spec
	}
	return out
}

// referenceProblems lists every ConfigMap or Secret a pod of r refers to
// (env, volumes) that r does not render with that key, except the Secrets
// named in external (applied by hand, outside the kustomization); and every
// Service, PodMonitor or NetworkPolicy that selects no injected pod, or a
// pod without the sidecar.
func referenceProblems(r rendered, external ...string) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	configMaps := map[string]map[string]string{}
	for _, c := range r.configMaps {
		configMaps[c.Name] = c.Data
	}
	secrets := map[string]map[string]bool{}
	for _, s := range r.secrets {
		keys := map[string]bool{}
		for k := range s.Data {
			keys[k] = true
		}
		for k := range s.StringData {
			keys[k] = true
		}
		secrets[s.Name] = keys
	}
	configMapKey := func(where, name, key string) {
		data, ok := configMaps[name]
		if !ok {
			bad("%s: ConfigMap %s is not rendered", where, name)
		} else if _, ok := data[key]; key != "" && !ok {
			bad("%s: ConfigMap %s has no key %s", where, name, key)
		}
	}
	secretKey := func(where, name, key string) {
		if slices.Contains(external, name) {
			return
		}
		keys, ok := secrets[name]
		if !ok {
			bad("%s: Secret %s is not rendered", where, name)
		} else if key != "" && !keys[key] {
			bad("%s: Secret %s has no key %s", where, name, key)
		}
	}
	for dep, spec := range podSpecs(r) {
		for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
			where := dep + "/" + c.Name
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
					configMapKey(where+" "+e.Name, e.ValueFrom.ConfigMapKeyRef.Name, e.ValueFrom.ConfigMapKeyRef.Key)
				}
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					secretKey(where+" "+e.Name, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
				}
			}
			for _, e := range c.EnvFrom {
				if e.ConfigMapRef != nil {
					configMapKey(where, e.ConfigMapRef.Name, "")
				}
				if e.SecretRef != nil {
					secretKey(where, e.SecretRef.Name, "")
				}
			}
		}
		for _, v := range spec.Volumes {
			where := dep + " volume " + v.Name
			switch {
			case v.Secret != nil:
				secretKey(where, v.Secret.SecretName, "")
				for _, it := range v.Secret.Items {
					secretKey(where, v.Secret.SecretName, it.Key)
				}
			case v.ConfigMap != nil:
				configMapKey(where, v.ConfigMap.Name, "")
				for _, it := range v.ConfigMap.Items {
					configMapKey(where, v.ConfigMap.Name, it.Key)
				}
			}
		}
	}
	selectors := selectorsOf(r)
	for what, sel := range selectors {
		var picked int
		for _, d := range r.deployments {
			if !matches(sel, d.Spec.Template.Labels) {
				continue
			}
			if _, injected := d.Labels[injectLabel]; !injected {
				bad("%s selects %s, which has no sidecar", what, d.Name)
			}
			picked++
		}
		if picked == 0 {
			bad("%s selects no pod of the kustomization", what)
		}
	}
	return problems
}

// selectorsOf are the pod selectors of r's Services, PodMonitors and
// NetworkPolicies, by kind and name.
func selectorsOf(r rendered) map[string]*metav1.LabelSelector {
	selectors := map[string]*metav1.LabelSelector{}
	for _, s := range r.services {
		selectors["Service "+s.Name] = &metav1.LabelSelector{MatchLabels: s.Spec.Selector}
	}
	for _, m := range r.monitors {
		selectors["PodMonitor "+m.Metadata.Name] = &m.Spec.Selector
	}
	for _, p := range r.policies {
		selectors["NetworkPolicy "+p.Name] = &p.Spec.PodSelector
	}
	return selectors
}

// sameNamespaceProblems lists the objects two apps' renderings, applied to
// one namespace, would fight over: one kind and name with different
// contents (the second apply overwrites the first); and every selector of
// one app that picks the other app's pods.
func sameNamespaceProblems(a, b rendered) []string {
	var problems []string
	objects := func(r rendered) map[string]any {
		m := map[string]any{}
		for _, o := range r.deployments {
			m["Deployment/"+o.Name] = o
		}
		for _, o := range r.services {
			m["Service/"+o.Name] = o
		}
		for _, o := range r.configMaps {
			m["ConfigMap/"+o.Name] = o
		}
		for _, o := range r.secrets {
			m["Secret/"+o.Name] = o
		}
		for _, o := range r.monitors {
			m["PodMonitor/"+o.Metadata.Name] = o
		}
		for _, o := range r.policies {
			m["NetworkPolicy/"+o.Name] = o
		}
		for _, o := range r.others {
			m[o.Kind+"/"+o.Metadata.Name] = o.Doc
		}
		return m
	}
	oa, ob := objects(a), objects(b)
	for id, x := range oa {
		if y, ok := ob[id]; ok && !reflect.DeepEqual(x, y) {
			problems = append(problems, "both apps render "+id)
		}
	}
	for _, pair := range [][2]rendered{{a, b}, {b, a}} {
		mine, theirs := pair[0], pair[1]
		for what, sel := range selectorsOf(mine) {
			for _, d := range theirs.deployments {
				if matches(sel, d.Spec.Template.Labels) {
					problems = append(problems, fmt.Sprintf("%s of one app selects the other's %s", what, d.Name))
				}
			}
		}
	}
	slices.Sort(problems)
	return problems
}

// Two apps, each a kustomization of docs/kubernetes.md's shape with every component
// and a namePrefix of its own, applied to one namespace: every reference of
// each resolves to an object it renders (its generated, prefixed names),
// no object is rendered by both with different contents, and no Service,
// PodMonitor or NetworkPolicy of one selects the other's pods. Before,
// both used the Secret wxa-sidecar and wxa-sidecar-redis, and the qrcode
// Service selected app.kubernetes.io/name: example-backend.
func TestTwoAppsInOneNamespace(t *testing.T) {
	shop := renderUsers(t, appKustomization(t, "shop-", "wx1111111111111111"))
	blog := renderUsers(t, appKustomization(t, "blog-", "wx2222222222222222"))
	for name, r := range map[string]rendered{"shop": shop, "blog": blog} {
		for _, p := range referenceProblems(r) {
			t.Errorf("%s: %s", name, p)
		}
		d := injected(r)
		if len(d) != 1 || !strings.HasPrefix(d[0].Name, name+"-") {
			t.Fatalf("%s: injected Deployments %v", name, d)
		}
		sc := checkSidecar(t, d[0].Spec.Template.Spec, true)
		checkRedisComponent(t, name, r, d[0])
		checkNetworkPolicy(t, name, r, d[0])
		// The app's own settings, not the other's.
		if id := appSettings(t, r, sc)["app-id"]; (name == "shop") != (id == "wx1111111111111111") {
			t.Errorf("%s reads app id %s", name, id)
		}
		if len(r.secrets) != 2 || len(r.services) != 1 || len(r.monitors) != 1 || len(r.policies) != 1 {
			t.Errorf("%s renders %d Secrets, %d Services, %d PodMonitors, %d NetworkPolicies; want 2, 1, 1, 1",
				name, len(r.secrets), len(r.services), len(r.monitors), len(r.policies))
		}
		for _, s := range r.secrets {
			if !strings.HasPrefix(s.Name, name+"-wxa-sidecar") {
				t.Errorf("%s renders the Secret %s, without its prefix", name, s.Name)
			}
		}
	}
	for _, p := range sameNamespaceProblems(shop, blog) {
		t.Error(p)
	}
}

// The check has teeth: the same two apps without a namePrefix fight over
// the Deployment, and share one qrcode Service, PodMonitor and
// NetworkPolicy that select both apps' pods.
func TestTwoAppsWithoutAPrefixCollide(t *testing.T) {
	shop := renderUsers(t, appKustomization(t, "", "wx1111111111111111"))
	blog := renderUsers(t, appKustomization(t, "", "wx2222222222222222"))
	problems := strings.Join(sameNamespaceProblems(shop, blog), "\n")
	for _, want := range []string{"both apps render Deployment/shop", "Service wxa-qrcode of one app selects the other's shop",
		"PodMonitor wxa-sidecar of one app selects the other's shop", "NetworkPolicy wxa-sidecar of one app selects the other's shop"} {
		if !strings.Contains(problems, want) {
			t.Errorf("missing %q among:\n%s", want, problems)
		}
	}
	// And a reference to a Secret that is not rendered is caught.
	shop.secrets = nil
	if p := referenceProblems(shop); len(p) == 0 {
		t.Error("references to Secrets that are not rendered passed")
	}
}

// A namePrefix on the example (base with every component, the settings
// merged into the base's ConfigMap): every reference follows the prefix,
// but for the two Secrets applied by hand, which keep their names.
func TestNamePrefixOnTheExample(t *testing.T) {
	here, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rel := func(p string) string {
		r, err := filepath.Rel(dir, filepath.Join(here, p))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	names := componentNames(t)[1:] // the base has the sidecar component
	kz := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamePrefix: shop-\nresources:\n  - " + rel("base") + "\n" +
		settingsMerge(names) + "components:\n"
	for _, c := range names {
		kz += "  - " + rel(filepath.Join("components", c)) + "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kz), 0o644); err != nil {
		t.Fatal(err)
	}
	r := render(t, dir)
	for _, p := range referenceProblems(r, "wxa-sidecar", "wxa-sidecar-redis") {
		t.Error(p)
	}
	d := r.deployments[0]
	if d.Name != "shop-example-backend" {
		t.Errorf("Deployment %s", d.Name)
	}
	checkPod(t, d, true)
	checkRedisComponent(t, "prefixed", r, d)
	checkNetworkPolicy(t, "prefixed", r, d)
	want := map[string]string{"wxa-sidecar.io/qrcode": "shop-wxa-qrcode", "wxa-sidecar.io/podmonitor": "shop-wxa-sidecar",
		policyLabel: "shop-wxa-sidecar"}
	for k, v := range want {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("pod label %s=%q, want %q (the prefixed name of the object selecting it)", k, d.Spec.Template.Labels[k], v)
		}
	}
}

// A per-environment overlay raises FLEET_SIZE with a generator of
// behavior: merge, as docs/kubernetes.md shows: the pods read the merged ConfigMap
// (a new generated name, so they roll), the other keys kept.
func TestSettingsMergedInAnOverlay(t *testing.T) {
	app := appKustomization(t, "shop-", "wx1111111111111111")
	prod := filepath.Join(t.TempDir(), "prod")
	if err := os.Mkdir(prod, 0o755); err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(prod, app)
	if err != nil {
		t.Fatal(err)
	}
	kz := `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ` + rel + `
patches:
  - target:
      kind: Deployment
      name: shop
    patch: |-
      - op: replace
        path: /spec/replicas
        value: 4
configMapGenerator:
  - name: wxa-sidecar
    behavior: merge
    literals:
      - fleet-size=4
`
	if err := os.WriteFile(filepath.Join(prod, "kustomization.yaml"), []byte(kz), 0o644); err != nil {
		t.Fatal(err)
	}
	before := renderUsers(t, app)
	after := renderUsers(t, prod)
	d := deploymentNamed(t, after, "shop-shop")
	sc := checkRedisComponent(t, "prod", after, d)
	if v, err := settingOf(after, envOf(sc)["FLEET_SIZE"], "fleet-size"); err != nil || v != "4" {
		t.Errorf("FLEET_SIZE %q (%v), want the overlay's 4", v, err)
	}
	if v, err := settingOf(after, envOf(sc)["REDIS_URL"], "redis-url"); err != nil || v != "redis://wxa-sidecar-redis:6379/0" {
		t.Errorf("REDIS_URL %q (%v), want the app's, kept by the merge", v, err)
	}
	oldRef := envOf(sidecarOf(t, deploymentNamed(t, before, "shop-shop").Spec.Template.Spec, true))["FLEET_SIZE"].ValueFrom.ConfigMapKeyRef.Name
	if envOf(sc)["FLEET_SIZE"].ValueFrom.ConfigMapKeyRef.Name == oldRef {
		t.Errorf("the merged ConfigMap kept its name %s: the pods would not roll", oldRef)
	}
	for _, p := range referenceProblems(after) {
		t.Error(p)
	}
}
