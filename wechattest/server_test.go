package wechattest

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	_ "image/jpeg"
	_ "image/png"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

func newTestServer(t *testing.T) (*Server, *clock) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := NewServer(Options{Now: c.Now})
	t.Cleanup(s.Close)
	return s, c
}

func call(t *testing.T, method, u string, body string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func field(t *testing.T, b []byte, k string) any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return m[k]
}

func errcode(t *testing.T, b []byte) int {
	v, _ := field(t, b, "errcode").(float64)
	return int(v)
}

func classic(t *testing.T, s *Server) string {
	_, _, b := call(t, "GET", s.URL+"/cgi-bin/token?grant_type=client_credential&appid="+DemoAppID+"&secret="+DemoSecret, "")
	tok, _ := field(t, b, "access_token").(string)
	if tok == "" {
		t.Fatalf("no token: %s", b)
	}
	return tok
}

func stable(t *testing.T, s *Server, force bool) (string, int) {
	body, _ := json.Marshal(map[string]any{"grant_type": "client_credential", "appid": DemoAppID, "secret": DemoSecret, "force_refresh": force})
	_, _, b := call(t, "POST", s.URL+"/cgi-bin/stable_token", string(body))
	tok, _ := field(t, b, "access_token").(string)
	exp, _ := field(t, b, "expires_in").(float64)
	if tok == "" {
		return "", errcode(t, b)
	}
	return tok, int(exp)
}

func apiCode(t *testing.T, s *Server, tok string) int {
	_, _, b := call(t, "GET", s.URL+"/cgi-bin/getcallbackip?access_token="+url.QueryEscape(tok), "")
	if field(t, b, "ip_list") != nil {
		return 0
	}
	return errcode(t, b)
}

func TestClassicTokenKillsItsPredecessorAfterGrace(t *testing.T) {
	s, c := newTestServer(t)
	first := classic(t, s)
	second := classic(t, s)
	if first == second {
		t.Fatal("classic issued the same token twice")
	}
	if got := apiCode(t, s, first); got != 0 {
		t.Errorf("old token within the grace period: errcode %d, want 0", got)
	}
	c.Add(5*time.Minute + time.Second)
	if got := apiCode(t, s, first); got != 40001 {
		t.Errorf("old token after the grace period: errcode %d, want 40001", got)
	}
	if got := apiCode(t, s, second); got != 0 {
		t.Errorf("new token: errcode %d, want 0", got)
	}
	c.Add(7200 * time.Second)
	if got := apiCode(t, s, second); got != 42001 {
		t.Errorf("expired token: errcode %d, want 42001", got)
	}
}

func TestStableTokenNormalForceAndRollover(t *testing.T) {
	s, c := newTestServer(t)
	a, exp := stable(t, s, false)
	c.Add(time.Hour)
	b, exp2 := stable(t, s, false)
	if a != b || exp != 7200 || exp2 != 3600 {
		t.Errorf("normal mode: %q/%d then %q/%d, want the same token with the remaining lifetime", a[:6], exp, b[:6], exp2)
	}
	cl := classic(t, s)
	if apiCode(t, s, a) != 0 || apiCode(t, s, cl) != 0 {
		t.Error("stable and classic tokens must not invalidate each other")
	}
	c.Add(time.Hour - 4*time.Minute) // inside the last five minutes
	rolled, exp3 := stable(t, s, false)
	if rolled == a || exp3 != 7200 {
		t.Errorf("rollover: got the old token or %d s, want a new token", exp3)
	}
	if apiCode(t, s, a) != 0 {
		t.Error("the old stable token stopped working before its expiry")
	}
	forced, _ := stable(t, s, true)
	if forced == rolled || apiCode(t, s, rolled) != 40001 {
		t.Error("force_refresh must issue a new token and kill the old one")
	}
	if _, code := stable(t, s, true); code != 45011 {
		t.Errorf("a second force within 30s: errcode %d, want 45011", code)
	}
	for range 19 {
		c.Add(31 * time.Second)
		stable(t, s, true)
	}
	c.Add(31 * time.Second)
	if _, code := stable(t, s, true); code != 45009 {
		t.Errorf("force 21 in a day: errcode %d, want 45009", code)
	}
}

