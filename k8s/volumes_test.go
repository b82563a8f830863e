package k8s

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// ourContainers are the containers of this project in a pod; the app's
// container is the user's.
var ourContainers = []string{sidecarName}

// fileAttrs is what stat would say of a file in a volume.
type fileAttrs struct {
	uid, gid int64
	mode     int32 // permission bits
}

// kubeletFile is how the kubelet leaves a file of a Secret, ConfigMap or
// projected volume: written by the kubelet (root:root) with the item's
// mode or the volume's defaultMode; then, when the pod has an fsGroup,
// pkg/volume's SetVolumeOwnership chowns it to group fsGroup and ORs in
// 0440, since these volumes are always read-only (0660 for writable ones).
func kubeletFile(mode int32, fsGroup *int64) fileAttrs {
	f := fileAttrs{uid: 0, gid: 0, mode: mode & 0o777}
	if fsGroup != nil {
		f.gid = *fsGroup
		f.mode |= 0o440
	}
	return f
}

// identity is a container process's credentials.
type identity struct {
	uid  int64
	gids []int64 // primary and supplementary groups
}

// identityOf is the process the kubelet starts for c: the container's
// runAsUser/runAsGroup over the pod's; fsGroup and supplementalGroups are
// supplementary groups of every container. A group left to the image is
// not counted, so the check never relies on what the image happens to say.
func identityOf(pod *corev1.PodSecurityContext, c *corev1.SecurityContext) (identity, error) {
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	if c == nil {
		c = &corev1.SecurityContext{}
	}
	var id identity
	switch {
	case c.RunAsUser != nil:
		id.uid = *c.RunAsUser
	case pod.RunAsUser != nil:
		id.uid = *pod.RunAsUser
	default:
		return id, fmt.Errorf("no runAsUser: the uid is the image's, which the manifests cannot be checked against")
	}
	switch {
	case c.RunAsGroup != nil:
		id.gids = append(id.gids, *c.RunAsGroup)
	case pod.RunAsGroup != nil:
		id.gids = append(id.gids, *pod.RunAsGroup)
	}
	if pod.FSGroup != nil {
		id.gids = append(id.gids, *pod.FSGroup)
	}
	id.gids = append(id.gids, pod.SupplementalGroups...)
	return id, nil
}

// canRead is the kernel's read check without capabilities (our containers
// drop ALL, so not even uid 0 has CAP_DAC_OVERRIDE): the owner bits if the
// uid owns the file, else the group bits if one of its groups does, else
// the other bits.
func canRead(id identity, f fileAttrs) bool {
	switch {
	case id.uid == f.uid:
		return f.mode&0o400 != 0
	case slices.Contains(id.gids, f.gid):
		return f.mode&0o040 != 0
	default:
		return f.mode&0o004 != 0
	}
}

// projectedFile finds where the file at rel inside volume v comes from
// and the mode it is written with; ok is false when v is not a Secret,
// ConfigMap or projected volume.
func projectedFile(v corev1.Volume, rel string) (mode int32, source string, ok bool, err error) {
	const kubeDefaultMode = 0o644 // SecretVolumeSourceDefaultMode and the others
	pick := func(items []corev1.KeyToPath, defaultMode *int32, what string) (int32, string, bool, error) {
		mode := int32(kubeDefaultMode)
		if defaultMode != nil {
			mode = *defaultMode
		}
		if len(items) == 0 {
			return mode, what + " key " + rel, true, nil // every key is a file named after it
		}
		for _, it := range items {
			if it.Path == rel {
				if it.Mode != nil {
					mode = *it.Mode
				}
				return mode, what + " key " + it.Key, true, nil
			}
		}
		return 0, "", true, fmt.Errorf("%s lists no item with path %q", what, rel)
	}
	switch {
	case v.Secret != nil:
		return pick(v.Secret.Items, v.Secret.DefaultMode, "Secret "+v.Secret.SecretName)
	case v.ConfigMap != nil:
		return pick(v.ConfigMap.Items, v.ConfigMap.DefaultMode, "ConfigMap "+v.ConfigMap.Name)
	case v.Projected != nil:
		for _, s := range v.Projected.Sources {
			var m int32
			var src string
			var err error
			switch {
			case s.Secret != nil:
				m, src, _, err = pick(s.Secret.Items, v.Projected.DefaultMode, "Secret "+s.Secret.Name)
			case s.ConfigMap != nil:
				m, src, _, err = pick(s.ConfigMap.Items, v.Projected.DefaultMode, "ConfigMap "+s.ConfigMap.Name)
			default:
				continue
			}
			if err == nil {
				return m, src, true, nil
			}
		}
		return 0, "", true, fmt.Errorf("no Secret or ConfigMap source of projected volume %s holds %q", v.Name, rel)
	}
	return 0, "", false, nil
}

