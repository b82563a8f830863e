package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxa-sidecar/wxa-sidecar/upstream"
)

// rawExchange writes raw on a fresh connection to the harness and reads
// one response: for requests http.Client would not send as written.
func (h *harness) rawExchange(t *testing.T, raw string) (*http.Response, []byte, net.Conn) {
	t.Helper()
	conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no response to %q: %v", truncate([]byte(raw), 80), err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, body, &bufferedConn{Conn: conn, r: br}
}

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// queryRecorder is an upstream that remembers the raw query of every call
// and answers errcode 0: the fake parses queries, which hides their bytes.
type queryRecorder struct {
	mu      sync.Mutex
	queries []string
}

func (q *queryRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q.mu.Lock()
	q.queries = append(q.queries, r.URL.RawQuery)
	q.mu.Unlock()
	w.Header().Set("Content-Type", jsonContentType)
	io.WriteString(w, `{"errcode":0,"errmsg":"ok"}`)
}

func (q *queryRecorder) last(t *testing.T) string {
	t.Helper()
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.queries) == 0 {
		t.Fatal("no upstream call")
	}
	return q.queries[len(q.queries)-1]
}

func TestCallerTokenIsRemovedHoweverSpelledAndTheRestPassesByteForByte(t *testing.T) {
	rec := &queryRecorder{}
	base := newServer(t, rec)
	h := newHarness(t, harnessOptions{upstream: func(o *upstream.Options) { o.Base = base }})
	managed := "access_token=" + h.currentToken(demoApp)
	for _, tt := range []struct{ query, want string }{
		{"access_token=BOGUS&a=1", "a=1&" + managed},
		{"access%5Ftoken=BOGUS&a=1", "a=1&" + managed},
		{"access%5ftoken=BOGUS", managed},
		{"access_%74oken=BOGUS&a=1", "a=1&" + managed},
		{"%61%63%63%65%73%73%5F%74%6F%6B%65%6E=BOGUS", managed},
		{"a=1&access_token=X&access_%74oken=Y&access_token=Z&b=2", "a=1&b=2&" + managed},
		{"access_token", managed},
		{"access_token=", managed},
		{"b=2;access_token=X&a=1", "b=2&a=1&" + managed},
		// Not the same name: WeChat's keys are case-sensitive.
		{"Access_Token=keep&a=1", "Access_Token=keep&a=1&" + managed},
		{"access_tokenx=keep", "access_tokenx=keep&" + managed},
		// Everything else exactly as sent: order, ';', empty parts, escapes.
		{"b=2;x&a=1", "b=2;x&a=1&" + managed},
		{"z=1&y=%2F&&x=a+b", "z=1&y=%2F&&x=a+b&" + managed},
		{"", managed},
	} {
		resp := h.get("/cgi-bin/getcallbackip?" + tt.query)
		if resp.status != http.StatusOK || resp.errcode() != 0 {
			t.Errorf("?%s: status %d body %s", tt.query, resp.status, resp.body)
			continue
		}
		if got := rec.last(t); got != tt.want {
			t.Errorf("?%s reached WeChat as ?%s, want ?%s", tt.query, got, tt.want)
		}
	}
	if leak := containsAny(h.logs.String(), h.currentToken(demoApp)); leak != "" {
		t.Error("logs carry the managed token")
	}
}

func TestCallerTokenReachesTheFakeNeverOnlyOurs(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	managed := h.currentToken(demoApp)
	for _, q := range []string{"access%5Ftoken=BOGUS", "access_%74oken=BOGUS", "access_token=A&access_token=B",
		"x=1;access_token=BOGUS"} {
		resp := h.postJSON("/wxa/msg_sec_check?"+q, `{"content":"hi"}`)
		if resp.status != http.StatusOK || resp.errcode() != 0 {
			t.Errorf("?%s: status %d body %s, want success with the managed token", q, resp.status, resp.body)
		}
		reqs := h.fake.Requests("/wxa/msg_sec_check")
		if got := reqs[len(reqs)-1].Query["access_token"]; len(got) != 1 || got[0] != managed {
			t.Errorf("?%s: WeChat saw access_token %.20q, want exactly the managed one", q, got)
		}
	}
}

