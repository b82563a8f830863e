// Package k8s holds the Kubernetes manifests of wxa-sidecar and the tests
// that render them and check the properties docs/kubernetes.md promises.
package k8s

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// kustomizations are every directory with a kustomization.yaml that can be
// built on its own: the base and each overlay (components are built on top
// of these, see variants).
func kustomizations(t *testing.T) []string {
	t.Helper()
	dirs := []string{"base"}
	entries, err := os.ReadDir("overlays")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join("overlays", e.Name()))
		}
	}
	return dirs
}

// podMonitor is the part of prometheus-operator's CRD we use, decoded
// strictly so a misspelt field fails.
type podMonitor struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Selector            metav1.LabelSelector `json:"selector"`
		PodMetricsEndpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

// object is a rendered object of a kind these tests do not model (a
// component's custom resource, such as a PrometheusRule): its own tests
// decode it; here it must only be a well-formed object.
type object struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Doc        string            `json:"-"`
}

type rendered struct {
	deployments []appsv1.Deployment
	services    []corev1.Service
	configMaps  []corev1.ConfigMap
	monitors    []podMonitor
	policies    []networkingv1.NetworkPolicy
	secrets     []corev1.Secret // only where the user's kustomization generates them
	others      []object
	yaml        []byte // the whole output, as kubectl kustomize would print it
}

// build runs kustomize (krusty, the library kubectl embeds) on dir.
func build(dir string) ([]byte, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resMap, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	return resMap.AsYaml()
}

// render builds a kustomization with krusty and decodes every object
// strictly into its Kubernetes type. No Secret may be rendered: the
// examples never apply one (renderUsers allows the user's own).
func render(t *testing.T, dir string) rendered {
	t.Helper()
	return renderObjects(t, dir, false)
}

// renderUsers renders a kustomization of the user's own, which may
// generate its Secrets (from files kept out of git).
func renderUsers(t *testing.T, dir string) rendered {
	t.Helper()
	return renderObjects(t, dir, true)
}

