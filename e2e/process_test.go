package e2e

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// sidecarBinary is the real binary, built once by TestMain; "" under
// -short, where every test that needs it skips.
var sidecarBinary string

// TestMain builds the binary once for every test of the package (under
// -short it builds nothing: the end-to-end tests are the slow ones).
func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "wxa-sidecar-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin := filepath.Join(dir, "wxa-sidecar")
	out, err := exec.Command("go", "build", "-ldflags=-X main.version=test-build", "-o", bin, module).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	sidecarBinary = bin
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildSidecar returns the binary TestMain built, or skips the test under
// -short.
func buildSidecar(t testing.TB) string {
	t.Helper()
	if sidecarBinary == "" {
		t.Skip("-short: end-to-end tests run the real binary")
	}
	return sidecarBinary
}

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
	bin := buildSidecar(t)
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