func TestTokenErrors(t *testing.T) {
	s, _ := newTestServer(t)
	tests := []struct {
		path string
		want int
	}{
		{"/cgi-bin/token?grant_type=x&appid=" + DemoAppID + "&secret=" + DemoSecret, 40002},
		{"/cgi-bin/token?grant_type=client_credential&appid=wxnope&secret=" + DemoSecret, 40013},
		{"/cgi-bin/token?grant_type=client_credential&appid=" + DemoAppID + "&secret=bad", 40125},
		{"/cgi-bin/token?grant_type=client_credential&appid=" + DemoAppID, 41004},
		{"/cgi-bin/stable_token", 43002},
		{"/cgi-bin/getcallbackip", 41001},
		{"/cgi-bin/getcallbackip?access_token=made-up", 40001},
	}
	for _, tt := range tests {
		status, h, b := call(t, "GET", s.URL+tt.path, "")
		if status != 200 || errcode(t, b) != tt.want || h.Get("Content-Type") != "application/json; encoding=utf-8" {
			t.Errorf("%s: %d %s %s, want 200 errcode %d", tt.path, status, h.Get("Content-Type"), b, tt.want)
		}
	}
	tok := classic(t, s)
	_, _, b := call(t, "POST", s.URL+"/wxa/getwxacodeunlimit", `{"scene":"a","access_token":"`+tok+`"}`)
	if errcode(t, b) != 47001 {
		t.Errorf("token in the body: %s, want 47001", b)
	}
	if status, _, _ := call(t, "GET", s.URL+"/no/such/api", ""); status != 404 {
		t.Errorf("unknown path: %d, want 404", status)
	}
}

func decode(t *testing.T, b []byte) (string, string) {
	t.Helper()
	img, format, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not an image: %v", err)
	}
	bmp, _ := gozxing.NewBinaryBitmapFromImage(img)
	res, err := qrcode.NewQRCodeReader().Decode(bmp, nil)
	if err != nil {
		t.Fatalf("no QR code: %v", err)
	}
	return res.GetText(), format
}

func TestCodeImagesAreRealQRCodes(t *testing.T) {
	s, _ := newTestServer(t)
	tok := classic(t, s)
	u := s.URL + "/wxa/getwxacodeunlimit?access_token=" + tok
	status, h, b := call(t, "POST", u, `{"scene":"id=1","page":"pages/a"}`)
	if status != 200 || h.Get("Content-Type") != "image/jpeg" || h.Get("Content-Disposition") != ContentDisposition {
		t.Fatalf("%d %v", status, h)
	}
	text, format := decode(t, b)
	if want := CodeText("/wxa/getwxacodeunlimit", url.Values{"scene": {"id=1"}, "page": {"pages/a"}, "env": {""}, "w": {"430"}}); text != want || format != "jpeg" {
		t.Errorf("decoded %q (%s), want %q (jpeg)", text, format, want)
	}
	_, _, b2 := call(t, "POST", u, `{"scene":"id=1","page":"pages/a"}`)
	if !bytes.Equal(b, b2) {
		t.Error("the same request drew different bytes")
	}
	_, h, png := call(t, "POST", u, `{"scene":"id=1","is_hyaline":true}`)
	if _, format := decode(t, png); format != "png" || h.Get("Content-Type") != "image/jpeg" {
		t.Errorf("hyaline: %s labelled %s, want png labelled image/jpeg", format, h.Get("Content-Type"))
	}
	for body, want := range map[string]int{
		`{"scene":""}`: 40169, `{"scene":"100%"}`: 40129, `{"scene":"a","page":"/x"}`: 41030,
		`{"scene":"a","env_version":"beta"}`: 40097, `{"scene":"a","is_hyaline":1}`: 47001, `{`: 47001,
	} {
		if _, _, b := call(t, "POST", u, body); errcode(t, b) != want {
			t.Errorf("%s: %s, want errcode %d", body, b, want)
		}
	}
	w := s.URL + "/wxa/getwxacode?access_token=" + tok
	_, h1, _ := call(t, "POST", w, `{"path":"pages/a?x=1"}`)
	_, h2, _ := call(t, "POST", w, `{"path":"pages/a?x=1"}`)
	_, h3, _ := call(t, "POST", s.URL+"/cgi-bin/wxaapp/createwxaqrcode?access_token="+tok, `{"path":"pages/b"}`)
	if h1.Get("Num-Used") != "1" || h2.Get("Num-Used") != "1" || h3.Get("Num-Used") != "2" {
		t.Errorf("Num-Used %q %q %q, want 1 1 2 (identical parameters count once)", h1.Get("Num-Used"), h2.Get("Num-Used"), h3.Get("Num-Used"))
	}
	if _, _, b := call(t, "POST", s.URL+"/cgi-bin/wxaapp/createwxaqrcode?access_token="+tok, `{"path":"`+strings.Repeat("a", 129)+`"}`); errcode(t, b) != 40159 {
		t.Errorf("long path: %s, want 40159", b)
	}
}

