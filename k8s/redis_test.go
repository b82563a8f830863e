package k8s

import (
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// The Secret the redis component reads the password from, and its key.
const (
	redisSecretName = "wxa-sidecar-redis"
	redisSecretKey  = "password"
)

// checkRedisComponent asserts what the redis component promises in any
// rendering r that includes it, and returns the sidecar.
func checkRedisComponent(t *testing.T, name string, r rendered, d appsv1.Deployment) corev1.Container {
	t.Helper()
	spec := d.Spec.Template.Spec
	sc := checkSidecar(t, spec, isNative(d))
	env := envOf(sc)

	// REDIS_URL and FLEET_SIZE are the user's settings: keys of the
	// ConfigMap wxa-sidecar their kustomization generates, read by
	// reference so that its generated name (hash, prefix) and a merge in an
	// overlay reach the pod.
	raw, err := settingOf(r, env["REDIS_URL"], "redis-url")
	if err != nil {
		t.Fatalf("%s: REDIS_URL: %v", name, err)
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "":
		t.Errorf("%s: REDIS_URL %q is not a redis:// or rediss:// URL", name, raw)
	case u.User != nil:
		if _, has := u.User.Password(); has {
			t.Errorf("%s: REDIS_URL carries a password; it belongs in the Secret %s", name, redisSecretName)
		}
	}
	if _, ok := env["REDIS_PASSWORD"]; ok {
		t.Errorf("%s: the Redis password must come from REDIS_PASSWORD_FILE, never an env value", name)
	}

	// REDIS_PASSWORD_FILE is a file of the Secret's key, on a read-only
	// volume of this container.
	file := env["REDIS_PASSWORD_FILE"].Value
	if !strings.HasPrefix(file, "/") {
		t.Fatalf("%s: REDIS_PASSWORD_FILE %q must be an absolute path", name, file)
	}
	var fromSecret bool
	for _, m := range sc.VolumeMounts {
		if !strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/") {
			continue
		}
		if !m.ReadOnly {
			t.Errorf("%s: %s is on a writable mount", name, file)
		}
		for _, v := range spec.Volumes {
			if v.Name != m.Name || v.Secret == nil || !namedAfter(v.Secret.SecretName, redisSecretName) {
				continue
			}
			mode, source, _, err := projectedFile(v, pathInVolume(m, file))
			if err != nil || source != "Secret "+v.Secret.SecretName+" key "+redisSecretKey {
				t.Errorf("%s: %s comes from %q (%v), want the Secret's key %q", name, file, source, err, redisSecretKey)
			}
			// Readable by all (so no fsGroup is needed), writable by none:
			// only the sidecar mounts the volume (checkSidecar checks).
			if mode&0o333 != 0 {
				t.Errorf("%s: %s is written with mode %04o: read-only is enough", name, file, mode)
			}
			fromSecret = true
		}
	}
	if !fromSecret {
		t.Errorf("%s: %s is not on a volume of the Secret %s", name, file, redisSecretName)
	}
	// The kubelet's ownership rules must let uid 65532 read it: the
	// volumes test checks every file, this says that this one was among
	// those checked.
	checked, problems := secretFilesReadable(spec)
	if !slices.Contains(checked, "wxa-sidecar reads "+file) {
		t.Errorf("%s: %s was not checked for readability: %v", name, file, checked)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", name, p)
	}

	// While Redis is unreachable each replica keeps 1/FLEET_SIZE of the
	// limits: a FLEET_SIZE below the replicas would let the fleet exceed
	// the app's quota.
	rawSize, err := settingOf(r, env["FLEET_SIZE"], "fleet-size")
	if err != nil {
		t.Fatalf("%s: FLEET_SIZE: %v", name, err)
	}
	size, err := strconv.Atoi(rawSize)
	if err != nil || size < 1 {
		t.Errorf("%s: FLEET_SIZE %q must be a positive integer", name, rawSize)
	}
	if d.Spec.Replicas != nil && int32(size) < *d.Spec.Replicas {
		t.Errorf("%s: FLEET_SIZE %d is below the Deployment's %d replicas", name, size, *d.Spec.Replicas)
	}
	return sc
}

// pathInVolume is file's path inside the volume mounted by m.
func pathInVolume(m corev1.VolumeMount, file string) string {
	return path.Join(m.SubPath, strings.TrimPrefix(strings.TrimPrefix(file, m.MountPath), "/"))
}

func TestRedisComponentAlone(t *testing.T) {
	r := renderBaseWith(t, "redis")
	if len(r.deployments) != 1 || len(r.services)+len(r.monitors) != 0 {
		t.Fatalf("base+redis renders %d deployments, %d services, %d monitors; want the Deployment alone",
			len(r.deployments), len(r.services), len(r.monitors))
	}
	sc := checkRedisComponent(t, "base+redis", r, r.deployments[0])
	// The app secret is still where the base put it.
	if envOf(sc)["WECHAT_APP_SECRET_FILE"].Value != "/var/run/secrets/wxa-sidecar/app-secret" {
		t.Error("the redis component moved the app secret")
	}
}

// The redis component on the user's own Deployment, whose first init
// container is theirs: the component adds its own and never patches
// initContainers/0, which is theirs.
func TestRedisComponentOnTheUsersDeployment(t *testing.T) {
	for _, f := range userFixtures() {
		t.Run(f.String(), func(t *testing.T) {
			r := renderUser(t, f, "sidecar", "redis")
			checkRedisComponent(t, f.String(), r, deploymentNamed(t, r, "shop"))
			checkUsersKept(t, f, r)
		})
	}
}

func TestRedisSecretExampleIsOnlyAnExample(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("components", "redis", "secret.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var s corev1.Secret
	strict(t, string(b), &s)
	if s.Name != redisSecretName {
		t.Errorf("the example Secret is %q, want %q", s.Name, redisSecretName)
	}
	if v, ok := s.StringData[redisSecretKey]; !ok || !strings.Contains(v, "REPLACE") {
		t.Errorf("secret.example.yaml holds %q under %q, want a placeholder", v, redisSecretKey)
	}
	kz, err := os.ReadFile(filepath.Join("components", "redis", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(kz), "- secret.example.yaml") {
		t.Error("the example Secret must not be a resource of the component")
	}
}
