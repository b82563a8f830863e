package k8s

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// userFixture is a kustomization of a user's own, as docs/kubernetes.md tells them to
// write it: their Deployment labelled for injection (beside one that is
// not), the ConfigMap, the image, and our components.
type userFixture struct {
	inject  string // the label's value: injectNative or injectClassic
	fsGroup bool   // whether their pod sets an fsGroup
}

func userFixtures() []userFixture {
	return []userFixture{{injectNative, true}, {injectNative, false}, {injectClassic, true}, {injectClassic, false}}
}

func (f userFixture) String() string {
	fs := "no-fsGroup"
	if f.fsGroup {
		fs = "fsGroup"
	}
	return fmt.Sprintf("user(%s,%s)", f.inject, fs)
}

// deployments is the user's YAML: a pod with init containers, annotations,
// volumes of its own, a pod securityContext (with an fsGroup or not) that
// runs as another user than ours, and an unlabelled Deployment that must
// come out untouched.
func (f userFixture) deployments() string {
	fsGroup := ""
	if f.fsGroup {
		fsGroup = "\n        fsGroup: 2000\n        fsGroupChangePolicy: OnRootMismatch"
	}
	return `apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
  labels:
    app: shop
    wxa-sidecar.io/inject: "` + f.inject + `"
  annotations:
    team: payments
spec:
  replicas: 2
  selector:
    matchLabels:
      app: shop
  template:
    metadata:
      labels:
        app: shop
        tier: web
      annotations:
        linkerd.io/inject: enabled
        config.linkerd.io/proxy-cpu-limit: "1"
    spec:
      serviceAccountName: shop
      terminationGracePeriodSeconds: 30
      securityContext:
        runAsNonRoot: true
        runAsUser: 1000
        runAsGroup: 3000` + fsGroup + `
      initContainers:
        - name: migrate
          image: registry.example.com/shop-migrate:1
          args: ["--to", "latest"]
          volumeMounts:
            - name: shop-config
              mountPath: /etc/shop
        - name: warm-cache
          image: registry.example.com/shop:1
          args: ["warm"]
          volumeMounts:
            - name: uploads
              mountPath: /uploads
      containers:
        - name: web
          image: registry.example.com/shop:1
          env:
            - name: WECHAT_API_BASE_URL
              value: http://127.0.0.1:8080
          ports:
            - name: http
              containerPort: 8000
          volumeMounts:
            - name: uploads
              mountPath: /uploads
            - name: shop-config
              mountPath: /etc/shop
      volumes:
        - name: uploads
          emptyDir: {}
        - name: shop-config
          configMap:
            name: shop-config
            defaultMode: 0440
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: worker
  labels:
    app: worker
spec:
  selector:
    matchLabels:
      app: worker
  template:
    metadata:
      labels:
        app: worker
      annotations:
        linkerd.io/inject: enabled
    spec:
      containers:
        - name: worker
          image: registry.example.com/shop:1
`
}

// kustomization is the user's kustomization.yaml with these components
// (paths relative to it). The app id and image are the base's, so the
// sidecar it gets can be compared with the examples'.
func (f userFixture) kustomization(components []string) string {
	kz := `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - deployment.yaml
configMapGenerator:
  - name: wxa-sidecar
    literals:
      - app-id=wx0000000000000000
` + literals(settingsFor(componentBases(components))) + `images:
  - name: wxa-sidecar
    newName: ghcr.io/wxa-sidecar/wxa-sidecar
    newTag: latest
components:
`
	for _, c := range components {
		kz += "  - " + c + "\n"
	}
	return kz
}

// literals lists generator literals, indented as in kustomization().
func literals(l []string) string {
	var s string
	for _, x := range l {
		s += "      - " + x + "\n"
	}
	return s
}

// input is the user's Deployments as they wrote them.
func (f userFixture) input(t *testing.T) (shop, worker appsv1.Deployment) {
	t.Helper()
	docs := strings.Split(f.deployments(), "\n---\n")
	strict(t, docs[0], &shop)
	strict(t, docs[1], &worker)
	return shop, worker
}

func renderUser(t *testing.T, f userFixture, components ...string) rendered {
	t.Helper()
	return render(t, materialize(t, variant{user: &f, components: components}, t.TempDir()))
}

func deploymentNamed(t *testing.T, r rendered, name string) appsv1.Deployment {
	t.Helper()
	for _, d := range r.deployments {
		if d.Name == name {
			return d
		}
	}
	t.Fatalf("no Deployment %s rendered", name)
	return appsv1.Deployment{}
}

