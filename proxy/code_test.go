package proxy

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

func TestSecondIdenticalRequestIsHit(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true})
	first := h.postJSON(pathUnlimited, `{"scene":"id=7","page":"pages/a/b"}`)
	if first.status != http.StatusOK {
		t.Fatalf("first: status %d body %s", first.status, first.body)
	}
	if got := first.header.Get("Cache-Status"); got != cacheStatusStored {
		t.Errorf("first Cache-Status %q, want %q", got, cacheStatusStored)
	}
	calls := h.fake.Calls(pathUnlimited)
	second := h.postJSON(pathUnlimited, `{"scene":"id=7","page":"pages/a/b"}`)
	if got := h.fake.Calls(pathUnlimited) - calls; got != 0 {
		t.Errorf("second request made %d upstream calls, want 0", got)
	}
	if got := second.header.Get("Cache-Status"); got != cacheStatusHit {
		t.Errorf("second Cache-Status %q, want %q", got, cacheStatusHit)
	}
	if !bytes.Equal(first.body, second.body) {
		t.Error("hit served different bytes")
	}
	if etag := second.header.Get("Etag"); etag == "" || etag != first.header.Get("Etag") || etag[0] != '"' {
		t.Errorf("ETag %q (first %q), want the same strong ETag", etag, first.header.Get("Etag"))
	}
	if second.header.Get("Content-Type") != "image/jpeg" || second.header.Get("Content-Disposition") != wechattest.ContentDisposition {
		t.Errorf("hit lost WeChat's headers: %v", second.header)
	}
}

func TestEquivalentRequestsHitDifferentOnesMiss(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true})
	base := `{"scene":"id=7","page":"pages/a/b"}`
	if resp := h.postJSON(pathUnlimited, base); resp.status != http.StatusOK {
		t.Fatalf("status %d body %s", resp.status, resp.body)
	}
	hits := []struct{ name, path, body string }{
		{"reordered keys", pathUnlimited, `{"page":"pages/a/b","scene":"id=7"}`},
		{"explicit defaults", pathUnlimited, `{"scene":"id=7","page":"pages/a/b","width":430,"check_path":true,"env_version":"release","auto_color":false,"is_hyaline":false,"line_color":{"r":0,"g":0,"b":0}}`},
		{"string colours and width", pathUnlimited, `{"scene":"id=7","page":"pages/a/b","width":"430","line_color":{"r":"0","g":"0","b":"0"}}`},
		{"whitespace", pathUnlimited, "{ \"scene\" : \"id=7\" ,\n\t\"page\" : \"pages/a/b\" }\n"},
		{"another caller token", pathUnlimited + "?access_token=SOMEONE_ELSES", base},
	}
	for _, tt := range hits {
		t.Run("hit/"+tt.name, func(t *testing.T) {
			calls := h.fake.Calls(pathUnlimited)
			resp := h.do(http.MethodPost, tt.path, "text/plain; charset=ISO-8859-1", []byte(tt.body))
			if got := resp.header.Get("Cache-Status"); got != cacheStatusHit {
				t.Errorf("Cache-Status %q, want hit (body %s)", got, truncate(resp.body, 100))
			}
			if got := h.fake.Calls(pathUnlimited) - calls; got != 0 {
				t.Errorf("%d upstream calls, want 0", got)
			}
		})
	}
	misses := []struct{ name, body string }{
		{"width", `{"scene":"id=7","page":"pages/a/b","width":431}`},
		{"page", `{"scene":"id=7","page":"pages/a/c"}`},
		{"unknown field", `{"scene":"id=7","page":"pages/a/b","show_splash_ad":true}`},
	}
	for _, tt := range misses {
		t.Run("miss/"+tt.name, func(t *testing.T) {
			calls := h.fake.Calls(pathUnlimited)
			resp := h.postJSON(pathUnlimited, tt.body)
			if got := resp.header.Get("Cache-Status"); got != cacheStatusStored {
				t.Errorf("Cache-Status %q, want %q", got, cacheStatusStored)
			}
			if got := h.fake.Calls(pathUnlimited) - calls; got != 1 {
				t.Errorf("%d upstream calls, want 1", got)
			}
		})
	}
	// Unknown fields reach WeChat as the caller sent them.
	reqs := h.fake.Requests(pathUnlimited)
	if got := string(reqs[len(reqs)-1].Body); got != misses[2].body {
		t.Errorf("upstream body %q, want the caller's own %q", got, misses[2].body)
	}
}

