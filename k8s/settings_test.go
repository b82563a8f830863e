package k8s

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// The components read the user's settings from keys of the ConfigMap
// wxa-sidecar, beside app-id: the redis component by configMapKeyRef, the
// networkpolicy component by replacements. settingsFor is what a user's
// kustomization adds for these components, as docs/kubernetes.md shows.
func settingsFor(components []string) []string {
	var out []string
	if slices.Contains(components, "redis") {
		out = append(out, "redis-url=redis://wxa-sidecar-redis:6379/0", "fleet-size=2")
	}
	if slices.Contains(components, "networkpolicy") {
		out = append(out, "qrcode-from-namespace=ingress-nginx", "monitoring-namespace=monitoring",
			"redis-port=6379", "upstream-port=443", "store-port=443")
	}
	return out
}

// componentBase is the name of a component given as a path.
func componentBase(c string) string { return c[strings.LastIndex(c, "/")+1:] }

func componentBases(paths []string) []string {
	var out []string
	for _, p := range paths {
		out = append(out, componentBase(p))
	}
	return out
}

// settingsMerge is the generator an overlay over a base that generates
// wxa-sidecar adds for these components: behavior: merge.
func settingsMerge(components []string) string {
	lits := settingsFor(componentBases(components))
	if len(lits) == 0 {
		return ""
	}
	s := "configMapGenerator:\n  - name: wxa-sidecar\n    behavior: merge\n    literals:\n"
	for _, l := range lits {
		s += "      - " + l + "\n"
	}
	return s
}

// settingOf resolves an env var the components set from the user's
// ConfigMap: a configMapKeyRef with key, to a ConfigMap the rendering
// holds (its generated name), and returns the value.
func settingOf(r rendered, e corev1.EnvVar, key string) (string, error) {
	if e.Name == "" {
		return "", fmt.Errorf("not set")
	}
	if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.ConfigMapKeyRef == nil {
		return "", fmt.Errorf("%s must come from the ConfigMap wxa-sidecar's key %s: %+v", e.Name, key, e)
	}
	ref := e.ValueFrom.ConfigMapKeyRef
	if ref.Key != key {
		return "", fmt.Errorf("%s reads key %s, want %s", e.Name, ref.Key, key)
	}
	for _, c := range r.configMaps {
		if c.Name == ref.Name {
			v, ok := c.Data[key]
			if !ok {
				return "", fmt.Errorf("ConfigMap %s has no key %s", c.Name, key)
			}
			return v, nil
		}
	}
	return "", fmt.Errorf("reads ConfigMap %s, which the kustomization does not render", ref.Name)
}