func renderObjects(t *testing.T, dir string, secrets bool) rendered {
	t.Helper()
	out, err := build(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := rendered{yaml: out}
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
		case "ConfigMap":
			var c corev1.ConfigMap
			strict(t, doc, &c)
			r.configMaps = append(r.configMaps, c)
		case "PodMonitor":
			var m podMonitor
			strict(t, doc, &m)
			r.monitors = append(r.monitors, m)
		case "NetworkPolicy":
			var p networkingv1.NetworkPolicy
			strict(t, doc, &p)
			r.policies = append(r.policies, p)
		case "Secret":
			// The app secret stays out of every kustomization of ours, so
			// that no example value is ever applied.
			if !secrets {
				t.Fatalf("%s renders a Secret", dir)
			}
			var s corev1.Secret
			strict(t, doc, &s)
			r.secrets = append(r.secrets, s)
		default:
			o := object{Doc: doc}
			if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
				t.Fatalf("%s: %v\n%s", dir, err, doc)
			}
			if o.APIVersion == "" || !strings.Contains(o.APIVersion, "/") || o.Metadata.Name == "" {
				t.Fatalf("%s renders an object without a group apiVersion, kind or name:\n%s", dir, doc)
			}
			r.others = append(r.others, o)
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

// Where the sidecar component put the sidecar: the label's value says.
const (
	injectLabel   = "wxa-sidecar.io/inject"
	injectNative  = "true"
	injectClassic = "classic"
	sidecarName   = "wxa-sidecar"
)

// namedAfter says whether name is the final name kustomize gives an object
// named base: base itself, with a namePrefix, and with a generator's hash.
func namedAfter(name, base string) bool {
	if i := strings.LastIndexByte(name, '-'); i >= 0 && generatedHash.MatchString(name[i+1:]) && strings.HasSuffix(name[:i], base) {
		name = name[:i]
	}
	return name == base || strings.HasSuffix(name, "-"+base)
}

// generatedHash is the suffix a kustomize generator appends.
var generatedHash = regexp.MustCompile(`^[a-z0-9]{10}$`)

// isNative says whether d runs the sidecar as a native sidecar, from the
// label the component and the classic overlay set.
func isNative(d appsv1.Deployment) bool { return d.Labels[injectLabel] != injectClassic }

// sidecarOf returns the one wxa-sidecar container of the pod, failing when
// it is missing, listed twice, or in the other list too.
func sidecarOf(t *testing.T, spec corev1.PodSpec, native bool) corev1.Container {
	t.Helper()
	list, other := spec.Containers, spec.InitContainers
	if native {
		list, other = other, list
	}
	var found []corev1.Container
	for _, c := range list {
		if c.Name == sidecarName {
			found = append(found, c)
		}
	}
	for _, c := range other {
		if c.Name == sidecarName {
			t.Errorf("a wxa-sidecar container is also in the other list (native %v)", native)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d wxa-sidecar containers (native %v), want 1", len(found), native)
	}
	return found[0]
}

func envOf(c corev1.Container) map[string]corev1.EnvVar {
	m := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		m[e.Name] = e
	}
	return m
}

func TestEveryKustomizationRenders(t *testing.T) {
	for _, dir := range kustomizations(t) {
		if r := render(t, dir); len(r.deployments) != 1 {
			t.Errorf("%s renders %d deployments, want 1", dir, len(r.deployments))
		}
	}
}

// restricted says whether a container's own securityContext meets the
// restricted profile, seccomp included, without relying on the pod's.
func restricted(s *corev1.SecurityContext) bool {
	return s != nil && s.RunAsNonRoot != nil && *s.RunAsNonRoot && s.RunAsUser != nil && *s.RunAsUser != 0 &&
		s.ReadOnlyRootFilesystem != nil && *s.ReadOnlyRootFilesystem && s.AllowPrivilegeEscalation != nil &&
		!*s.AllowPrivilegeEscalation && s.Capabilities != nil && len(s.Capabilities.Drop) == 1 && s.Capabilities.Drop[0] == "ALL" &&
		s.SeccompProfile != nil && s.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault
}

// checkSidecar asserts what the sidecar component promises on any
// Deployment, the user's included, and returns the sidecar.
func checkSidecar(t *testing.T, spec corev1.PodSpec, native bool) corev1.Container {
	t.Helper()
	sc := sidecarOf(t, spec, native)
	env := envOf(sc)
	if !restricted(sc.SecurityContext) || *sc.SecurityContext.RunAsUser != 65532 {
		t.Errorf("the sidecar lacks its own restricted security context as uid 65532: %+v", sc.SecurityContext)
	}
	if native != (sc.RestartPolicy != nil && *sc.RestartPolicy == corev1.ContainerRestartPolicyAlways) {
		t.Errorf("native %v, but restartPolicy %v", native, sc.RestartPolicy)
	}
	if sc.Image == "" || sc.Image == sidecarName {
		t.Errorf("image %q: the kustomization's images: must name wxa-sidecar", sc.Image)
	}
	for _, e := range sc.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			t.Errorf("the sidecar takes a secret as an env value (%s)", e.Name)
		}
	}
	if len(sc.EnvFrom) > 0 {
		t.Error("the sidecar uses envFrom")
	}
	if env["LISTEN_ADDR"].Value != "127.0.0.1:8080" {
		t.Errorf("LISTEN_ADDR %q, want 127.0.0.1:8080 (only the pod's app may call the API port)", env["LISTEN_ADDR"].Value)
	}
	if ref := env["WECHAT_APP_ID"].ValueFrom; ref == nil || ref.ConfigMapKeyRef == nil || ref.ConfigMapKeyRef.Key != "app-id" ||
		!namedAfter(ref.ConfigMapKeyRef.Name, "wxa-sidecar") {
		t.Errorf("WECHAT_APP_ID must come from the key app-id of the ConfigMap wxa-sidecar: %+v", env["WECHAT_APP_ID"])
	}
	secretFile := env["WECHAT_APP_SECRET_FILE"].Value
	if secretFile == "" || env["WECHAT_APP_SECRET"].Name != "" {
		t.Error("the secret must come from WECHAT_APP_SECRET_FILE, never an env value")
	}
	var mounted bool
	for _, m := range sc.VolumeMounts {
		if strings.HasPrefix(secretFile, m.MountPath+"/") && m.ReadOnly {
			for _, v := range spec.Volumes {
				if v.Name == m.Name && v.Secret != nil && namedAfter(v.Secret.SecretName, "wxa-sidecar") {
					mode, source, _, err := projectedFile(v, pathInVolume(m, secretFile))
					if err != nil || source != "Secret "+v.Secret.SecretName+" key app-secret" {
						t.Errorf("%s comes from %q (%v), want the key app-secret of the Secret wxa-sidecar", secretFile, source, err)
					}
					if mode&0o333 != 0 {
						t.Errorf("%s is written with mode %04o: read-only is enough", secretFile, mode)
					}
					mounted = true
				}
			}
		}
	}
	if !mounted {
		t.Errorf("%s is not on a read-only volume of the Secret wxa-sidecar", secretFile)
	}
	for name, p := range map[string]*corev1.Probe{"readiness": sc.ReadinessProbe, "liveness": sc.LivenessProbe, "startup": sc.StartupProbe} {
		want := map[string]string{"readiness": "/readyz", "liveness": "/healthz", "startup": "/readyz"}[name]
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
	if gml == nil || gml.ResourceFieldRef == nil || gml.ResourceFieldRef.Resource != "limits.memory" || gml.ResourceFieldRef.ContainerName != sidecarName {
		t.Error("GOMEMLIMIT must come from the sidecar's memory limit")
	}
	cacheMax := resource.MustParse(env["CACHE_MAX_BYTES"].Value)
	if cacheMax.IsZero() || cacheMax.Value()*2 > limit.Value() {
		t.Errorf("CACHE_MAX_BYTES %v must be well under the memory limit %v", cacheMax.Value(), limit.Value())
	}
	// Our volumes hold our secrets, readable by anyone who mounts them
	// (0444, so that no fsGroup is needed): only the sidecar may.
	ours := map[string]bool{}
	for _, m := range sc.VolumeMounts {
		ours[m.Name] = true
	}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		for _, m := range c.VolumeMounts {
			if c.Name != sidecarName && ours[m.Name] {
				t.Errorf("container %s mounts the sidecar's volume %s", c.Name, m.Name)
			}
		}
	}
	if !native {
		// Both get SIGTERM at once: the sidecar must outlive the app's
		// drain and still finish within the grace period.
		delay, err1 := time.ParseDuration(env["SHUTDOWN_DELAY"].Value)
		timeout, err2 := time.ParseDuration(env["SHUTDOWN_TIMEOUT"].Value)
		grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
		if spec.TerminationGracePeriodSeconds != nil {
			grace = *spec.TerminationGracePeriodSeconds
		}
		if err1 != nil || err2 != nil || delay <= 0 || delay+timeout >= time.Duration(grace)*time.Second {
			t.Errorf("classic: SHUTDOWN_DELAY %q + SHUTDOWN_TIMEOUT %q must be set and fit the %ds grace period",
				env["SHUTDOWN_DELAY"].Value, env["SHUTDOWN_TIMEOUT"].Value, grace)
		}
	}
	return sc
}