// withoutOurs is d with everything our components add taken away: the
// sidecar, our volumes, our pod label and the scrape annotations.
func withoutOurs(d appsv1.Deployment, before appsv1.Deployment) appsv1.Deployment {
	d = *d.DeepCopy()
	tpl := &d.Spec.Template
	notOurs := func(c corev1.Container) bool { return c.Name != sidecarName }
	tpl.Spec.InitContainers = slices.DeleteFunc(tpl.Spec.InitContainers, func(c corev1.Container) bool { return !notOurs(c) })
	tpl.Spec.Containers = slices.DeleteFunc(tpl.Spec.Containers, func(c corev1.Container) bool { return !notOurs(c) })
	if len(tpl.Spec.InitContainers) == 0 && before.Spec.Template.Spec.InitContainers == nil {
		tpl.Spec.InitContainers = nil
	}
	tpl.Spec.Volumes = slices.DeleteFunc(tpl.Spec.Volumes, func(v corev1.Volume) bool { return strings.HasPrefix(v.Name, "wxa-sidecar") })
	for k := range tpl.Labels {
		if _, theirs := before.Spec.Template.Labels[k]; !theirs && strings.HasPrefix(k, "wxa-sidecar.io/") {
			delete(tpl.Labels, k)
		}
	}
	for k := range tpl.Annotations {
		if _, theirs := before.Spec.Template.Annotations[k]; !theirs && strings.HasPrefix(k, "prometheus.io/") {
			delete(tpl.Annotations, k)
		}
	}
	return d
}

// checkUsersKept asserts that nothing of the user's Deployments was lost
// or changed: their init containers in their order, containers,
// annotations, labels, volumes and pod securityContext (fsGroup included);
// and that the unlabelled Deployment is exactly as written.
func checkUsersKept(t *testing.T, f userFixture, r rendered) {
	t.Helper()
	shopIn, workerIn := f.input(t)
	shop, worker := deploymentNamed(t, r, "shop"), deploymentNamed(t, r, "worker")

	var initNames []string
	for _, c := range shop.Spec.Template.Spec.InitContainers {
		if c.Name != sidecarName {
			initNames = append(initNames, c.Name)
		}
	}
	if !slices.Equal(initNames, []string{"migrate", "warm-cache"}) {
		t.Errorf("the user's init containers are %v, want [migrate warm-cache] in that order", initNames)
	}
	ann := shop.Spec.Template.Annotations
	if ann["linkerd.io/inject"] != "enabled" || ann["config.linkerd.io/proxy-cpu-limit"] != "1" {
		t.Errorf("the user's pod annotations were lost: %v", ann)
	}
	ps := shop.Spec.Template.Spec.SecurityContext
	if f.fsGroup && (ps == nil || ps.FSGroup == nil || *ps.FSGroup != 2000) {
		t.Errorf("the user's fsGroup 2000 was lost: %+v", ps)
	}
	if !f.fsGroup && ps != nil && ps.FSGroup != nil {
		t.Errorf("an fsGroup %d was added to the user's pod: it would regroup their volumes", *ps.FSGroup)
	}
	var volumes []string
	for _, v := range shop.Spec.Template.Spec.Volumes {
		volumes = append(volumes, v.Name)
	}
	if !slices.Contains(volumes, "uploads") || !slices.Contains(volumes, "shop-config") {
		t.Errorf("the user's volumes were lost: %v", volumes)
	}

	// And everything else: take ours away and the user's Deployment is
	// what they wrote.
	if got := withoutOurs(shop, shopIn); !reflect.DeepEqual(got, shopIn) {
		gy, _ := yaml.Marshal(got)
		wy, _ := yaml.Marshal(shopIn)
		t.Errorf("without ours, the user's Deployment is\n%s\nwant what they wrote:\n%s", gy, wy)
	}
	if !reflect.DeepEqual(worker, workerIn) {
		gy, _ := yaml.Marshal(worker)
		t.Errorf("the unlabelled Deployment was changed:\n%s", gy)
	}
}

// The sidecar component on a Deployment of the user's own: theirs is kept
// whole, ours is complete, and the sidecar can read its secret whether the
// user's pod has an fsGroup or not (the component may not set one).
func TestSidecarComponentKeepsTheUsersDeployment(t *testing.T) {
	for _, f := range userFixtures() {
		t.Run(f.String(), func(t *testing.T) {
			r := renderUser(t, f, "sidecar")
			checkUsersKept(t, f, r)
			shop := deploymentNamed(t, r, "shop")
			spec := shop.Spec.Template.Spec
			checkSidecar(t, spec, f.inject == injectNative)
			checked, problems := secretFilesReadable(spec)
			if !slices.Contains(checked, "wxa-sidecar reads /var/run/secrets/wxa-sidecar/app-secret") {
				t.Errorf("the app secret was not checked for readability: %v", checked)
			}
			for _, p := range problems {
				t.Error(p)
			}
		})
	}
}

// The model has teeth here: the pre-component mode, 0400, is unreadable
// for uid 65532 in the user's pod without an fsGroup.
func TestSecretModeWithoutFsGroupWouldBeUnreadable(t *testing.T) {
	r := renderUser(t, userFixture{injectNative, false}, "sidecar")
	spec := deploymentNamed(t, r, "shop").Spec.Template.Spec
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == "wxa-sidecar-secret" {
			spec.Volumes[i].Secret.DefaultMode = ptr(int32(0o400))
		}
	}
	if _, problems := secretFilesReadable(spec); len(problems) == 0 {
		t.Error("a 0400 secret without fsGroup was found readable by uid 65532")
	}
}