// A caller holding no secret must not drive the sidecar into refreshing
// its token: WeChat would answer 40001 to the caller's token, and the
// replay logic would take that for the managed token dying.
func TestCallerTokenCausesNoTokenRefresh(t *testing.T) {
	for _, fakeToken := range []string{"access%5Ftoken=BOGUS", "access_%74oken=BOGUS", "access_token=BOGUS&access%5Ftoken=BOGUS2"} {
		t.Run(fakeToken, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			h.currentToken(demoApp)
			fetches := h.fake.Calls(pathStableToken)
			for i := range 5 {
				resp := h.postJSON("/wxa/msg_sec_check?"+fakeToken, fmt.Sprintf(`{"content":"c%d"}`, i))
				if resp.status != http.StatusOK || resp.errcode() != 0 {
					t.Errorf("call %d: status %d body %s", i, resp.status, resp.body)
				}
			}
			if got := h.fake.Calls(pathStableToken) - fetches; got != 0 {
				t.Errorf("a caller's own token caused %d token fetches, want 0", got)
			}
			if got := testutil.ToFloat64(h.metrics.TokenReplays.WithLabelValues(demoApp)); got != 0 {
				t.Errorf("token replays %v, want 0", got)
			}
		})
	}
}

func TestOddlySpelledCallerTokenStillPicksItsApp(t *testing.T) {
	const appA, appB = "wxaaaaaaaaaaaaaaaa", "wxbbbbbbbbbbbbbbbb"
	h := newHarness(t, harnessOptions{apps: map[string]string{appA: "secret-a-0000000000000000000000a", appB: "secret-b-0000000000000000000000b"}})
	tokA, tokB := h.currentToken(appA), h.currentToken(appB)
	for _, tt := range []struct{ query, want string }{
		{"access%5Ftoken=" + tokB, tokB},
		{"access_%74oken=" + tokA, tokA},
		{"access_token=unknown&access_token=" + tokB, tokB},
		{"x=1;access_token=" + tokA, tokA},
	} {
		resp := h.get("/cgi-bin/getcallbackip?" + tt.query)
		if resp.errcode() != 0 {
			t.Errorf("?%.40s…: %s", tt.query, resp.body)
			continue
		}
		q := h.fake.Requests("/cgi-bin/getcallbackip")
		if got := q[len(q)-1].Query["access_token"]; len(got) != 1 || got[0] != tt.want {
			t.Errorf("?%.40s…: the call went out with another app's token or several", tt.query)
		}
	}
	// Spelled as another name, it names no app.
	if resp := h.get("/cgi-bin/getcallbackip?Access_Token=" + tokA); resp.errcode() != errcodeInvalidAppID {
		t.Errorf("Access_Token picked an app: %s", resp.body)
	}
}

func TestMethodsWeChatDoesNotUseAreRefusedLocally(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for _, method := range []string{"PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "PROPFIND", "BREW"} {
		resp := h.do(method, "/cgi-bin/getcallbackip", "application/json", []byte(`{}`))
		if resp.status != http.StatusMethodNotAllowed || resp.errcode() != errcodeNeedPOST {
			t.Errorf("%s: status %d body %s, want 405 errcode 43002", method, resp.status, resp.body)
		}
		if got := resp.header.Get("Allow"); got != "GET, HEAD, POST" {
			t.Errorf("%s: Allow %q", method, got)
		}
		if got := resp.header.Get("Content-Type"); got != jsonContentType {
			t.Errorf("%s: Content-Type %q", method, got)
		}
	}
	// http.Client sends CONNECT only to proxies: write it by hand.
	resp, body, _ := h.rawExchange(t, "CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n")
	if resp.StatusCode != http.StatusMethodNotAllowed || errcodeOf(body) != errcodeNeedPOST || resp.Header.Get("Allow") != "GET, HEAD, POST" {
		t.Errorf("CONNECT: status %d Allow %q body %s, want 405 errcode 43002", resp.StatusCode, resp.Header.Get("Allow"), body)
	}
	if got := h.fake.TotalCalls(); got != 0 {
		t.Errorf("refused methods made %d upstream calls (token fetches included), want 0", got)
	}
	// The methods WeChat uses still go through.
	for _, method := range []string{"GET", "HEAD", "POST"} {
		if resp := h.do(method, "/cgi-bin/getcallbackip", "", nil); resp.status != http.StatusOK {
			t.Errorf("%s: status %d", method, resp.status)
		}
	}
}

