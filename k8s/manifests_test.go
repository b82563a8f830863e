// Package k8s holds the Kubernetes manifests of wxa-sidecar and the tests
// that render them and check the properties the README promises.
package k8s

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// kustomizations are every directory with a kustomization.yaml that can be
// built on its own (components are built through overlays/full).
var kustomizations = []string{"base", "overlays/full", "overlays/classic-sidecar"}

// podMonitor is the part of prometheus-operator's CRD we use, decoded
// strictly so a misspelt field fails.
type podMonitor struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		PodMetricsEndpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

type rendered struct {
	deployments []appsv1.Deployment
	services    []corev1.Service
	monitors    []podMonitor
}

// render builds a kustomization with krusty and decodes every object
// strictly into its Kubernetes type.
func render(t *testing.T, dir string) rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resMap, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	out, err := resMap.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		if theirs, err := exec.Command(kubectl, "kustomize", dir).Output(); err == nil && !bytes.Equal(theirs, out) {
			t.Logf("kubectl kustomize %s renders differently from krusty", dir)
		}
	}
	var r rendered
	for _, doc := range strings.Split(string(out), "\n---\n") {
		var meta struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case "Deployment":
			var d appsv1.Deployment
			strict(t, doc, &d)
			r.deployments = append(r.deployments, d)
		case "Service":
			var s corev1.Service
			strict(t, doc, &s)
			r.services = append(r.services, s)
		case "PodMonitor":
			var m podMonitor
			strict(t, doc, &m)
			r.monitors = append(r.monitors, m)
		case "PrometheusRule":
			// components/prometheusrule: prometheusrule_test.go checks it.
		default:
			t.Fatalf("%s renders an unexpected %q", dir, meta.Kind)
		}
	}
	return r
}

// strict decodes YAML refusing unknown fields and wrong types.
func strict(t *testing.T, doc string, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict([]byte(doc), v); err != nil {
		t.Fatalf("strict decode: %v\n%s", err, doc)
	}
}

func TestStrictDecodingCatchesMistakes(t *testing.T) {
	for _, doc := range []string{
		"apiVersion: apps/v1\nkind: Deployment\nspec:\n  replica: 2\n",
		"apiVersion: apps/v1\nkind: Deployment\nspec:\n  replicas: two\n",
	} {
		var d appsv1.Deployment
		if err := yaml.UnmarshalStrict([]byte(doc), &d); err == nil {
			t.Errorf("strict decoding accepted:\n%s", doc)
		}
	}
	var m podMonitor
	if err := yaml.UnmarshalStrict([]byte("spec:\n  podMetricEndpoints: []\n"), &m); err == nil {
		t.Error("a misspelt PodMonitor field was accepted")
	}
}

func sidecarOf(t *testing.T, spec corev1.PodSpec, native bool) corev1.Container {
	t.Helper()
	list := spec.Containers
	if native {
		list = spec.InitContainers
	}
	for _, c := range list {
		if c.Name == "wxa-sidecar" {
			return c
		}
	}
	t.Fatalf("no wxa-sidecar container (native %v)", native)
	return corev1.Container{}
}

func envOf(c corev1.Container) map[string]corev1.EnvVar {
	m := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		m[e.Name] = e
	}
	return m
}

func TestEveryKustomizationRenders(t *testing.T) {
	for _, dir := range kustomizations {
		if r := render(t, dir); len(r.deployments) != 1 {
			t.Errorf("%s renders %d deployments, want 1", dir, len(r.deployments))
		}
	}
}