// pathsRead are the absolute paths a container is told to read: the values
// of its environment, arguments and command.
func pathsRead(c corev1.Container) []string {
	var paths []string
	for _, s := range slices.Concat(c.Command, c.Args) {
		if strings.HasPrefix(s, "/") {
			paths = append(paths, s)
		}
	}
	for _, e := range c.Env {
		if strings.HasPrefix(e.Value, "/") {
			paths = append(paths, e.Value)
		}
	}
	return paths
}

// secretFilesReadable returns one line per file a container of ours reads
// from a Secret or ConfigMap volume, and the problems: files the kubelet's
// ownership rules would not let that container read.
func secretFilesReadable(spec corev1.PodSpec) (checked, problems []string) {
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		if !slices.Contains(ourContainers, c.Name) {
			continue
		}
		id, idErr := identityOf(spec.SecurityContext, c.SecurityContext)
		for _, p := range pathsRead(c) {
			// The deepest mount holding p is the one the container sees.
			var mount *corev1.VolumeMount
			for i, m := range c.VolumeMounts {
				if (p == m.MountPath || strings.HasPrefix(p, strings.TrimSuffix(m.MountPath, "/")+"/")) &&
					(mount == nil || len(m.MountPath) > len(mount.MountPath)) {
					mount = &c.VolumeMounts[i]
				}
			}
			if mount == nil {
				continue
			}
			rel := path.Join(mount.SubPath, strings.TrimPrefix(strings.TrimPrefix(p, mount.MountPath), "/"))
			mode, source, ok, err := projectedFile(volumes[mount.Name], rel)
			if !ok {
				continue
			}
			checked = append(checked, c.Name+" reads "+p)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s reads %s, but %v", c.Name, p, err))
				continue
			}
			if idErr != nil {
				problems = append(problems, fmt.Sprintf("%s reads %s: %v", c.Name, p, idErr))
				continue
			}
			var fsGroup *int64
			if spec.SecurityContext != nil {
				fsGroup = spec.SecurityContext.FSGroup
			}
			f := kubeletFile(mode, fsGroup)
			if !canRead(id, f) {
				problems = append(problems, fmt.Sprintf("%s (uid %d, groups %v) cannot read %s (%s): the kubelet makes it %d:%d mode %04o",
					c.Name, id.uid, id.gids, p, source, f.uid, f.gid, f.mode))
			}
		}
	}
	return checked, problems
}

