package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// waitForStderr waits up to 15 s for the sidecar to log want.
func waitForStderr(t *testing.T, p *sidecarProcess, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(p.stderr.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the sidecar never logged %q", want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// assertEveryLineJSON checks what the sidecar wrote to stderr, line by line.
func assertEveryLineJSON(t *testing.T, stderr string) {
	t.Helper()
	for line := range strings.SplitSeq(strings.TrimSpace(stderr), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Errorf("stderr line is not JSON: %q", line)
		}
	}
}

// TestStalledBodyOnAdminAndQRCodePortsIsClosed: a request that declares a
// body it never sends must not hold its connection on the ports that read
// no bodies.
func TestStalledBodyOnAdminAndQRCodePortsIsClosed(t *testing.T) {
	qrcodeAddr := freePort(t)
	p, _ := startWithFake(t, "QRCODE_ADDR="+qrcodeAddr)
	cases := []struct{ name, addr, request string }{
		{"admin /healthz", p.admin, "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"},
		{"admin /metrics", p.admin, "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"},
		{"QRCODE_ADDR /qrcode", qrcodeAddr, "GET /qrcode?scene=stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"},
		{"QRCODE_ADDR chunked", qrcodeAddr, "GET /qrcode?scene=stalled HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			conn, err := net.Dial("tcp", c.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, c.request); err != nil {
				t.Fatal(err)
			}
			// The test's safety net, not a figure under test.
			conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			got, err := io.ReadAll(conn)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("connection still open 30 s after the headers (received %q)", got)
			}
		})
	}
}

// TestNetHTTPServerErrorsOnStderrAreJSON makes the admin server's accept
// fail (no file descriptor left) so net/http logs through ErrorLog.
func TestNetHTTPServerErrorsOnStderrAreJSON(t *testing.T) {
	fake := wechattest.NewServer(wechattest.Options{})
	t.Cleanup(fake.Close)
	p := startSidecarVia(t, []string{"sh", "-c", `ulimit -n 40 && exec "$@"`, "sh"},
		[]string{"WECHAT_APP_ID=" + wechattest.DemoAppID, "WECHAT_APP_SECRET=" + wechattest.DemoSecret,
			"WECHAT_API_URL=" + fake.URL})
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 80 {
		c, err := net.Dial("tcp", p.admin)
		if err != nil {
			break
		}
		conns = append(conns, c)
	}
	waitForStderr(t, p, "Accept error")
	assertEveryLineJSON(t, p.stderr.String())
}