func TestAmbiguousPathsAreRefusedBeforeAllowedPaths(t *testing.T) {
	h := newHarness(t, harnessOptions{proxy: func(o *Options) { o.AllowedPaths = []string{"/wxa/"} }})
	for _, p := range []string{
		"/wxa/msg_sec_check;x", "/wxa;/msg_sec_check", "/wxa/msg_sec_check%3B", `/wxa\msg_sec_check`,
		"/wxa%5cmsg_sec_check", "/wxa%5Cmsg_sec_check", "/wxa%2fmsg_sec_check", "/wxa%2Fmsg_sec_check",
		"/wxa/%2e%2e/cgi-bin/getcallbackip", "/wxa/%2E%2E/cgi-bin/getcallbackip", "/wxa/..%2fcgi-bin/getcallbackip",
		"/wxa/msg_sec_check%2e", "/apps/" + demoApp + "/wxa%2fmsg_sec_check",
	} {
		resp, body, _ := h.rawExchange(t, "POST "+p+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
		if resp.StatusCode != http.StatusBadRequest || errcodeOf(body) != errcodeInvalidURL {
			t.Errorf("%s: status %d body %s, want 400 errcode 40066", p, resp.StatusCode, body)
		}
	}
	if got := h.fake.TotalCalls(); got != 0 {
		t.Errorf("ambiguous paths made %d upstream calls, want 0", got)
	}
	// Literal ".", ".." and "//" are cleaned, then matched, as before.
	for p, want := range map[string]int{"/wxa/./msg_sec_check": 200, "/wxa//msg_sec_check": 200,
		"/cgi-bin/../wxa/msg_sec_check": 200, "/wxa/../cgi-bin/getcallbackip": 403} {
		if resp := h.postJSON(p, `{"content":"x"}`); resp.status != want {
			t.Errorf("%s: status %d body %s, want %d", p, resp.status, resp.body, want)
		}
	}
	// An encoded character that is not a separator is just a character.
	if resp := h.postJSON("/wxa/msg_sec_%63heck", `{"content":"x"}`); resp.status != http.StatusOK || resp.errcode() != 0 {
		t.Errorf("/wxa/msg_sec_%%63heck: status %d body %s", resp.status, resp.body)
	}
}

func TestBodyThatStallsGets408AndTheConnectionCloses(t *testing.T) {
	h := newHarness(t, harnessOptions{proxy: func(o *Options) { o.BodyReadTimeout = 300 * time.Millisecond }})
	for name, head := range map[string]string{
		"buffered":  "POST /wxa/msg_sec_check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
		"code":      "POST /wxa/getwxacodeunlimit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
		"large":     "POST /wxa/msg_sec_check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500000\r\n\r\n",
		"chunked":   "POST /wxa/msg_sec_check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\na\r\n",
		"multipart": "POST /wxa/img_sec_check HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			// Ten bytes of the body, then nothing: the connection stays open.
			resp, body, conn := h.rawExchange(t, head+`{"scene":1`)
			if resp.StatusCode != http.StatusRequestTimeout || errcodeOf(body) != errcodeSystem {
				t.Errorf("status %d body %s, want 408 errcode -1", resp.StatusCode, body)
			}
			if !resp.Close {
				t.Error("no Connection: close on the 408")
			}
			if got := resp.Header.Get("Content-Type"); got != jsonContentType {
				t.Errorf("Content-Type %q", got)
			}
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := conn.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("after the 408 the connection is still open: read %d, %v", n, err)
			}
		})
	}
	if got := h.fake.Calls("/wxa/msg_sec_check") + h.fake.Calls(pathUnlimited); got != 0 {
		t.Errorf("stalled buffered bodies made %d upstream calls, want 0", got)
	}
}

// The read deadline must be gone once the body is in: the server keeps
// reading the connection while WeChat answers, and a deadline passing then
// would cancel the call (net/http lifts it when the body reads to its end;
// this holds it to that).
func TestBodyReadTimeoutDoesNotCutASlowUpstreamOrTheNextRequest(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: takes seconds")
	}
	h := newHarness(t, harnessOptions{proxy: func(o *Options) { o.BodyReadTimeout = 100 * time.Millisecond }})
	h.currentToken(demoApp)
	h.fake.SetLatency(500 * time.Millisecond)
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, _ := mw.CreateFormFile("media", "a.jpg")
	fw.Write(bytes.Repeat([]byte{0xAB}, 1000))
	mw.Close()
	var conns atomic.Int32
	dial := (&net.Dialer{}).DialContext
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conns.Add(1)
			return dial(ctx, network, addr)
		}}}
	defer client.CloseIdleConnections()
	for i := range 2 { // the second one on the same, kept-alive connection
		for _, c := range []struct{ path, contentType, body string }{
			{"/wxa/msg_sec_check", "application/json", `{"content":"slow"}`},
			{"/wxa/getwxacodeunlimit", "application/json", fmt.Sprintf(`{"scene":"slow%d"}`, i)},
			{"/wxa/img_sec_check", mw.FormDataContentType(), buf.String()},
		} {
			resp, err := client.Post(h.srv.URL+c.path, c.contentType, strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || errcodeOf(b) != 0 {
				t.Errorf("%s #%d: status %d body %s, want success", c.path, i, resp.StatusCode, truncate(b, 100))
			}
		}
	}
	if got := conns.Load(); got != 1 {
		t.Errorf("%d connections, want 1 kept alive", got)
	}
}

