package proxy

import (
	"bytes"
	"fmt"
	"mime/multipart"
	"net"
	"net/http"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/token"
	"github.com/wxa-sidecar/wxa-sidecar/upstream"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

const demoApp = wechattest.DemoAppID

func TestRequestWithoutTokenGetsImage(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	resp := h.postJSON(pathUnlimited, `{"scene":"a=1","page":"pages/index/index"}`)
	if resp.status != http.StatusOK {
		t.Fatalf("status %d, body %s", resp.status, resp.body)
	}
	if got := resp.header.Get("Content-Type"); got != "image/jpeg" {
		t.Errorf("Content-Type %q, want image/jpeg (silenceper accepts nothing else)", got)
	}
	if got := resp.header.Get("Content-Disposition"); got != wechattest.ContentDisposition {
		t.Errorf("Content-Disposition %q, want WeChat's %q", got, wechattest.ContentDisposition)
	}
	if text := decodeQR(t, resp.body); !strings.Contains(text, "scene=a%3D1") {
		t.Errorf("QR text %q does not carry the scene", text)
	}
	if got, want := h.upstreamToken(pathUnlimited), h.currentToken(demoApp); got != want {
		t.Errorf("upstream saw token %q, want the managed %q", got, want)
	}
}

func TestCallerTokenIsReplacedByManagedOne(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	body := `{"jump_wxa":{"path":"pages/a"},"is_expire":false}`
	resp := h.postJSON("/wxa/generatescheme?access_token=STALE_CALLER_TOKEN&x=1", body)
	if resp.status != http.StatusOK || resp.errcode() != 0 {
		t.Fatalf("status %d body %s", resp.status, resp.body)
	}
	reqs := h.fake.Requests("/wxa/generatescheme")
	if len(reqs) != 1 {
		t.Fatalf("upstream calls %d, want 1", len(reqs))
	}
	if got := reqs[0].Query["access_token"]; len(got) != 1 || got[0] != h.currentToken(demoApp) {
		t.Errorf("upstream access_token %q, want exactly the managed token", got)
	}
	if got := reqs[0].Query.Get("x"); got != "1" {
		t.Errorf("other query parameters lost: x=%q", got)
	}
	if got := string(reqs[0].Body); got != body {
		t.Errorf("upstream body %q, want the caller's %q", got, body)
	}
}

func TestRevokedTokenIsReplacedAndReplayed(t *testing.T) {
	for _, mode := range []token.Mode{token.ModeStable, token.ModeClassic} {
		t.Run(string(mode), func(t *testing.T) {
			h := newHarness(t, harnessOptions{mode: mode})
			if resp := h.postJSON("/wxa/msg_sec_check", `{"content":"hi"}`); resp.errcode() != 0 {
				t.Fatalf("first call: %s", resp.body)
			}
			old := h.currentToken(demoApp)
			h.fake.RevokeTokens()
			resp := h.postJSON("/wxa/msg_sec_check", `{"content":"hello"}`)
			if resp.status != http.StatusOK || resp.errcode() != 0 {
				t.Fatalf("after revoke: status %d body %s, want success", resp.status, resp.body)
			}
			reqs := h.fake.Requests("/wxa/msg_sec_check")
			if len(reqs) != 3 {
				t.Fatalf("upstream calls %d, want 3 (ok, dead token, replay)", len(reqs))
			}
			if string(reqs[2].Body) != `{"content":"hello"}` {
				t.Errorf("replayed body %q, want the original", reqs[2].Body)
			}
			if got := reqs[2].Query.Get("access_token"); got == old || got != h.currentToken(demoApp) {
				t.Errorf("replay used %q, want a fresh managed token", got)
			}
		})
	}
}

func TestConcurrentCallersOnDeadTokenCauseOneRefresh(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.currentToken(demoApp)
	h.fake.RevokeTokens()
	fetchesBefore := h.fake.Calls(pathStableToken)
	var wg sync.WaitGroup
	errs := make(chan string, 20)
	for i := range 20 {
		wg.Go(func() {
			resp := h.postJSON("/wxa/msg_sec_check", fmt.Sprintf(`{"content":"c%d"}`, i))
			if resp.status != http.StatusOK || resp.errcode() != 0 {
				errs <- fmt.Sprintf("caller %d: status %d body %s", i, resp.status, resp.body)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	var forced int
	for _, r := range h.fake.Requests(pathStableToken)[fetchesBefore:] {
		if bytes.Contains(r.Body, []byte(`"force_refresh":true`)) {
			forced++
		}
	}
	// One refresh: a normal fetch, and a forced one only if the normal
	// fetch handed back the dead token.
	if got := h.fake.Calls(pathStableToken) - fetchesBefore; got > 2 || forced > 1 {
		t.Errorf("token fetches after revoke %d (forced %d), want one refresh", got, forced)
	}
}

func TestLocalTokenEndpoints(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	managed := h.currentToken(demoApp)
	tests := []struct {
		name        string
		method      string
		path        string
		body        string
		wantErrcode int
	}{
		{"classic", "GET", "/cgi-bin/token?grant_type=client_credential&appid=" + demoApp + "&secret=" + wechattest.DemoSecret, "", 0},
		{"stable", "POST", pathStableToken, `{"grant_type":"client_credential","appid":"` + demoApp + `","secret":"` + wechattest.DemoSecret + `"}`, 0},
		{"stable force_refresh gets the current token", "POST", pathStableToken, `{"grant_type":"client_credential","appid":"` + demoApp + `","secret":"` + wechattest.DemoSecret + `","force_refresh":true}`, 0},
		{"prefixed", "GET", "/apps/" + demoApp + "/cgi-bin/token?grant_type=client_credential&appid=" + demoApp + "&secret=" + wechattest.DemoSecret, "", 0},
		{"wrong secret", "GET", "/cgi-bin/token?grant_type=client_credential&appid=" + demoApp + "&secret=nope", "", 40125},
		{"wrong secret stable", "POST", pathStableToken, `{"grant_type":"client_credential","appid":"` + demoApp + `","secret":"` + wechattest.DemoSecret + `x"}`, 40125},
		{"unknown appid", "GET", "/cgi-bin/token?grant_type=client_credential&appid=wxother&secret=" + wechattest.DemoSecret, "", 40013},
		{"bad grant", "GET", "/cgi-bin/token?grant_type=x&appid=" + demoApp + "&secret=" + wechattest.DemoSecret, "", 40002},
		{"stable not POST", "GET", pathStableToken, "", 43002},
		{"stable bad JSON", "POST", pathStableToken, `{"grant_type":`, 47001},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := h.do(tt.method, tt.path, "application/json", []byte(tt.body))
			if resp.status != http.StatusOK {
				t.Fatalf("status %d, want 200", resp.status)
			}
			if got := resp.header.Get("Content-Type"); got != jsonContentType {
				t.Errorf("Content-Type %q, want %q", got, jsonContentType)
			}
			if got := resp.errcode(); got != tt.wantErrcode {
				t.Fatalf("errcode %d, want %d (body %s)", got, tt.wantErrcode, resp.body)
			}
			if tt.wantErrcode != 0 {
				if bytes.Contains(resp.body, []byte(managed)) {
					t.Error("an error answer carries the token")
				}
				return
			}
			if got := jsonField(t, resp.body, "access_token"); got != managed {
				t.Errorf("access_token %v, want the managed %q", got, managed)
			}
			exp, _ := jsonField(t, resp.body, "expires_in").(float64)
			if exp < 7000 || exp > 7200 {
				t.Errorf("expires_in %v, want the remaining lifetime (about 7200)", exp)
			}
		})
	}
	if got := h.fake.Calls(pathToken); got != 0 {
		t.Errorf("WeChat's classic token endpoint was called %d times; it invalidates tokens", got)
	}
	for _, r := range h.fake.Requests(pathStableToken) {
		if bytes.Contains(r.Body, []byte(`"force_refresh":true`)) {
			t.Error("a caller's force_refresh reached WeChat")
		}
	}
}

func TestPassThroughJSCode2Session(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	q := "appid=" + demoApp + "&secret=" + wechattest.DemoSecret + "&js_code=CODE123&grant_type=authorization_code"
	resp := h.get("/sns/jscode2session?" + q)
	if resp.status != http.StatusOK || resp.errcode() != 0 || jsonField(t, resp.body, "openid") == nil {
		t.Fatalf("status %d body %s, want a session", resp.status, resp.body)
	}
	reqs := h.fake.Requests("/sns/jscode2session")
	if len(reqs) != 1 {
		t.Fatalf("upstream calls %d, want 1", len(reqs))
	}
	if got := reqs[0].Query.Encode(); strings.Contains(got, "access_token") {
		t.Errorf("/sns/ call got a token: %s", got)
	}
	if got := reqs[0].Query.Get("js_code"); got != "CODE123" {
		t.Errorf("js_code %q, want it untouched", got)
	}
	if logs := h.logs.String(); containsAny(logs, wechattest.DemoSecret, "CODE123") != "" {
		t.Errorf("logs carry the secret or js_code: %s", logs)
	}
}

func TestResponseHeadersPassThrough(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	resp := h.postJSON(pathWxacode, `{"path":"pages/index?id=1"}`)
	if resp.status != http.StatusOK {
		t.Fatalf("status %d body %s", resp.status, resp.body)
	}
	if resp.header.Get("Num-Used") == "" {
		t.Error("Num-Used did not pass through")
	}
	if got := resp.header.Get("Content-Disposition"); got != wechattest.ContentDisposition {
		t.Errorf("Content-Disposition %q, want %q", got, wechattest.ContentDisposition)
	}
}

func TestOversizedAndMalformedRequests(t *testing.T) {
	h := newHarness(t, harnessOptions{proxy: func(o *Options) { o.MaxBodyBytes = 1024; o.MaxUploadBytes = 4096 }})
	big := `{"content":"` + strings.Repeat("x", 2000) + `"}`
	resp := h.postJSON("/wxa/msg_sec_check", big)
	if resp.status != http.StatusRequestEntityTooLarge || resp.errcode() != 47001 {
		t.Errorf("oversized body: status %d body %s, want 413 errcode 47001", resp.status, resp.body)
	}
	if got := resp.header.Get("Content-Type"); got != jsonContentType {
		t.Errorf("Content-Type %q, want %q", got, jsonContentType)
	}
	// Chunked, so the size is only known while reading.
	req, _ := http.NewRequest("POST", h.srv.URL+"/wxa/msg_sec_check", struct{ *strings.Reader }{strings.NewReader(big)})
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized chunked body: status %d, want 413", r2.StatusCode)
	}
	if got := h.fake.Calls("/wxa/msg_sec_check"); got != 0 {
		t.Errorf("oversized bodies reached upstream %d times", got)
	}
	// A connection that sends half a body and hangs up must not hurt.
	conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /wxa/msg_sec_check HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"con")
	conn.Close()
	if resp := h.postJSON("/wxa/msg_sec_check", `{"content":"ok"}`); resp.status != http.StatusOK || resp.errcode() != 0 {
		t.Errorf("sidecar stopped serving: status %d body %s", resp.status, resp.body)
	}
}

func TestMultipartUploadStreamsThrough(t *testing.T) {
	h := newHarness(t, harnessOptions{proxy: func(o *Options) { o.MaxBodyBytes = 1024; o.MaxUploadBytes = 64 << 10 }})
	upload := func(size int) response {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		fw, _ := mw.CreateFormFile("media", "a.jpg")
		fw.Write(bytes.Repeat([]byte{0xAB}, size))
		mw.Close()
		return h.do("POST", "/wxa/img_sec_check", mw.FormDataContentType(), buf.Bytes())
	}
	if resp := upload(16 << 10); resp.status != http.StatusOK || resp.errcode() != 0 {
		t.Fatalf("upload larger than MAX_BODY_BYTES: status %d body %s, want success", resp.status, resp.body)
	}
	reqs := h.fake.Requests("/wxa/img_sec_check")
	if len(reqs) != 1 || len(reqs[0].Body) < 16<<10 {
		t.Fatalf("upstream got %d uploads, want 1 whole one", len(reqs))
	}
	if resp := upload(128 << 10); resp.status != http.StatusRequestEntityTooLarge || resp.errcode() != 47001 {
		t.Errorf("upload over MAX_UPLOAD_BYTES: status %d body %s, want 413 errcode 47001", resp.status, resp.body)
	}
}

func TestAllowedPaths(t *testing.T) {
	h := newHarness(t, harnessOptions{proxy: func(o *Options) { o.AllowedPaths = []string{"/wxa/"} }})
	if resp := h.postJSON("/wxa/msg_sec_check", `{"content":"x"}`); resp.errcode() != 0 {
		t.Errorf("allowed path refused: %s", resp.body)
	}
	for _, p := range []string{"/cgi-bin/getcallbackip", "/wxa/../cgi-bin/getcallbackip", "//cgi-bin/getcallbackip"} {
		resp := h.get(p)
		if resp.status != http.StatusForbidden || resp.errcode() != 48001 {
			t.Errorf("%s: status %d body %s, want 403 errcode 48001", p, resp.status, resp.body)
		}
	}
	if got := h.fake.Calls("/cgi-bin/getcallbackip"); got != 0 {
		t.Errorf("a path outside ALLOWED_PATHS reached upstream %d times", got)
	}
}

func TestForwardsOnlyToConfiguredUpstream(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	elsewhere := wechattest.NewServer(wechattest.Options{})
	defer elsewhere.Close()
	conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// An absolute-form request naming another host.
	fmt.Fprintf(conn, "GET %s/cgi-bin/getcallbackip HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
		elsewhere.URL, strings.TrimPrefix(elsewhere.URL, "http://"))
	buf := make([]byte, 4096)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := conn.Read(buf)
	if !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 200")) {
		t.Fatalf("response %q", buf[:n])
	}
	if got := elsewhere.TotalCalls(); got != 0 {
		t.Errorf("the host the caller named got %d calls", got)
	}
	if got := h.fake.Calls("/cgi-bin/getcallbackip"); got != 1 {
		t.Errorf("configured upstream got %d calls, want 1", got)
	}
}

