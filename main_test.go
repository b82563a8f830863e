package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// buildSidecar compiles the real binary once per test run.
var buildSidecar = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "wxa-sidecar-test")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "wxa-sidecar")
	out, err := exec.Command("go", "build", "-ldflags=-X main.version=test-build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// sidecarProcess is the binary running as a child process.
type sidecarProcess struct {
	cmd    *exec.Cmd
	stdout *bufio.Reader
	stderr *wechattest.LogBuffer
	api    string
	admin  string
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startSidecar(t *testing.T, env []string, args ...string) *sidecarProcess {
	t.Helper()
	return startSidecarVia(t, nil, env, args...)
}

// startSidecarVia starts the binary as the last argument of launcher (e.g.
// a shell that lowers a limit, then execs it), or directly without one.
func startSidecarVia(t *testing.T, launcher []string, env []string, args ...string) *sidecarProcess {
	t.Helper()
	p := &sidecarProcess{api: freePort(t), admin: freePort(t)}
	return p.start(t, launcher, append([]string{"LISTEN_ADDR=" + p.api, "ADMIN_ADDR=" + p.admin}, env...), args...)
}

// start runs the binary with env (and PATH) and waits until it is ready;
// it is killed when the test ends.
func (p *sidecarProcess) start(t *testing.T, launcher []string, env []string, args ...string) *sidecarProcess {
	t.Helper()
	bin, err := buildSidecar()
	if err != nil {
		t.Fatal(err)
	}
	p.stderr = &wechattest.LogBuffer{}
	argv := append(append(append([]string{}, launcher...), bin), args...)
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdout = bufio.NewReader(out)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		if t.Failed() {
			t.Logf("sidecar stderr:\n%s", p.stderr.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + p.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("sidecar not ready: %v\n%s", err, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestVersionFlag(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"--version"}, map[string]string{}, &out, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if got := out.String(); got != "wxa-sidecar dev\n" {
		t.Errorf("--version printed %q", got)
	}
}

func TestInvalidConfigExitsWithStatus2(t *testing.T) {
	var stderr bytes.Buffer
	env := map[string]string{"WECHAT_APP_ID": "wx1", "WECHAT_APP_SECRET": "s3cr3t-value", "UPSTREAM_TIMEOUT": "ten", "MAX_BODY_BYTES": "1MB"}
	code := run(context.Background(), nil, env, io.Discard, &stderr)
	if code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(lines) < 2 {
		t.Errorf("want one line per problem, got %q", stderr.String())
	}
	for _, v := range []string{"UPSTREAM_TIMEOUT", "MAX_BODY_BYTES"} {
		if !strings.Contains(stderr.String(), v) {
			t.Errorf("stderr does not name %s: %q", v, stderr.String())
		}
	}
	if strings.Contains(stderr.String(), "s3cr3t-value") {
		t.Error("stderr carries the secret")
	}
}

func TestDemoPrintsOneCurlThatFetchesAnImage(t *testing.T) {
	p := startSidecar(t, nil, "--demo")
	line, err := p.stdout.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(line, "curl ") || !strings.Contains(line, p.api) || !strings.Contains(line, "-o qrcode.jpg") {
		t.Fatalf("demo printed %q, want a curl naming %s and -o qrcode.jpg", line, p.api)
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", line)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	img, err := os.ReadFile(filepath.Join(dir, "qrcode.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(img, []byte{0xFF, 0xD8, 0xFF}) {
		t.Errorf("qrcode.jpg is not a JPEG: %q", img[:min(len(img), 60)])
	}
}

func TestSIGTERMDrainsInFlightRequests(t *testing.T) {
	fake := wechattest.NewServer(wechattest.Options{})
	defer fake.Close()
	p := startSidecar(t, []string{
		"WECHAT_APP_ID=" + wechattest.DemoAppID, "WECHAT_APP_SECRET=" + wechattest.DemoSecret,
		"WECHAT_API_URL=" + fake.URL, "SHUTDOWN_DELAY=300ms", "SHUTDOWN_TIMEOUT=5s",
	})
	// Warm the token so the slow call below is slow only upstream.
	if resp, err := http.Get("http://" + p.api + "/cgi-bin/getcallbackip"); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	fake.SetLatency(time.Second)
	result := make(chan error, 1)
	go func() {
		resp, err := http.Post("http://"+p.api+"/wxa/msg_sec_check", "application/json", strings.NewReader(`{"content":"slow"}`))
		if err != nil {
			result <- err
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"errcode":0`)) {
			result <- fmt.Errorf("status %d body %s", resp.StatusCode, body)
			return
		}
		result <- nil
	}()
	for fake.Calls("/wxa/msg_sec_check") == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-result; err != nil {
		t.Errorf("in-flight request failed during shutdown: %v", err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Errorf("exit: %v, want status 0", err)
	}
	if _, err := net.DialTimeout("tcp", p.api, time.Second); err == nil {
		t.Error("API port still accepts connections after exit")
	}
	if !strings.Contains(p.stderr.String(), `"msg":"stopped"`) {
		t.Errorf("no clean stop logged:\n%s", p.stderr.String())
	}
}