func TestConcurrentIdenticalMissesMakeOneUpstreamCall(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true})
	h.fake.SetLatency(300 * time.Millisecond)
	const callers = 200
	bodies := make([][]byte, callers)
	statuses := make([]string, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			resp := h.postJSON(pathUnlimited, `{"scene":"same","page":"pages/x"}`)
			if resp.status != http.StatusOK {
				t.Errorf("caller %d: status %d body %s", i, resp.status, resp.body)
			}
			bodies[i], statuses[i] = resp.body, resp.header.Get("Cache-Status")
		})
	}
	wg.Wait()
	if got := h.fake.Calls(pathUnlimited); got != 1 {
		t.Errorf("%d upstream calls for %d identical misses, want 1", got, callers)
	}
	count := map[string]int{}
	for i := range callers {
		if !bytes.Equal(bodies[i], bodies[0]) {
			t.Fatalf("caller %d got different bytes", i)
		}
		count[statuses[i]]++
	}
	if count[cacheStatusStored] != 1 || count[cacheStatusStored]+count[cacheStatusCollapsed]+count[cacheStatusHit] != callers {
		t.Errorf("Cache-Status counts %v, want exactly one stored, the rest collapsed or hit", count)
	}
	decodeQR(t, bodies[0])
}

func TestFirstCallerHangingUpDoesNotFailOthers(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true})
	h.fake.SetLatency(400 * time.Millisecond)
	body := `{"scene":"hangup"}`
	ctx, cancel := context.WithCancel(context.Background())
	firstDone := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.srv.URL+pathUnlimited, bytes.NewBufferString(body))
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		firstDone <- err
	}()
	// Wait until the first caller's flight has reached WeChat.
	for h.fake.Calls(pathUnlimited) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() {
			resp := h.postJSON(pathUnlimited, body)
			if resp.status != http.StatusOK {
				t.Errorf("caller %d: status %d body %s", i, resp.status, resp.body)
				return
			}
			decodeQR(t, resp.body)
		})
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-firstDone; err == nil {
		t.Log("first caller finished before hanging up")
	}
	wg.Wait()
	if got := h.fake.Calls(pathUnlimited); got != 1 {
		t.Errorf("%d upstream calls, want 1", got)
	}
}

func TestFaultsAreNeverCached(t *testing.T) {
	faults := []struct {
		name  string
		fault wechattest.Fault
	}{
		{"http 500", wechattest.FaultHTTP500},
		{"errcode -1", wechattest.FaultBusy},
		{"truncated image", wechattest.FaultTruncatedImage},
		{"dropped connection", wechattest.FaultDropConnection},
		{"errcode JSON labelled image/jpeg", wechattest.FaultErrcodeAsImage},
		{"JPEG markers around garbage", wechattest.FaultCorruptJPEG},
		{"JPEG header declaring 65000x65000", wechattest.FaultHugeDimensions},
	}
	for i, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{cache: true})
			body := fmt.Sprintf(`{"scene":"fault%d"}`, i)
			// Two failures: the first call and its one retry.
			h.fake.FailNext(pathUnlimited, 2, f.fault)
			resp := h.postJSON(pathUnlimited, body)
			if resp.status == http.StatusOK && resp.errcode() == 0 {
				t.Fatalf("a fault was served as an image (%d bytes)", len(resp.body))
			}
			if ct := resp.header.Get("Content-Type"); ct != jsonContentType && resp.errcode() == 0 {
				t.Errorf("error answered as %q, want errcode JSON", ct)
			}
			if got := h.fake.Calls(pathUnlimited); got != 2 {
				t.Errorf("%d upstream calls, want 2 (one retry)", got)
			}
			resp = h.postJSON(pathUnlimited, body)
			if resp.status != http.StatusOK {
				t.Fatalf("after the fault: status %d body %s", resp.status, resp.body)
			}
			if got := resp.header.Get("Cache-Status"); got != cacheStatusStored {
				t.Errorf("after the fault Cache-Status %q, want %q (nothing cached before)", got, cacheStatusStored)
			}
			decodeQR(t, resp.body)
		})
	}
}