// The pod never started with the Secret at 0400 root:root and no fsGroup:
// uid 65532 got permission denied and the sidecar exited 2. The sidecar
// component may not set an fsGroup (the pod's securityContext is the
// user's), so its files must be readable with the user's fsGroup and
// without one: the variants include the user's Deployment both ways.
func TestOurContainersCanReadTheirSecretAndConfigMapFiles(t *testing.T) {
	for name, r := range variants(t) {
		t.Run(name, func(t *testing.T) {
			for _, d := range injected(r) {
				checked, problems := secretFilesReadable(d.Spec.Template.Spec)
				if len(checked) == 0 {
					t.Errorf("%s: no file of ours on a Secret or ConfigMap volume was found to check", d.Name)
				}
				for _, p := range problems {
					t.Errorf("%s: %s", d.Name, p)
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// The model against the cases whose outcome is known, including the one
// that kept the pod from starting.
func TestKubeletOwnershipModel(t *testing.T) {
	nonroot := &corev1.SecurityContext{RunAsUser: ptr(int64(65532)), RunAsGroup: ptr(int64(65532))}
	tests := []struct {
		name      string
		mode      int32
		pod       corev1.PodSecurityContext
		container *corev1.SecurityContext
		want      bool
	}{
		{"0400 without fsGroup, nonroot (the pod that never started)", 0o400, corev1.PodSecurityContext{}, nonroot, false},
		{"0400 with fsGroup 65532, nonroot", 0o400, corev1.PodSecurityContext{FSGroup: ptr(int64(65532))}, nonroot, true},
		{"0400 with any fsGroup: it is a supplementary group", 0o400, corev1.PodSecurityContext{FSGroup: ptr(int64(2000))}, nonroot, true},
		{"0644 without fsGroup, nonroot", 0o644, corev1.PodSecurityContext{}, nonroot, true},
		{"0444 without fsGroup, nonroot (the sidecar component's)", 0o444, corev1.PodSecurityContext{}, nonroot, true},
		{"0444 with the user's fsGroup, nonroot", 0o444, corev1.PodSecurityContext{FSGroup: ptr(int64(2000))}, nonroot, true},
		{"0440 without fsGroup, gid 0", 0o440, corev1.PodSecurityContext{},
			&corev1.SecurityContext{RunAsUser: ptr(int64(65532)), RunAsGroup: ptr(int64(0))}, true},
		{"0400 without fsGroup, uid 0", 0o400, corev1.PodSecurityContext{}, &corev1.SecurityContext{RunAsUser: ptr(int64(0))}, true},
		{"0004 without fsGroup, uid 0: the owner bits alone count", 0o004, corev1.PodSecurityContext{},
			&corev1.SecurityContext{RunAsUser: ptr(int64(0))}, false},
		{"pod-level runAsUser and supplementalGroups", 0o040, corev1.PodSecurityContext{RunAsUser: ptr(int64(1000)),
			SupplementalGroups: []int64{0}}, nil, true},
	}
	for _, tt := range tests {
		id, err := identityOf(&tt.pod, tt.container)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := canRead(id, kubeletFile(tt.mode, tt.pod.FSGroup)); got != tt.want {
			t.Errorf("%s: readable %v, want %v", tt.name, got, tt.want)
		}
	}
	if _, err := identityOf(&corev1.PodSecurityContext{}, &corev1.SecurityContext{}); err == nil {
		t.Error("a container without runAsUser was given an identity")
	}
}

// TestKubeletOwnershipModelOnARealFile does to a real file what the kubelet
// does (chown to the fsGroup, chmod mode|0440) and reads it as a non-root
// process with the container's credentials: the kernel, not the model,
// decides. It needs root to chown and to switch credentials.
func TestKubeletOwnershipModelOnARealFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown the file and start a process as another uid")
	}
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Skip("no cat to read the file with")
	}
	dir := t.TempDir()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil { // t.TempDir's directories are 0700
			t.Fatal(err)
		}
	}
	cases := []struct {
		mode    int32
		fsGroup *int64
		uid     int64
		gid     int64
	}{
		{0o400, nil, 65532, 65532},
		{0o400, ptr(int64(65532)), 65532, 65532},
		{0o400, ptr(int64(2000)), 65532, 65532},
		{0o644, nil, 65532, 65532},
		{0o444, nil, 65532, 65532},
		{0o444, ptr(int64(2000)), 65532, 65532},
		{0o440, nil, 65532, 0},
		{0o600, ptr(int64(65532)), 65532, 65532},
	}
	for i, tc := range cases {
		file := filepath.Join(dir, fmt.Sprintf("secret-%d", i))
		if err := os.WriteFile(file, []byte("s"), 0o600); err != nil {
			t.Fatal(err)
		}
		// What the kubelet does: write root:root with the mode, then apply
		// the fsGroup.
		want := kubeletFile(tc.mode, tc.fsGroup)
		if err := os.Chown(file, int(want.uid), int(want.gid)); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(file, os.FileMode(want.mode)); err != nil {
			t.Fatal(err)
		}
		pod := corev1.PodSecurityContext{FSGroup: tc.fsGroup}
		id, _ := identityOf(&pod, &corev1.SecurityContext{RunAsUser: &tc.uid, RunAsGroup: &tc.gid})
		groups := []uint32{}
		for _, g := range id.gids[1:] {
			groups = append(groups, uint32(g))
		}
		cmd := exec.Command(cat, file)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(tc.uid), Gid: uint32(tc.gid), Groups: groups}}
		out, err := cmd.CombinedOutput()
		readable := err == nil
		if modelled := canRead(id, want); modelled != readable {
			t.Errorf("mode %04o fsGroup %v as %d:%d: the kernel says readable=%v (%s), the model %v",
				tc.mode, tc.fsGroup, tc.uid, tc.gid, readable, strings.TrimSpace(string(out)), modelled)
		}
	}
}