func TestFaults(t *testing.T) {
	s, _ := newTestServer(t)
	tok := classic(t, s)
	u := s.URL + "/wxa/getwxacodeunlimit?access_token=" + tok
	body := `{"scene":"f"}`
	s.FailNext("/wxa/getwxacodeunlimit", 1, FaultHTTP500)
	if status, _, _ := call(t, "POST", u, body); status != 500 {
		t.Errorf("FaultHTTP500: %d", status)
	}
	s.FailNext("/wxa/getwxacodeunlimit", 1, FaultBusy)
	if _, _, b := call(t, "POST", u, body); errcode(t, b) != -1 {
		t.Errorf("FaultBusy: %s", b)
	}
	s.FailNext("/wxa/getwxacodeunlimit", 1, FaultErrcodeAsImage)
	if _, h, b := call(t, "POST", u, body); h.Get("Content-Type") != "image/jpeg" || errcode(t, b) != -1 {
		t.Errorf("FaultErrcodeAsImage: %s %s", h.Get("Content-Type"), b)
	}
	s.FailNext("/wxa/getwxacodeunlimit", 1, FaultTruncatedImage)
	resp, err := http.Post(u, "application/json", strings.NewReader(body))
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Error("FaultTruncatedImage: read the whole body without an error")
	}
	s.FailNext("", 1, FaultDropConnection)
	if _, err := http.Post(u, "application/json", strings.NewReader(body)); err == nil {
		t.Error("FaultDropConnection: got a response")
	}
	s.FailNextErrcode("/wxa/getwxacodeunlimit", 2, 45011)
	for range 2 {
		if _, _, b := call(t, "POST", u, body); errcode(t, b) != 45011 {
			t.Errorf("FailNextErrcode: %s", b)
		}
	}
	if status, _, _ := call(t, "POST", u, body); status != 200 {
		t.Error("faults did not run out")
	}
	if got := s.Calls("/wxa/getwxacodeunlimit"); got != 8 {
		t.Errorf("Calls %d, want 8", got)
	}
	if reqs := s.Requests("/wxa/getwxacodeunlimit"); len(reqs) != 8 || string(reqs[0].Body) != body || reqs[0].Query.Get("access_token") != tok {
		t.Errorf("Requests did not record what was sent")
	}
}

func TestLatencyRespectsCancellation(t *testing.T) {
	s, _ := newTestServer(t)
	s.SetLatency(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL+"/cgi-bin/getcallbackip", nil)
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("want the call cut short")
	}
	if s.Calls("/cgi-bin/getcallbackip") != 1 {
		t.Error("the delayed call was not counted")
	}
}