func TestTransientFaultIsRetriedOnce(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true})
	h.fake.FailNext(pathUnlimited, 1, wechattest.FaultBusy)
	resp := h.postJSON(pathUnlimited, `{"scene":"retry"}`)
	if resp.status != http.StatusOK {
		t.Fatalf("status %d body %s, want the retry's image", resp.status, resp.body)
	}
	decodeQR(t, resp.body)
	if got := h.fake.Calls(pathUnlimited); got != 2 {
		t.Errorf("%d upstream calls, want 2", got)
	}
}

func TestInvalidCodeRequestsNeverReachUpstream(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true})
	tests := []struct {
		name, path, body string
		errcode          int
	}{
		{"empty scene", pathUnlimited, `{"scene":""}`, 40169},
		{"long scene", pathUnlimited, `{"scene":"123456789012345678901234567890123"}`, 40169},
		{"bad scene chars", pathUnlimited, `{"scene":"100%"}`, 40129},
		{"page with slash", pathUnlimited, `{"scene":"a","page":"/pages/x"}`, 41030},
		{"page with query", pathUnlimited, `{"scene":"a","page":"pages/x?a=1"}`, 41030},
		{"bad env", pathUnlimited, `{"scene":"a","env_version":"beta"}`, 40097},
		{"bad json", pathUnlimited, `{"scene":`, 47001},
		{"int flag", pathUnlimited, `{"scene":"a","is_hyaline":1}`, 47001},
		{"bad width type", pathUnlimited, `{"scene":"a","width":"wide"}`, 47001},
		{"wxacode without path", pathWxacode, `{"width":430}`, 40159},
		{"qrcode long path", pathQRCode, `{"path":"` + string(bytes.Repeat([]byte("a"), 129)) + `"}`, 40159},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := h.postJSON(tt.path, tt.body)
			if resp.status != http.StatusOK || resp.errcode() != tt.errcode {
				t.Errorf("status %d body %s, want 200 errcode %d", resp.status, resp.body, tt.errcode)
			}
		})
	}
	if got := h.fake.TotalCalls(); got != 0 {
		t.Errorf("invalid requests made %d upstream calls, want 0", got)
	}
	// WeChat decides widths on its own paths.
	if resp := h.postJSON(pathUnlimited, `{"scene":"a","width":100}`); resp.status != http.StatusOK || resp.errcode() != 0 {
		t.Errorf("width 100 on the WeChat path: status %d body %s, want it forwarded", resp.status, truncate(resp.body, 100))
	}
}

func TestSignedCodeRequestBypassesCache(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true})
	body := []byte(`{"scene":"signed"}`)
	for range 2 {
		resp := h.do(http.MethodPost, pathUnlimited, "application/json", body, "Wechatmp-Signature", "sig")
		if got := resp.header.Get("Cache-Status"); got != cacheStatusBypass {
			t.Errorf("Cache-Status %q, want %q", got, cacheStatusBypass)
		}
	}
	if got := h.fake.Calls(pathUnlimited); got != 2 {
		t.Errorf("%d upstream calls, want 2 (never cached)", got)
	}
}

func TestNumUsedOnlyOnTheResponseThatSpentIt(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true})
	first := h.postJSON(pathQRCode, `{"path":"pages/index?id=3"}`)
	if first.header.Get("Num-Used") == "" {
		t.Fatalf("first response has no Num-Used: %v", first.header)
	}
	second := h.postJSON(pathQRCode, `{"path":"pages/index?id=3","width":"430"}`)
	if second.header.Get("Cache-Status") != cacheStatusHit || second.header.Get("Num-Used") != "" {
		t.Errorf("hit: Cache-Status %q Num-Used %q, want a hit without Num-Used",
			second.header.Get("Cache-Status"), second.header.Get("Num-Used"))
	}
}