func TestSignedRequestKeepsBodyAndHeaders(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	body := []byte("  {\"iv\":\"x\", \"data\":\"ENCRYPTED\" , \"authtag\":\"y\"}\n")
	resp := h.do("POST", "/wxa/msg_sec_check?access_token=caller", "text/plain; charset=ISO-8859-1", body,
		"Wechatmp-Appid", demoApp, "Wechatmp-Timestamp", "1700000000", "Wechatmp-Signature", "SIG==")
	if resp.status != http.StatusOK {
		t.Fatalf("status %d", resp.status)
	}
	r := h.fake.Requests("/wxa/msg_sec_check")[0]
	if !bytes.Equal(r.Body, body) {
		t.Errorf("signed body changed: %q, want %q", r.Body, body)
	}
	for k, v := range map[string]string{"Wechatmp-Signature": "SIG==", "Wechatmp-Timestamp": "1700000000",
		"Content-Type": "text/plain; charset=ISO-8859-1"} {
		if got := r.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if got := r.Query.Get("access_token"); got != h.currentToken(demoApp) {
		t.Errorf("signed request token %q, want the managed one", got)
	}
}

func TestMultiAppSelection(t *testing.T) {
	apps := map[string]string{"wxaaaaaaaaaaaaaaaa": "secret-a-0000000000000000000000a", "wxbbbbbbbbbbbbbbbb": "secret-b-0000000000000000000000b"}
	h := newHarness(t, harnessOptions{apps: apps})
	resp := h.get("/apps/wxbbbbbbbbbbbbbbbb/cgi-bin/getcallbackip")
	if resp.errcode() != 0 {
		t.Fatalf("prefixed call: %s", resp.body)
	}
	if got := h.upstreamToken("/cgi-bin/getcallbackip"); got != h.currentToken("wxbbbbbbbbbbbbbbbb") {
		t.Errorf("prefix chose the wrong app's token")
	}
	tokA := h.currentToken("wxaaaaaaaaaaaaaaaa")
	if resp := h.get("/cgi-bin/getcallbackip?access_token=" + tokA); resp.errcode() != 0 {
		t.Fatalf("call with a managed token: %s", resp.body)
	}
	if got := h.upstreamToken("/cgi-bin/getcallbackip"); got != tokA {
		t.Errorf("a managed token passed back did not choose its app")
	}
	for _, p := range []string{"/cgi-bin/getcallbackip", "/cgi-bin/getcallbackip?access_token=unknown", "/apps/wxunknown/cgi-bin/getcallbackip"} {
		resp := h.get(p)
		if resp.status != http.StatusOK || resp.errcode() != 40013 {
			t.Errorf("%s: status %d body %s, want errcode 40013", p, resp.status, resp.body)
		}
	}
}

func TestUpstreamFailuresAnswer502AndLogNoSecrets(t *testing.T) {
	h := newHarness(t, harnessOptions{upstream: func(o *upstream.Options) { o.Timeout = 200 * time.Millisecond }})
	tok := h.currentToken(demoApp)
	h.fake.SetLatency(time.Second)
	resp := h.get("/cgi-bin/getcallbackip?access_token=" + tok)
	if resp.status != http.StatusBadGateway || resp.errcode() != -1 {
		t.Errorf("timeout: status %d body %s, want 502 errcode -1", resp.status, resp.body)
	}
	h.fake.SetLatency(0)
	h.fake.FailNext("/cgi-bin/getcallbackip", 1, wechattest.FaultDropConnection)
	if resp := h.get("/cgi-bin/getcallbackip"); resp.status != http.StatusBadGateway || resp.errcode() != -1 {
		t.Errorf("dropped connection: status %d body %s, want 502 errcode -1", resp.status, resp.body)
	}
	h.fake.Close() // nothing listens there now: connection refused
	if resp := h.get("/cgi-bin/getcallbackip"); resp.status != http.StatusBadGateway || resp.errcode() != -1 {
		t.Errorf("unreachable: status %d body %s, want 502 errcode -1", resp.status, resp.body)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "upstream call failed") {
		t.Errorf("failures were not logged: %s", logs)
	}
	if leak := containsAny(logs, wechattest.DemoSecret, tok); leak != "" {
		t.Errorf("logs carry a secret or a whole token (%.8s…): %s", leak, logs)
	}
}

func TestWeChatErrorsReachCallerUnchanged(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.fake.FailNextErrcode("/wxa/generatescheme", 1, 85096)
	resp := h.postJSON("/wxa/generatescheme", `{}`)
	if resp.status != http.StatusOK || resp.errcode() != 85096 {
		t.Errorf("status %d body %s, want WeChat's 200 errcode 85096", resp.status, resp.body)
	}
	if !strings.Contains(string(resp.body), "rid") {
		t.Errorf("body %s is not WeChat's own", resp.body)
	}
}

// FuzzCleanPath holds cleanPath's fast path to what path.Clean makes of the
// same path: the ALLOWED_PATHS check and the upstream URL rest on it.
func FuzzCleanPath(f *testing.F) {
	for _, seed := range []string{"/wxa/getwxacodeunlimit", "/", "", "wxa/x", "/a//b", "/a/./b", "/a/../b",
		"/a/..", "/a/.", "/.well-known/x", "/a/b/", "/apps/wx1/../../cgi-bin/token", "/a/.b/", "//", "/..",
		"/a..b/c.", "/apps/wx1/qrcode/"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, urlPath string) {
		rooted := urlPath
		if !strings.HasPrefix(rooted, "/") {
			rooted = "/" + rooted
		}
		want := path.Clean(rooted)
		if strings.HasSuffix(rooted, "/") && want != "/" {
			want += "/"
		}
		if got := cleanPath(urlPath); got != want {
			t.Fatalf("cleanPath(%q) = %q, path.Clean makes %q", urlPath, got, want)
		}
	})
}