// checkPod asserts what every variant shares.
func checkPod(t *testing.T, d appsv1.Deployment, native bool) corev1.Container {
	t.Helper()
	spec := d.Spec.Template.Spec
	sc := sidecarOf(t, spec, native)
	env := envOf(sc)
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken must be false")
	}
	if ps := spec.SecurityContext; ps == nil || ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("pod seccompProfile must be RuntimeDefault")
	}
	for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
		s := c.SecurityContext
		if s == nil || s.RunAsNonRoot == nil || !*s.RunAsNonRoot || s.RunAsUser == nil || *s.RunAsUser != 65532 ||
			s.ReadOnlyRootFilesystem == nil || !*s.ReadOnlyRootFilesystem || s.AllowPrivilegeEscalation == nil ||
			*s.AllowPrivilegeEscalation || s.Capabilities == nil || len(s.Capabilities.Drop) != 1 || s.Capabilities.Drop[0] != "ALL" {
			t.Errorf("container %s lacks the restricted security context", c.Name)
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				t.Errorf("container %s takes a secret as an env value (%s)", c.Name, e.Name)
			}
		}
		if len(c.EnvFrom) > 0 {
			t.Errorf("container %s uses envFrom", c.Name)
		}
	}
	if env["LISTEN_ADDR"].Value != "127.0.0.1:8080" {
		t.Errorf("LISTEN_ADDR %q, want 127.0.0.1:8080 (only the pod's app may call the API port)", env["LISTEN_ADDR"].Value)
	}
	secretFile := env["WECHAT_APP_SECRET_FILE"].Value
	if secretFile == "" || env["WECHAT_APP_SECRET"].Name != "" {
		t.Error("the secret must come from WECHAT_APP_SECRET_FILE, never an env value")
	}
	var mounted bool
	for _, m := range sc.VolumeMounts {
		if strings.HasPrefix(secretFile, m.MountPath+"/") && m.ReadOnly {
			for _, v := range spec.Volumes {
				if v.Name == m.Name && v.Secret != nil {
					mounted = true
				}
			}
		}
	}
	if !mounted {
		t.Errorf("%s is not on a read-only Secret volume", secretFile)
	}
	for name, p := range map[string]*corev1.Probe{"readiness": sc.ReadinessProbe, "liveness": sc.LivenessProbe} {
		want := map[string]string{"readiness": "/readyz", "liveness": "/healthz"}[name]
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want || p.HTTPGet.Port.StrVal != "admin" {
			t.Errorf("%s probe must GET %s on the named port admin", name, want)
		}
	}
	limit := sc.Resources.Limits[corev1.ResourceMemory]
	request := sc.Resources.Requests[corev1.ResourceMemory]
	if limit.IsZero() || request.Cmp(limit) != 0 {
		t.Errorf("memory request %v and limit %v must be set and equal", request.String(), limit.String())
	}
	gml := env["GOMEMLIMIT"].ValueFrom
	if gml == nil || gml.ResourceFieldRef == nil || gml.ResourceFieldRef.Resource != "limits.memory" || gml.ResourceFieldRef.ContainerName != "wxa-sidecar" {
		t.Error("GOMEMLIMIT must come from the sidecar's memory limit")
	}
	cacheMax := resource.MustParse(env["CACHE_MAX_BYTES"].Value)
	if cacheMax.IsZero() || cacheMax.Value()*2 > limit.Value() {
		t.Errorf("CACHE_MAX_BYTES %v must be well under the memory limit %v", cacheMax.Value(), limit.Value())
	}
	var app corev1.Container
	for _, c := range spec.Containers {
		if c.Name == "app" {
			app = c
		}
	}
	if envOf(app)["WECHAT_API_BASE_URL"].Value != "http://127.0.0.1:8080" {
		t.Error("the app's WeChat base URL must be http://127.0.0.1:8080")
	}
	return sc
}

func TestBaseRunsANativeSidecar(t *testing.T) {
	d := render(t, "base").deployments[0]
	sc := checkPod(t, d, true)
	if sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Error("the sidecar must be an init container with restartPolicy Always")
	}
	if p := sc.StartupProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port.StrVal != "admin" {
		t.Error("the startup probe must GET /readyz on the port admin, so the app starts once the API port listens")
	}
}

func TestClassicSidecarOverlay(t *testing.T) {
	d := render(t, "overlays/classic-sidecar").deployments[0]
	sc := checkPod(t, d, false)
	if len(d.Spec.Template.Spec.InitContainers) != 0 || sc.RestartPolicy != nil {
		t.Error("the classic overlay must run the sidecar as an ordinary container")
	}
	delay := envOf(sc)["SHUTDOWN_DELAY"].Value
	if delay == "" {
		t.Fatal("the classic overlay needs SHUTDOWN_DELAY so the app drains first")
	}
	grace := d.Spec.Template.Spec.TerminationGracePeriodSeconds
	if grace == nil || *grace <= 10+25 {
		t.Errorf("terminationGracePeriodSeconds %v must exceed SHUTDOWN_DELAY + SHUTDOWN_TIMEOUT (10s + 25s)", grace)
	}
}

func TestOptionalComponents(t *testing.T) {
	r := render(t, "overlays/full")
	d := r.deployments[0]
	sc := checkPod(t, d, true)
	if len(r.monitors) != 1 || len(r.monitors[0].Spec.PodMetricsEndpoints) != 1 ||
		r.monitors[0].Spec.PodMetricsEndpoints[0].Port != "admin" || r.monitors[0].Spec.PodMetricsEndpoints[0].Path != "/metrics" {
		t.Errorf("PodMonitor must scrape port admin at /metrics: %+v", r.monitors)
	}
	ann := d.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != "9102" || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("prometheus.io annotations %v", ann)
	}
	if envOf(sc)["QRCODE_ADDR"].Value != ":8081" {
		t.Error("the qrcode component must set QRCODE_ADDR")
	}
	if len(r.services) != 1 {
		t.Fatalf("%d services, want 1", len(r.services))
	}
	for _, p := range r.services[0].Spec.Ports {
		if p.TargetPort.StrVal != "qrcode" || p.TargetPort.IntValue() == 8080 || p.Port == 8080 {
			t.Errorf("the Service exposes %+v; only the qrcode port may be behind a Service", p)
		}
	}
}

func TestSecretExampleIsOnlyAnExample(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("base", "secret.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var s corev1.Secret
	strict(t, string(b), &s)
	if v := s.StringData["app-secret"]; !strings.Contains(v, "REPLACE") {
		t.Errorf("secret.example.yaml holds %q, want a placeholder", v)
	}
	kz, _ := os.ReadFile(filepath.Join("base", "kustomization.yaml"))
	if bytes.Contains(kz, []byte("- secret.example.yaml")) {
		t.Error("the example secret must not be a resource of the base")
	}
}
