package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/config"
	"github.com/wxa-sidecar/wxa-sidecar/sidecar"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// logLines are the sidecar's stderr lines whose msg is msg, parsed.
func logLines(t *testing.T, stderr, msg string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(stderr), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			lines = append(lines, m)
		}
	}
	return lines
}

// waitForLines waits up to 15 s for n lines of msg: a line is written as
// its request ends, which may be after the caller has the whole answer.
func waitForLines(t *testing.T, p *sidecarProcess, msg string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		lines := logLines(t, p.stderr.String(), msg)
		if len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %q lines, want %d:\n%s", len(lines), msg, n, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHelpListsEveryVariableAndExits0(t *testing.T) {
	bin := buildSidecar(t)
	for _, flag := range []string{"--help", "-h", "-help"} {
		cmd := exec.Command(bin, flag)
		// Help needs no configuration: nothing in the environment.
		cmd.Env = []string{}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s: %v, want exit 0\n%s", flag, err, stderr.String())
		}
		help := stdout.String()
		for _, v := range config.Variables() {
			want := v.Name
			if v.Default != "" {
				want += " (default " + v.Default + ")"
			}
			if !strings.Contains(help, "  "+want+"\n") {
				t.Errorf("%s does not list %q", flag, want)
			}
			// The description's first words, wherever the line wraps.
			first := strings.Join(strings.Fields(v.Help)[:min(3, len(strings.Fields(v.Help)))], " ")
			if !strings.Contains(help, first) {
				t.Errorf("%s lacks the meaning of %s (%q)", flag, v.Name, first)
			}
		}
		for _, want := range []string{"LISTEN_ADDR (default 127.0.0.1:8080)", "--demo", "--version", "-h, --help",
			"wxa-sidecar pregen --help", "GOMEMLIMIT"} {
			if !strings.Contains(help, want) {
				t.Errorf("%s lacks %q", flag, want)
			}
		}
		if stderr.Len() != 0 {
			t.Errorf("%s wrote to stderr: %q", flag, stderr.String())
		}
	}
}