// checkPod asserts what every variant of the example shares: the sidecar,
// and the example app's own settings.
func checkPod(t *testing.T, d appsv1.Deployment, native bool) corev1.Container {
	t.Helper()
	spec := d.Spec.Template.Spec
	sc := checkSidecar(t, spec, native)
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
	if d.Spec.Template.Annotations["kubectl.kubernetes.io/default-container"] != "app" {
		t.Error("the example's own annotation kubectl.kubernetes.io/default-container was lost")
	}
	return sc
}

func TestBaseRunsANativeSidecar(t *testing.T) {
	d := render(t, "base").deployments[0]
	if d.Labels[injectLabel] != injectNative {
		t.Errorf("the example Deployment must carry %s: %q", injectLabel, injectNative)
	}
	checkPod(t, d, true)
	if len(d.Spec.Template.Spec.InitContainers) != 1 {
		t.Errorf("%d init containers, want the sidecar alone", len(d.Spec.Template.Spec.InitContainers))
	}
}

func TestClassicSidecarOverlay(t *testing.T) {
	d := render(t, "overlays/classic-sidecar").deployments[0]
	if d.Labels[injectLabel] != injectClassic || d.Spec.Template.Labels[injectLabel] != injectClassic {
		t.Errorf("the classic overlay must relabel the Deployment and its pods %s: %s, so components patch the container", injectLabel, injectClassic)
	}
	checkPod(t, d, false)
	if len(d.Spec.Template.Spec.InitContainers) != 0 {
		t.Error("the classic overlay must run the sidecar as an ordinary container")
	}
}

// selects says whether a label selector picks pods with these labels.
func selects(t *testing.T, sel *metav1.LabelSelector, podLabels map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %+v: %v", sel, err)
	}
	return !s.Empty() && s.Matches(labels.Set(podLabels))
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