// unsolicitedUpstream answers every request with a token, then sends a
// second response nobody asked for on the idle connection: http.Transport
// logs that with package log.
func unsolicitedUpstream(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				req, err := http.ReadRequest(bufio.NewReader(conn))
				if err != nil {
					return
				}
				io.Copy(io.Discard, req.Body)
				body := `{"errcode":0,"access_token":"unsolicited-test-token-0123456789","expires_in":7200}`
				fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
				time.Sleep(200 * time.Millisecond)
				io.WriteString(conn, "HTTP/1.1 204 No Content\r\n\r\n")
				time.Sleep(time.Second)
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

func TestStandardLibraryLogLinesAreJSON(t *testing.T) {
	p := startSidecar(t, []string{"WECHAT_APP_ID=" + wechattest.DemoAppID, "WECHAT_APP_SECRET=" + wechattest.DemoSecret,
		"WECHAT_API_URL=" + unsolicitedUpstream(t)})
	// The start-up token fetch leaves the connection idle; nothing else
	// may use it before the unsolicited bytes arrive.
	waitForStderr(t, p, "Unsolicited response received on idle HTTP channel")
	assertEveryLineJSON(t, p.stderr.String())
}

// heldUpstream serves the fake WeChat, except that calls to the held paths
// wait until the test ends: requests the sidecar cannot finish by itself.
type heldUpstream struct {
	*httptest.Server
	mu      sync.Mutex
	arrived map[string]int
	held    map[string]bool
	release func() // lets every held call through
}

func newHeldUpstream(t *testing.T, held ...string) *heldUpstream {
	fake := wechattest.New(wechattest.Options{})
	u := &heldUpstream{arrived: map[string]int{}, held: map[string]bool{}}
	release := make(chan struct{})
	u.release = sync.OnceFunc(func() { close(release) })
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.arrived[r.URL.Path]++
		hold := u.held[r.URL.Path]
		u.mu.Unlock()
		if hold {
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(u.Close)
	t.Cleanup(u.release)
	u.hold(held...)
	return u
}

func (u *heldUpstream) hold(paths ...string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, p := range paths {
		u.held[p] = true
	}
}

func (u *heldUpstream) calls(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.arrived[path]
}

func startWithUpstream(t *testing.T, upstreamURL string, env ...string) *sidecarProcess {
	return startSidecar(t, append([]string{"WECHAT_APP_ID=" + wechattest.DemoAppID,
		"WECHAT_APP_SECRET=" + wechattest.DemoSecret, "WECHAT_API_URL=" + upstreamURL}, env...))
}

func doAsync(req *http.Request) <-chan response {
	ch := make(chan response, 1)
	go func() {
		// A transport of its own: no connection shared with other tests.
		client := &http.Client{Transport: &http.Transport{}}
		resp, err := client.Do(req)
		if err != nil {
			ch <- response{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		ch <- response{status: resp.StatusCode, header: resp.Header, body: string(b), err: err}
	}()
	return ch
}

func TestSIGTERMAnswersRequestsStillWaiting503(t *testing.T) {
	up := newHeldUpstream(t)
	qrcodeAddr := freePort(t)
	p := startWithUpstream(t, up.URL, "SHUTDOWN_DELAY=0s", "SHUTDOWN_TIMEOUT=2s", "QRCODE_ADDR="+qrcodeAddr)
	// Warm the token so that only the calls below wait.
	if code, _ := get(t, "http://"+p.api+"/cgi-bin/openapi/quota/get"); code != http.StatusOK {
		t.Fatalf("warm-up: %d", code)
	}
	up.hold("/cgi-bin/getcallbackip", "/wxa/getwxacodeunlimit")
	passthrough, _ := http.NewRequest(http.MethodGet, "http://"+p.api+"/cgi-bin/getcallbackip", nil)
	code, _ := http.NewRequest(http.MethodPost, "http://"+p.api+"/wxa/getwxacodeunlimit", strings.NewReader(`{"scene":"drained"}`))
	qr, _ := http.NewRequest(http.MethodGet, "http://"+qrcodeAddr+"/qrcode?scene=drained-qr", nil)
	answers := map[string]<-chan response{"passthrough": doAsync(passthrough), "code": doAsync(code), "QRCODE_ADDR": doAsync(qr)}
	waitFor(t, "both calls upstream", func() bool {
		return up.calls("/cgi-bin/getcallbackip") == 1 && up.calls("/wxa/getwxacodeunlimit") == 2
	})
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for name, ch := range answers {
		t.Run(name, func(t *testing.T) { assertDrained503(t, <-ch) })
	}
	if err := p.cmd.Wait(); err != nil {
		t.Errorf("exit: %v, want status 0", err)
	}
	assertEveryLineJSON(t, p.stderr.String())
}

// TestResponsesFromSIGTERMOnCloseTheConnection: from SIGTERM on, a
// response ends its connection, so the caller's next request opens a new
// one instead of racing the close.
func TestResponsesFromSIGTERMOnCloseTheConnection(t *testing.T) {
	up := newHeldUpstream(t)
	p := startWithUpstream(t, up.URL, "SHUTDOWN_DELAY=3s", "SHUTDOWN_TIMEOUT=5s")
	conn, err := net.Dial("tcp", p.api)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	send := func() { io.WriteString(conn, "GET /cgi-bin/getcallbackip HTTP/1.1\r\nHost: x\r\n\r\n") }
	receive := func() *http.Response {
		t.Helper()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	send()
	if resp := receive(); resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("before SIGTERM: %d, Connection: close %v; want 200 on a kept connection", resp.StatusCode, resp.Close)
	}
	// The second request on the connection is in flight at SIGTERM.
	up.hold("/cgi-bin/getcallbackip")
	send()
	waitFor(t, "the second call upstream", func() bool { return up.calls("/cgi-bin/getcallbackip") == 2 })
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitForStderr(t, p, `"msg":"shutting down"`)
	up.release()
	if resp := receive(); resp.StatusCode != http.StatusOK || !resp.Close {
		t.Errorf("in flight at SIGTERM: %d, Connection: close %v; want 200 and the connection closed", resp.StatusCode, resp.Close)
	}
	// SHUTDOWN_DELAY: still serving new connections, one request each.
	resp, err := http.Get("http://" + p.api + "/cgi-bin/getcallbackip")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !resp.Close {
		t.Errorf("during SHUTDOWN_DELAY: %d, Connection: close %v; want 200 and the connection closed", resp.StatusCode, resp.Close)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Errorf("exit: %v, want status 0", err)
	}
}

func TestFirstScrapeHasEverySeriesAtZero(t *testing.T) {
	p, _ := startWithFake(t)
	_, body := get(t, "http://"+p.admin+"/metrics")
	values := map[string]string{}
	for line := range strings.SplitSeq(string(body), "\n") {
		if series, value, ok := strings.Cut(line, " "); ok && !strings.HasPrefix(line, "#") {
			values[series] = value
		}
	}
	app := wechattest.DemoAppID
	want := map[string]string{}
	for _, r := range []string{"hit", "miss", "collapsed"} {
		want[`wxa_sidecar_cache_requests_total{result="`+r+`"}`] = "0"
	}
	endpoints := append(wechat.KnownEndpoints(), wechat.EndpointOther)
	for _, e := range endpoints {
		for _, o := range []string{"ok", "errcode", "http_error", "timeout", "broken_image"} {
			want[`wxa_sidecar_upstream_requests_total{endpoint="`+e+`",outcome="`+o+`"}`] = "0"
		}
		want[`wxa_sidecar_ratelimit_rejections_total{endpoint="`+e+`"}`] = "0"
		want[`wxa_sidecar_upstream_retries_total{endpoint="`+e+`"}`] = "0"
		want[`wxa_sidecar_quota_cooldown_active{app="`+app+`",endpoint="`+e+`"}`] = "0"
	}
	want[`wxa_sidecar_token_replays_total{app="`+app+`"}`] = "0"
	want[`wxa_sidecar_token_fetches_total{app="`+app+`",result="error"}`] = "0"
	// The start-up fetch may or may not have finished by the scrape.
	want[`wxa_sidecar_token_fetches_total{app="`+app+`",result="ok"}`] = ""
	want[`wxa_sidecar_upstream_requests_total{endpoint="/cgi-bin/stable_token",outcome="ok"}`] = ""
	want[`wxa_sidecar_build_info{goversion="`+runtime.Version()+`",version="test-build"}`] = "1"
	for series, v := range want {
		got, ok := values[series]
		switch {
		case !ok:
			t.Errorf("first scrape lacks %s", series)
		case v != "" && got != v:
			t.Errorf("%s = %s, want %s", series, got, v)
		}
	}
	for _, e := range []string{"/wxa/getwxacodeunlimit", "/wxa/getwxacode", "/cgi-bin/wxaapp/createwxaqrcode", "/cgi-bin/getcallbackip", "other"} {
		if !strings.Contains(strings.Join(endpoints, " "), e) {
			t.Errorf("KnownEndpoints lacks %s", e)
		}
	}
}