func TestPostIgnoresConditionalHeaders(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true})
	first := h.postJSON(pathUnlimited, `{"scene":"cond"}`)
	resp := h.do(http.MethodPost, pathUnlimited, "application/json", []byte(`{"scene":"cond"}`),
		"If-None-Match", first.header.Get("Etag"))
	if resp.status != http.StatusOK || !bytes.Equal(resp.body, first.body) {
		t.Errorf("status %d, want 200 with the image", resp.status)
	}
}

func TestGetQRCode(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true})
	resp := h.get("/qrcode?scene=id%3D5&page=pages/a&width=300")
	if resp.status != http.StatusOK {
		t.Fatalf("status %d body %s", resp.status, resp.body)
	}
	if text := decodeQR(t, resp.body); !bytes.Contains([]byte(text), []byte("scene=id%3D5")) {
		t.Errorf("QR text %q does not carry the scene", text)
	}
	if got := resp.header.Get("Cache-Control"); got != "public, max-age=86400" {
		t.Errorf("Cache-Control %q", got)
	}
	// The same code through the WeChat path shares the entry.
	post := h.postJSON(pathUnlimited, `{"page":"pages/a","scene":"id=5","width":300}`)
	if post.header.Get("Cache-Status") != cacheStatusHit {
		t.Errorf("POST after GET: Cache-Status %q, want hit", post.header.Get("Cache-Status"))
	}
	etag := resp.header.Get("Etag")
	notModified := h.do(http.MethodGet, "/qrcode?scene=id%3D5&page=pages/a&width=300", "", nil, "If-None-Match", etag)
	if notModified.status != http.StatusNotModified || len(notModified.body) != 0 {
		t.Errorf("If-None-Match: status %d, want 304", notModified.status)
	}
	bad := []struct {
		query   string
		errcode int
	}{
		{"scene=", 40169},
		{"scene=a%25b", 40129},
		{"scene=a&page=/x", 41030},
		{"scene=a&width=100", 40097},
		{"scene=a&width=2000", 40097},
		{"scene=a&env_version=beta", 40097},
		{"scene=a&is_hyaline=maybe", 47001},
	}
	calls := h.fake.TotalCalls()
	for _, tt := range bad {
		resp := h.get("/qrcode?" + tt.query)
		if resp.status != http.StatusBadRequest || resp.errcode() != tt.errcode {
			t.Errorf("%s: status %d body %s, want 400 errcode %d", tt.query, resp.status, resp.body, tt.errcode)
		}
	}
	if got := h.fake.TotalCalls() - calls; got != 0 {
		t.Errorf("bad input made %d upstream calls", got)
	}
	h.fake.FailNextErrcode(pathUnlimited, 1, 41030)
	if resp := h.get("/qrcode?scene=unreleased&page=pages/new"); resp.status != http.StatusBadRequest || resp.errcode() != 41030 {
		t.Errorf("WeChat's 41030: status %d body %s, want 400", resp.status, resp.body)
	}
	h.fake.FailNext(pathUnlimited, 2, wechattest.FaultHTTP500)
	if resp := h.get("/qrcode?scene=down"); resp.status != http.StatusBadGateway {
		t.Errorf("upstream 500: status %d, want 502", resp.status)
	}
}

func TestQRCodeListenerServesOnlyQRCode(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true})
	srv := newServer(t, h.proxy.QRCodeHandler())
	resp, err := http.Get(srv + "/qrcode?scene=public")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /qrcode: status %d", resp.StatusCode)
	}
	for _, p := range []string{"/cgi-bin/token?grant_type=client_credential&appid=" + demoApp + "&secret=" + wechattest.DemoSecret, "/cgi-bin/getcallbackip"} {
		resp, err := http.Get(srv + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s on the qrcode port: status %d, want 404", p, resp.StatusCode)
		}
	}
	if got := h.fake.Calls("/cgi-bin/getcallbackip"); got != 0 {
		t.Errorf("the qrcode port forwarded an API call")
	}
}