func TestMisbehavingUpstreams(t *testing.T) {
	t.Run("token redirect", func(t *testing.T) {
		s := NewServer(Options{TokenRedirect: "http://127.0.0.2:9"})
		t.Cleanup(s.Close)
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Post(s.URL+"/cgi-bin/stable_token", "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != "http://127.0.0.2:9/cgi-bin/stable_token" {
			t.Errorf("got %d %q, want 307 to the other host", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
	t.Run("huge expires_in", func(t *testing.T) {
		s := NewServer(Options{TokenExpiresIn: 9300000000})
		t.Cleanup(s.Close)
		_, _, b := call(t, "GET", s.URL+"/cgi-bin/token?grant_type=client_credential&appid="+DemoAppID+"&secret="+DemoSecret, "")
		if got := field(t, b, "expires_in"); got != float64(9300000000) {
			t.Errorf("expires_in %v, want 9300000000", got)
		}
	})
	t.Run("lifetime cap is per parameter set", func(t *testing.T) {
		s := NewServer(Options{LifetimeCap: 1})
		t.Cleanup(s.Close)
		tok := classic(t, s)
		u := s.URL + "/wxa/getwxacode?access_token=" + tok
		if status, _, b := call(t, "POST", u, `{"path":"a"}`); status != 200 || !bytes.HasPrefix(b, []byte{0xFF, 0xD8}) {
			t.Fatalf("first code: %d %q", status, truncated(b))
		}
		if _, _, b := call(t, "POST", u, `{"path":"b"}`); errcode(t, b) != 45029 {
			t.Errorf("new parameters past the cap: %s, want 45029", b)
		}
		if _, _, b := call(t, "POST", u, `{"path":"a"}`); !bytes.HasPrefix(b, []byte{0xFF, 0xD8}) {
			t.Errorf("parameters made before the cap: %q, want the image", truncated(b))
		}
	})
	t.Run("faults", func(t *testing.T) {
		s, _ := newTestServer(t)
		tok := classic(t, s)
		u := s.URL + "/wxa/getwxacodeunlimit?access_token=" + tok
		s.FailNext("", 1, FaultCorruptJPEG)
		_, _, b := call(t, "POST", u, `{"scene":"x"}`)
		if !bytes.HasPrefix(b, []byte{0xFF, 0xD8, 0xFF}) || !bytes.HasSuffix(b, []byte{0xFF, 0xD9}) {
			t.Errorf("FaultCorruptJPEG lacks the markers: %q", truncated(b))
		}
		if _, _, err := image.Decode(bytes.NewReader(b)); err == nil {
			t.Error("FaultCorruptJPEG decodes")
		}
		s.FailNext("", 1, FaultHugeDimensions)
		_, _, b = call(t, "POST", u, `{"scene":"x"}`)
		cfg, format, err := image.DecodeConfig(bytes.NewReader(b))
		if err != nil || format != "jpeg" || cfg.Width != 65000 || cfg.Height != 65000 {
			t.Errorf("FaultHugeDimensions: %v %s %dx%d", err, format, cfg.Width, cfg.Height)
		}
		s.FailNextRedirect("", 1, "http://127.0.0.2:9/elsewhere")
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Post(u, "application/json", strings.NewReader(`{"scene":"x"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "http://127.0.0.2:9/elsewhere" {
			t.Errorf("FaultRedirect: %d %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		s.FailNextErrcodeAs("", 1, 45063, "application/json:UTF-8")
		_, h, b := call(t, "POST", u, `{"scene":"x"}`)
		if h.Get("Content-Type") != "application/json:UTF-8" || errcode(t, b) != 45063 {
			t.Errorf("FailNextErrcodeAs: %q %s", h.Get("Content-Type"), b)
		}
	})
}

func truncated(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

func TestStaleStableTokenIsHandedOutUntilForced(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := NewServer(Options{Now: c.Now, StaleStableToken: true})
	t.Cleanup(s.Close)
	dead, _ := stable(t, s, false)
	s.RevokeTokens()
	if got, _ := stable(t, s, false); got != dead {
		t.Fatal("normal mode replaced a revoked stable token; want it handed out again")
	}
	if code := apiCode(t, s, dead); code != 40001 {
		t.Fatalf("the revoked token: errcode %d, want 40001", code)
	}
	forced, _ := stable(t, s, true)
	if forced == dead || apiCode(t, s, forced) != 0 {
		t.Fatal("force_refresh did not issue a working token")
	}
	if got, _ := stable(t, s, false); got != forced {
		t.Error("normal mode after the force: want the forced token")
	}
}