// TestAccessLogOverARealProcess: one line per request on the API and
// QRCODE_ADDR ports, none for the admin port, and never a token or secret.
func TestAccessLogOverARealProcess(t *testing.T) {
	qrcodeAddr := freePort(t)
	p, _ := startWithFake(t, "ACCESS_LOG=true", "QRCODE_ADDR="+qrcodeAddr)
	const callerToken = "caller-token-never-logged"
	api := "http://" + p.api
	resp, err := http.Post(api+"/wxa/getwxacodeunlimit?access_token="+callerToken, "application/json",
		strings.NewReader(`{"scene":"logged"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_, classic := get(t, api+"/cgi-bin/token?grant_type=client_credential&appid="+wechattest.DemoAppID+"&secret="+wechattest.DemoSecret)
	resp, err = http.Post(api+"/cgi-bin/stable_token", "application/json", strings.NewReader(
		`{"grant_type":"client_credential","appid":"`+wechattest.DemoAppID+`","secret":"`+wechattest.DemoSecret+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	stable, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/status"} {
		get(t, "http://"+p.admin+path)
	}
	get(t, "http://"+qrcodeAddr+"/qrcode?scene=logged")

	lines := waitForLines(t, p, "request", 4)
	stderr := p.stderr.String()
	if len(lines) != 4 {
		t.Fatalf("%d access log lines for 4 requests on the API and QRCODE_ADDR ports:\n%s", len(lines), stderr)
	}
	byPath := map[string]map[string]any{}
	for _, l := range lines {
		byPath[l["listener"].(string)+" "+l["path"].(string)] = l
	}
	code := byPath["api /wxa/getwxacodeunlimit"]
	if code == nil || code["endpoint"] != "/wxa/getwxacodeunlimit" || code["status"] != 200.0 ||
		code["cache_status"] != "fwd=uri-miss; stored" || code["app"] != wechattest.DemoAppID || code["level"] != "INFO" {
		t.Errorf("code request logged as %v", code)
	}
	if _, isString := code["duration"].(string); !isString {
		t.Errorf("duration %#v, want a string", code["duration"])
	}
	for _, key := range []string{"api /cgi-bin/token", "api /cgi-bin/stable_token"} {
		if l := byPath[key]; l == nil || l["status"] != 200.0 || l["errcode"] != 0.0 {
			t.Errorf("%s logged as %v", key, l)
		}
	}
	if l := byPath["qrcode /qrcode"]; l == nil || l["cache_status"] != "hit" || l["endpoint"] != "qrcode" {
		t.Errorf("QRCODE_ADDR request logged as %v", l)
	}
	var tokens []string
	for _, body := range [][]byte{classic, stable} {
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		if json.Unmarshal(body, &tok); tok.AccessToken == "" {
			t.Fatalf("no token in %s", body)
		}
		tokens = append(tokens, tok.AccessToken)
	}
	for _, secret := range append(tokens, callerToken, wechattest.DemoSecret, "access_token=", "scene") {
		if strings.Contains(stderr, secret) {
			t.Errorf("stderr carries %q:\n%s", secret, stderr)
		}
	}
}

func TestAccessLogSilencedAtLogLevelWarn(t *testing.T) {
	p, _ := startWithFake(t, "ACCESS_LOG=true", "LOG_LEVEL=warn")
	for range 3 {
		if code, _ := get(t, "http://"+p.api+"/qrcode?scene=quiet"); code != 200 {
			t.Fatalf("/qrcode %d", code)
		}
	}
	// The requests are counted once they end; their lines would be
	// written before that.
	deadline := time.Now().Add(15 * time.Second)
	for metricValue(t, p, `wxa_sidecar_requests_total{code="200",route="qrcode"}`) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("the requests were never counted")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if lines := logLines(t, p.stderr.String(), "request"); len(lines) != 0 {
		t.Errorf("LOG_LEVEL=warn wrote %d access log lines", len(lines))
	}
}

const browserAccept = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"

func getWithAccept(t *testing.T, u, accept string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestStatusIsHTMLForABrowserAndJSONForEveryoneElse(t *testing.T) {
	p, _ := startWithFake(t)
	if code, _ := get(t, "http://"+p.api+"/qrcode?scene=status-page"); code != 200 {
		t.Fatalf("/qrcode %d", code)
	}
	status := "http://" + p.admin + "/status"
	resp, page := getWithAccept(t, status, browserAccept)
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/html; charset=utf-8" {
		t.Fatalf("browser: %d %q, want 200 text/html", resp.StatusCode, ct)
	}
	if resp.Header.Get("Vary") != "Accept" {
		t.Errorf("Vary %q, want Accept", resp.Header.Get("Vary"))
	}
	for _, want := range []string{"<table", "wxa-sidecar test-build", wechattest.DemoAppID, "ready", "token expires",
		"UTC&#43;8)", "50 of 50", "Cache hit ratio", "/wxa/getwxacodeunlimit", "<svg"} {
		if !bytes.Contains(page, []byte(want)) {
			t.Errorf("the HTML page lacks %q:\n%s", want, page)
		}
	}
	for _, accept := range []string{"", "*/*", "application/json", "application/json, text/html", "text/html;q=0, application/json"} {
		resp, body := getWithAccept(t, status, accept)
		var s sidecar.StatusReport
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" || json.Unmarshal(body, &s) != nil {
			t.Errorf("Accept %q: %q, want JSON:\n%.200s", accept, ct, body)
			continue
		}
		if len(s.Apps) != 1 || s.Apps[0].AppID != wechattest.DemoAppID || s.Cache.Stored != 1 {
			t.Errorf("Accept %q: JSON lacks the app or the cache: %s", accept, body)
		}
	}
}

// TestStartupAndShutdownLogDurationsAsStrings: "25s", not 25000000000.
func TestStartupAndShutdownLogDurationsAsStrings(t *testing.T) {
	p, _ := startWithFake(t, "SHUTDOWN_TIMEOUT=7s", "BODY_READ_TIMEOUT=1500ms")
	started := waitForLines(t, p, "wxa-sidecar started", 1)[0]
	cfg, _ := started["config"].(map[string]any)
	want := map[string]string{"body_read_timeout": "1.5s", "shutdown_timeout": "7s", "shutdown_delay": "0s",
		"upstream_timeout": "10s", "token_refresh_margin": "3m0s", "cache_ttl": "24h0m0s"}
	for k, v := range want {
		if cfg[k] != v {
			t.Errorf("start-up line config.%s = %#v, want the string %q", k, cfg[k], v)
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("exit: %v", err)
	}
	lines := logLines(t, p.stderr.String(), "shutting down")
	if len(lines) != 1 || lines[0]["delay"] != "0s" || lines[0]["timeout"] != "7s" {
		t.Errorf("shutdown line %v, want delay \"0s\" and timeout \"7s\"", lines)
	}
}

// TestDefaultListenAddrIsLoopback starts the binary, then the demo, with
// LISTEN_ADDR unset: the API port is 127.0.0.1:8080, never every interface.
func TestDefaultListenAddrIsLoopback(t *testing.T) {
	for _, args := range [][]string{nil, {"--demo"}} {
		// The port itself must be free for the default to bind.
		ln, err := net.Listen("tcp", "127.0.0.1:8080")
		if err != nil {
			t.Skipf("127.0.0.1:8080 is taken here: %v", err)
		}
		ln.Close()
		fake := wechattest.NewServer(wechattest.Options{})
		t.Cleanup(fake.Close)
		env := []string{"WECHAT_APP_ID=" + wechattest.DemoAppID, "WECHAT_APP_SECRET=" + wechattest.DemoSecret,
			"WECHAT_API_URL=" + fake.URL}
		p := startWithoutListenAddr(t, env, args...)
		started := waitForLines(t, p, "wxa-sidecar started", 1)[0]
		if started["api"] != "127.0.0.1:8080" {
			t.Errorf("%v: the API port is %v, want 127.0.0.1:8080", args, started["api"])
		}
		if code, _ := get(t, "http://127.0.0.1:8080/cgi-bin/getcallbackip"); code != 200 {
			t.Errorf("%v: the API port on 127.0.0.1:8080 answered %d", args, code)
		}
		if len(args) > 0 {
			line, err := p.stdout.ReadString('\n')
			if err != nil || !strings.Contains(line, "http://127.0.0.1:8080/") {
				t.Errorf("the demo printed %q (%v), want a curl to 127.0.0.1:8080", line, err)
			}
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		if err := p.cmd.Wait(); err != nil {
			t.Fatalf("%v: exit %v", args, err)
		}
	}
}

// startWithoutListenAddr is startSidecar leaving LISTEN_ADDR to its default.
func startWithoutListenAddr(t *testing.T, env []string, args ...string) *sidecarProcess {
	t.Helper()
	p := &sidecarProcess{admin: freePort(t)}
	return p.start(t, nil, append([]string{"ADMIN_ADDR=" + p.admin}, env...), args...)
}
