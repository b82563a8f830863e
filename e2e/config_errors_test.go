package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"github.com/wxa-sidecar/wxa-sidecar/s3test"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// runBinary runs the real binary with env (and PATH) to its end.
func runBinary(t *testing.T, env []string, args ...string) (exit int, stdout, stderr string) {
	t.Helper()
	bin := buildSidecar(t)
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String(), errOut.String()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, out.String(), errOut.String()
}

const configSecret = "s3cr3t-config-value"

// TestEveryConfigProblemExits2NamingItsVariable: whatever the variable,
// a configuration problem exits 2 before anything starts, with one plain
// line per problem naming the variable, never a secret.
func TestEveryConfigProblemExits2NamingItsVariable(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	app := []string{"WECHAT_APP_ID=wx1", "WECHAT_APP_SECRET=" + configSecret}
	for _, c := range []struct {
		name string
		env  []string
		want []string // each must appear in the line naming the variable
	}{
		{"no secret", []string{"WECHAT_APP_ID=wx1"}, []string{"WECHAT_APP_SECRET"}},
		{"unreadable secret file", []string{"WECHAT_APP_ID=wx1", "WECHAT_APP_SECRET_FILE=" + filepath.Join(dir, "none")}, []string{"WECHAT_APP_SECRET_FILE"}},
		{"limit syntax", append(app, "UPSTREAM_LIMITS=/wxa/getwxacodeunlimit=fast"), []string{"UPSTREAM_LIMITS"}},
		{"unknown limit path", append(app, "UPSTREAM_LIMITS=/wxa/nosuch=10/s"), []string{"UPSTREAM_LIMITS", "/wxa/nosuch", "known:", "/wxa/getwxacodeunlimit"}},
		{"redis scheme", append(app, "REDIS_URL=http://127.0.0.1:6379/0"), []string{"REDIS_URL", "scheme"}},
		{"redis database", append(app, "REDIS_URL=redis://localhost:6379/x"), []string{"REDIS_URL", "database"}},
		{"redis port", append(app, "REDIS_URL=redis://localhost:63x79/0"), []string{"REDIS_URL", "port"}},
		{"redis space", append(app, "REDIS_URL=redis://local host:6379/0"), []string{"REDIS_URL", "invalid character"}},
		{"CA file missing", append(app, "REDIS_URL=rediss://127.0.0.1:6379/0", "REDIS_CA_FILE="+filepath.Join(dir, "none.pem")), []string{"REDIS_CA_FILE"}},
		{"CA file not PEM", append(app, "REDIS_URL=rediss://127.0.0.1:6379/0", "REDIS_CA_FILE="+notPEM), []string{"REDIS_CA_FILE", "PEM"}},
		{"CA file without TLS", append(app, "REDIS_URL=redis://127.0.0.1:6379/0", "REDIS_CA_FILE="+notPEM), []string{"REDIS_CA_FILE"}},
		{"listen address without a port", append(app, "LISTEN_ADDR=8080"), []string{"LISTEN_ADDR", "HOST:PORT"}},
		{"admin port out of range", append(app, "ADMIN_ADDR=127.0.0.1:99999"), []string{"ADMIN_ADDR", "65535"}},
		{"qrcode port not a number", append(app, "QRCODE_ADDR=127.0.0.1:http"), []string{"QRCODE_ADDR", "port"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			exit, _, stderr := runBinary(t, c.env)
			if exit != 2 {
				t.Fatalf("exit %d, want 2; stderr:\n%s", exit, stderr)
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			var named string
			for _, line := range lines {
				if !strings.HasPrefix(line, "wxa-sidecar: config: ") {
					t.Errorf("line %q is not a plain config line", line)
				}
				if strings.Contains(line, c.want[0]) {
					named = line
				}
			}
			if named == "" {
				t.Fatalf("no line names %s:\n%s", c.want[0], stderr)
			}
			for _, w := range c.want[1:] {
				if !strings.Contains(named, w) {
					t.Errorf("%q lacks %q", named, w)
				}
			}
			if strings.Contains(stderr, configSecret) {
				t.Error("stderr carries the secret")
			}
		})
	}
}

// TestAllConfigProblemsAtOnce: one run names every problem, not the first.
func TestAllConfigProblemsAtOnce(t *testing.T) {
	exit, _, stderr := runBinary(t, []string{"WECHAT_APP_ID=wx1", "WECHAT_APP_SECRET=" + configSecret,
		"LISTEN_ADDR=8080", "UPSTREAM_LIMITS=/wxa/nosuch=10/s", "REDIS_URL=redis://localhost:6379/x", "UPSTREAM_TIMEOUT=ten"})
	if exit != 2 {
		t.Fatalf("exit %d, want 2", exit)
	}
	for _, v := range []string{"LISTEN_ADDR", "UPSTREAM_LIMITS", "REDIS_URL", "UPSTREAM_TIMEOUT"} {
		if n := strings.Count(stderr, "wxa-sidecar: config: "+v+":"); n != 1 {
			t.Errorf("%s named %d times, want once:\n%s", v, n, stderr)
		}
	}
}

// TestCheckConfig: --check-config exits 0 on a good configuration (the
// demo's, and one with a reachable Redis and the right password) and 2,
// naming the problem, on a bad one: a refused password, a Redis nobody
// answers on, a bad file. It never reaches WeChat.
func TestCheckConfig(t *testing.T) {
	if exit, out, stderr := runBinary(t, nil, "--demo", "--check-config"); exit != 0 || !strings.Contains(out, "configuration OK") {
		t.Fatalf("demo: exit %d, stdout %q, stderr %s", exit, out, stderr)
	}
	const password = "check-config-pw"
	r := redistest.Start(t, redistest.Options{Password: password})
	dir := t.TempDir()
	good, wrong := filepath.Join(dir, "good"), filepath.Join(dir, "wrong")
	os.WriteFile(good, []byte(password+"\n"), 0o600)
	os.WriteFile(wrong, []byte("not-the-password\n"), 0o600)
	fake := wechattest.NewServer(wechattest.Options{})
	defer fake.Close()
	app := []string{"WECHAT_APP_ID=" + wechattest.DemoAppID, "WECHAT_APP_SECRET=" + wechattest.DemoSecret, "WECHAT_API_URL=" + fake.URL}
	redisURL := "redis://" + r.Addr + "/0"
	for _, c := range []struct {
		name string
		env  []string
		want string // "" for exit 0
	}{
		{"the right password", []string{"REDIS_URL=" + redisURL, "REDIS_PASSWORD_FILE=" + good}, ""},
		{"a refused password", []string{"REDIS_URL=" + redisURL, "REDIS_PASSWORD_FILE=" + wrong}, "REDIS_URL: Redis refused the password"},
		{"no password", []string{"REDIS_URL=" + redisURL}, "REDIS_URL: Redis refused the password"},
		{"nobody listening", []string{"REDIS_URL=redis://127.0.0.1:" + freePortOnly(t) + "/0"}, "REDIS_URL: Redis cannot be reached"},
		{"a bad file", []string{"REDIS_URL=" + redisURL, "REDIS_PASSWORD_FILE=" + filepath.Join(dir, "none")}, "REDIS_PASSWORD_FILE"},
	} {
		t.Run(c.name, func(t *testing.T) {
			exit, out, stderr := runBinary(t, append(app, c.env...), "--check-config")
			if c.want == "" {
				if exit != 0 || !strings.Contains(out, "configuration OK") {
					t.Fatalf("exit %d, stdout %q, stderr %s; want 0", exit, out, stderr)
				}
				return
			}
			if exit != 2 || !strings.Contains(stderr, "wxa-sidecar: config: "+c.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", exit, stderr, c.want)
			}
			if strings.Contains(stderr, "not-the-password") || strings.Contains(stderr, password) {
				t.Error("stderr carries a password")
			}
		})
	}
	if n := fake.TotalCalls(); n != 0 {
		t.Errorf("--check-config made %d calls to WeChat, want 0", n)
	}
}

// freePortOnly is a loopback port nothing listens on.
func freePortOnly(t *testing.T) string {
	addr := freePort(t)
	return addr[strings.LastIndex(addr, ":")+1:]
}

// TestCheckConfigAsksTheStore: --check-config exits 0 when the store's
// bucket exists and the credentials may see it, 2 naming STORE_URL when
// the bucket is missing or the URL is not one the store can use.
func TestCheckConfigAsksTheStore(t *testing.T) {
	s3 := s3test.Start(t)
	s3.MakeBucket(t, "codes")
	access, secret := s3test.CredentialFiles(t)
	app := []string{"WECHAT_APP_ID=" + wechattest.DemoAppID, "WECHAT_APP_SECRET=" + wechattest.DemoSecret,
		"STORE_ENDPOINT=" + s3.Endpoint, "STORE_ACCESS_KEY_FILE=" + access, "STORE_SECRET_KEY_FILE=" + secret}
	for _, c := range []struct {
		name, url, want string
	}{
		{"an existing bucket", "s3://codes/prefix", ""},
		{"a missing bucket", "s3://no-such-bucket/prefix", "STORE_URL: "},
		{"a relative directory", "file://var/lib/wxa-sidecar", "STORE_URL: "},
		{"an unknown scheme", "ftp://codes/prefix", "STORE_URL: "},
	} {
		t.Run(c.name, func(t *testing.T) {
			exit, out, stderr := runBinary(t, append(app, "STORE_URL="+c.url), "--check-config")
			if c.want == "" {
				if exit != 0 || !strings.Contains(out, "configuration OK") {
					t.Fatalf("exit %d, stdout %q, stderr %s; want 0", exit, out, stderr)
				}
				return
			}
			if exit != 2 || !strings.Contains(stderr, "wxa-sidecar: config: "+c.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", exit, stderr, c.want)
			}
			if strings.Contains(stderr, s3test.SecretKey) {
				t.Error("stderr carries the store's secret key")
			}
		})
	}
}