// Kustomize's strategic merge puts the sidecar first (kustomize#5904);
// docs/kubernetes.md's remedy, a patch of the user's naming the init containers in the
// order they want, works on top of the component.
func TestUsersCanOrderTheInitContainers(t *testing.T) {
	f := userFixture{injectNative, true}
	r := renderUser(t, f, "sidecar")
	var names []string
	for _, c := range deploymentNamed(t, r, "shop").Spec.Template.Spec.InitContainers {
		names = append(names, c.Name)
	}
	if len(names) != 3 || !slices.Contains(names, sidecarName) {
		t.Fatalf("init containers %v", names)
	}

	ordered := materialize(t, variant{user: &f, components: []string{"sidecar"}}, t.TempDir())
	appendFile(t, filepath.Join(ordered, "kustomization.yaml"), `patches:
  - target:
      kind: Deployment
      name: shop
    patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: shop
      spec:
        template:
          spec:
            initContainers:
              - name: migrate
              - name: wxa-sidecar
              - name: warm-cache
`)
	r = render(t, ordered)
	shop := deploymentNamed(t, r, "shop")
	names = nil
	for _, c := range shop.Spec.Template.Spec.InitContainers {
		names = append(names, c.Name)
	}
	if !slices.Equal(names, []string{"migrate", sidecarName, "warm-cache"}) {
		t.Errorf("init containers %v, want the user's order [migrate wxa-sidecar warm-cache]", names)
	}
	checkSidecar(t, shop.Spec.Template.Spec, true)
	checkUsersKept(t, f, r)
}

// The classic sidecar is the native one as an ordinary container, with the
// shutdown settings: classic.yaml repeats native.yaml, and the classic
// overlay converts the base's; all three must agree.
func TestClassicIsTheNativeSidecarAsAContainer(t *testing.T) {
	native := sidecarOf(t, deploymentNamed(t, renderUser(t, userFixture{injectNative, true}, "sidecar"), "shop").Spec.Template.Spec, true)
	classic := sidecarOf(t, deploymentNamed(t, renderUser(t, userFixture{injectClassic, true}, "sidecar"), "shop").Spec.Template.Spec, false)
	overlay := sidecarOf(t, render(t, "overlays/classic-sidecar").deployments[0].Spec.Template.Spec, false)

	want := *native.DeepCopy()
	want.RestartPolicy = nil
	want.Env = append(want.Env, corev1.EnvVar{Name: "SHUTDOWN_DELAY", Value: "10s"}, corev1.EnvVar{Name: "SHUTDOWN_TIMEOUT", Value: "15s"})
	for name, got := range map[string]corev1.Container{"components/sidecar/classic.yaml": classic, "overlays/classic-sidecar": overlay} {
		if !reflect.DeepEqual(got, want) {
			gy, _ := yaml.Marshal(got)
			wy, _ := yaml.Marshal(want)
			t.Errorf("%s's sidecar is\n%s\nwant native.yaml's as a container:\n%s", name, gy, wy)
		}
	}
}

// The podmonitor component merges its annotations into the pod's: were it
// to replace them, a linkerd.io/inject annotation would disappear, and with
// it the mesh.
func TestPodMonitorMergesAnnotations(t *testing.T) {
	for _, f := range []userFixture{{injectNative, true}, {injectClassic, false}} {
		r := renderUser(t, f, "sidecar", "podmonitor")
		ann := deploymentNamed(t, r, "shop").Spec.Template.Annotations
		want := map[string]string{
			"linkerd.io/inject":                 "enabled",
			"config.linkerd.io/proxy-cpu-limit": "1",
			"prometheus.io/scrape":              "true",
			"prometheus.io/port":                "9102",
			"prometheus.io/path":                "/metrics",
		}
		if !reflect.DeepEqual(ann, want) {
			t.Errorf("%s: pod annotations %v, want %v", f, ann, want)
		}
		checkUsersKept(t, f, r)
	}
	ann := renderBaseWith(t, "podmonitor").deployments[0].Spec.Template.Annotations
	if ann["kubectl.kubernetes.io/default-container"] != "app" || ann["prometheus.io/scrape"] != "true" {
		t.Errorf("base+podmonitor: pod annotations %v, want the base's and the scrape ones", ann)
	}
}

// A user may list our components before the sidecar component: the merge
// by name still gives one complete sidecar.
func TestComponentsInAnyOrder(t *testing.T) {
	names := componentNames(t)
	reversed := slices.Clone(names)
	slices.Reverse(reversed)
	for _, f := range []userFixture{{injectNative, false}, {injectClassic, true}} {
		r := renderUser(t, f, reversed...)
		shop := deploymentNamed(t, r, "shop")
		sc := checkSidecar(t, shop.Spec.Template.Spec, f.inject == injectNative)
		if envOf(sc)["QRCODE_ADDR"].Value != ":8081" || envOf(sc)["REDIS_URL"].ValueFrom == nil {
			t.Errorf("%s with %v: the other components' settings were lost", f, reversed)
		}
		checkUsersKept(t, f, r)
	}
}

func appendFile(t *testing.T, name, text string) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