func TestImageBufferIsExactlyItsLength(t *testing.T) {
	img := bytes.Repeat([]byte{0xAB}, 50_000)
	for _, framing := range []string{"content-length", "chunked"} {
		t.Run(framing, func(t *testing.T) {
			url := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if framing == "content-length" {
					w.Header().Set("Content-Length", fmt.Sprint(len(img)))
				}
				for b := img; len(b) > 0; b = b[min(len(b), 4096):] {
					w.Write(b[:min(len(b), 4096)])
					w.(http.Flusher).Flush()
				}
			}))
			resp, err := http.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if want := framing == "chunked"; (resp.ContentLength < 0) != want {
				t.Fatalf("ContentLength %d: the server did not frame as %s", resp.ContentLength, framing)
			}
			got, err := codes.ReadImage(resp.Body, resp.ContentLength)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, img) {
				t.Fatal("ReadImage changed the bytes")
			}
			// The cache charges len(body): any spare capacity is memory it
			// never counts.
			if cap(got) != len(got) {
				t.Errorf("cap %d for %d bytes", cap(got), len(got))
			}
		})
	}
}

// The same bytes name different codes for different apps and endpoints;
// the raw-body shortcut must keep them apart.
func TestSameBodyForAnotherAppOrEndpointMisses(t *testing.T) {
	appA, appB := "wxaaaaaaaaaaaaaaaa", "wxbbbbbbbbbbbbbbbb"
	h := newHarness(t, harnessOptions{cache: true, apps: map[string]string{
		appA: "secret-a-0000000000000000000000a", appB: "secret-b-0000000000000000000000b"}})
	body := `{"path":"pages/a/b","width":430}`
	steps := []struct {
		app, endpoint, want string
	}{
		{appA, pathWxacode, cacheStatusStored},
		{appA, pathWxacode, cacheStatusHit},
		{appB, pathWxacode, cacheStatusStored},
		{appA, pathQRCode, cacheStatusStored},
		{appB, pathWxacode, cacheStatusHit},
		{appA, pathQRCode, cacheStatusHit},
	}
	for i, s := range steps {
		resp := h.postJSON("/apps/"+s.app+s.endpoint, body)
		if got := resp.header.Get("Cache-Status"); got != s.want {
			t.Errorf("step %d (%s %s): Cache-Status %q, want %q", i, s.app, s.endpoint, got, s.want)
		}
	}
	if got := h.fake.Calls(pathWxacode) + h.fake.Calls(pathQRCode); got != 3 {
		t.Errorf("%d upstream calls, want 3: one per app and endpoint", got)
	}
}

func TestAliasTableStaysBounded(t *testing.T) {
	const maxBytes = 4 << 10
	table := newAliasTable(maxBytes)
	key := func(i int) cache.Key { return cache.Key{byte(i), byte(i >> 8)} }
	for i := range 1000 {
		table.put("wxapp", pathUnlimited, fmt.Appendf(nil, `{"scene":"%d"}`, i), key(i))
		if table.bytes > maxBytes {
			t.Fatalf("after %d bodies the table holds %d bytes, over %d", i+1, table.bytes, maxBytes)
		}
	}
	last := fmt.Appendf(nil, `{"scene":"%d"}`, 999)
	if k, ok := table.get("wxapp", pathUnlimited, last); !ok || k != key(999) {
		t.Errorf("the newest body is not found (%v, %v)", k, ok)
	}
	if _, ok := table.get("wxother", pathUnlimited, last); ok {
		t.Error("a body was found under another app")
	}
	large := append([]byte(`{"scene":"x","pad":"`), bytes.Repeat([]byte("y"), maxAliasBody)...)
	table.put("wxapp", pathUnlimited, large, key(1))
	if _, ok := table.get("wxapp", pathUnlimited, large); ok {
		t.Error("a body over maxAliasBody was held")
	}
}

// A refused image is an error to the caller and a reason in the log.
func TestBrokenImageLogSaysWhy(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true})
	h.fake.FailNext(pathUnlimited, 2, wechattest.FaultTruncatedImage)
	resp := h.postJSON(pathUnlimited, `{"scene":"truncated"}`)
	if resp.status != http.StatusBadGateway || resp.errcode() != errcodeSystem {
		t.Fatalf("status %d errcode %d, want 502 and %d", resp.status, resp.errcode(), errcodeSystem)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "code fetch failed") || !strings.Contains(logs, "broken image (wxa-sidecar): unexpected EOF") {
		t.Errorf("the log does not say why the image was refused:\n%s", logs)
	}
}