func TestLargeDeclaredBodyArrivesWhole(t *testing.T) {
	h := newHarness(t, harnessOptions{proxy: func(o *Options) { o.MaxBodyBytes = 4 << 20 }})
	for _, size := range []int{exactBodyRead - 20, exactBodyRead + 1, 3*exactBodyRead + 7, 1 << 20} {
		body := `{"content":"` + strings.Repeat("y", size) + `"}`
		if resp := h.postJSON("/wxa/msg_sec_check", body); resp.status != http.StatusOK || resp.errcode() != 0 {
			t.Fatalf("%d bytes: status %d body %s", len(body), resp.status, resp.body)
		}
		reqs := h.fake.Requests("/wxa/msg_sec_check")
		if got := reqs[len(reqs)-1].Body; string(got) != body {
			t.Errorf("%d bytes sent, WeChat got %d different ones", len(body), len(got))
		}
	}
}

func TestRedirectsAreNeverFollowed(t *testing.T) {
	var elsewhereCalls atomic.Int32
	elsewhere := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhereCalls.Add(1)
	}))
	h := newHarness(t, harnessOptions{cache: true})
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	// A passthrough call: the caller gets WeChat's 302 as it came.
	h.fake.FailNextRedirect("/cgi-bin/getcallbackip", 1, elsewhere+"/cgi-bin/getcallbackip?x=1")
	resp, err := noFollow.Get(h.srv.URL + "/cgi-bin/getcallbackip")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != elsewhere+"/cgi-bin/getcallbackip?x=1" {
		t.Errorf("passthrough: status %d Location %q, want WeChat's 302 unchanged", resp.StatusCode, resp.Header.Get("Location"))
	}

	// A code: a redirect is a failed fetch, not an image from elsewhere.
	h.fake.FailNextRedirect(pathUnlimited, 2, elsewhere+pathUnlimited)
	code := h.postJSON(pathUnlimited, `{"scene":"redirected"}`)
	if code.status != http.StatusBadGateway || code.errcode() != errcodeSystem {
		t.Errorf("code endpoint: status %d body %s, want 502 errcode -1", code.status, truncate(code.body, 100))
	}
	if got := elsewhereCalls.Load(); got != 0 {
		t.Errorf("the Location host got %d calls, want 0", got)
	}
	if h.cache.Stats().Entries != 0 {
		t.Error("a redirect was cached")
	}
}

func TestSignedCodeRequestCountsAsAnUpstreamRequest(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true})
	ok := h.metrics.UpstreamRequests.WithLabelValues(pathUnlimited, "ok")
	resp := h.do(http.MethodPost, pathUnlimited, "application/json", []byte(`{"scene":"signed"}`), "Wechatmp-Signature", "sig")
	if resp.status != http.StatusOK || resp.header.Get("Cache-Status") != cacheStatusBypass {
		t.Fatalf("signed request: status %d Cache-Status %q", resp.status, resp.header.Get("Cache-Status"))
	}
	if got := testutil.ToFloat64(ok); got != 1 {
		t.Errorf("after a signed code request upstream_requests_total{ok} = %v, want 1", got)
	}
	// A cached code counts once too: by the image path, not twice.
	h.postJSON(pathUnlimited, `{"scene":"unsigned"}`)
	h.postJSON(pathUnlimited, `{"scene":"unsigned"}`)
	if got := testutil.ToFloat64(ok); got != 2 {
		t.Errorf("after one more upstream call upstream_requests_total{ok} = %v, want 2", got)
	}
	if got, calls := testutil.ToFloat64(ok), h.fake.Calls(pathUnlimited); int(got) != calls {
		t.Errorf("upstream_requests_total{ok} = %v, WeChat saw %d calls", got, calls)
	}
}
