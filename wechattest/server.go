// Package wechattest is a fake WeChat API server with the real contracts
// the sidecar relies on (see WECHAT-API.md): classic tokens that kill their
// predecessor after a grace period, stable tokens with normal and force
// modes and the five-minute rollover, expiry, code images that decode as
// real QR codes, WeChat's errcodes, and hooks to make it fail.
//
// It shares no code with the sidecar it tests, and it is also the upstream
// of `wxa-sidecar --demo`.
package wechattest

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The demo app of --demo and of tests that need just one app.
const (
	DemoAppID  = "wx00000000000demo0"
	DemoSecret = "0123456789abcdef0123456789abcdef"
)

// ContentDisposition is what the fake sends with every image. WeChat's exact
// value is unconfirmed; SDKs (EasyWeChat 4) look for "attachment".
const ContentDisposition = `attachment; filename="wxacode.jpeg"`

// Options configures the fake.
type Options struct {
	// Apps maps appid to secret; nil means the demo app alone.
	Apps map[string]string
	// TokenTTL is the lifetime of issued tokens; default 7200s.
	TokenTTL time.Duration
	// ClassicGrace is how long a classic token keeps working after a newer
	// one is issued; default 5m.
	ClassicGrace time.Duration
	// Now is the clock of token expiry, rollover and force limits.
	Now func() time.Time

	// The misbehaving upstreams below are what a hostile network or a
	// broken WeChat could send; the demo and every test can turn them on.

	// TokenRedirect, when set, makes both token endpoints answer 307 with
	// Location TokenRedirect+path?query (307 asks a client to re-POST the
	// body, secret included, to that host).
	TokenRedirect string
	// TokenExpiresIn, when not 0, is the expires_in every token answer
	// reports (e.g. 9300000000, beyond time.Duration), whatever the token's
	// real lifetime.
	TokenExpiresIn int64
	// LifetimeCap, when > 0, is the number of distinct getwxacode and
	// createwxaqrcode parameter sets an app may generate; past it, new
	// parameters get 45029 while those generated before are still served,
	// as WeChat does.
	LifetimeCap int
	// StaleStableToken, when set, makes a normal-mode stable_token call
	// answer the app's current stable token even after RevokeTokens killed
	// it, until a force_refresh replaces it: WeChat keeps handing out a
	// token it calls invalid (40001) until someone forces a refresh.
	StaleStableToken bool
}

// Fault is a way for the next calls to fail.
type Fault int

const (
	// FaultHTTP500 answers HTTP 500 with a short text body.
	FaultHTTP500 Fault = iota + 1
	// FaultBusy answers errcode -1, "system error".
	FaultBusy
	// FaultTruncatedImage announces the whole image's Content-Length, sends
	// half of it and closes the connection.
	FaultTruncatedImage
	// FaultDropConnection closes the connection without any response.
	FaultDropConnection
	// FaultErrcodeAsImage answers errcode JSON labelled image/jpeg.
	FaultErrcodeAsImage
	// FaultCorruptJPEG answers a body that starts FF D8 FF and ends FF D9,
	// as a JPEG does, with garbage between: whole by its markers, but not
	// decodable.
	FaultCorruptJPEG
	// FaultHugeDimensions answers a small, well-formed JPEG header that
	// declares 65000x65000 pixels: a decoder that trusts it allocates
	// gigabytes.
	FaultHugeDimensions
	// FaultRedirect answers 302 with Location set by FailNextRedirect (a
	// host of the test's choosing).
	FaultRedirect
)

// Request is what the fake saw of one call.
type Request struct {
	Method string
	Query  url.Values
	Header http.Header
	Body   []byte
}

// Server is the fake. Its hooks are safe for concurrent use.
type Server struct {
	// URL is the base URL, http://127.0.0.1:port.
	URL string

	srv  *httptest.Server
	opts Options

	mu       sync.Mutex
	apps     map[string]*app
	tokens   map[string]*tokenInfo
	latency  time.Duration
	faults   []pendingFault
	calls    map[string]int
	total    int
	requests map[string][]Request

	lnk *linkState // the link endpoints' memory (links.go)
}

type app struct {
	secret  string
	classic *tokenInfo
	stable  *tokenInfo
	forced  []time.Time
	codes   map[string]bool // distinct getwxacode/createwxaqrcode parameter sets
}

type tokenInfo struct {
	value  string
	app    string
	expiry time.Time
	diesAt time.Time // zero: lives until expiry
}

type pendingFault struct {
	path        string
	n           int
	fault       Fault
	errcode     int
	contentType string // of an errcode answer; default WeChat's
	location    string // of FaultRedirect
}

// NewServer starts a fake on 127.0.0.1.
func NewServer(opts Options) *Server {
	s := New(opts)
	s.srv = httptest.NewServer(s)
	s.URL = s.srv.URL
	return s
}

// New returns a fake that is not listening; serve it as an http.Handler.
func New(opts Options) *Server {
	if opts.Apps == nil {
		opts.Apps = map[string]string{DemoAppID: DemoSecret}
	}
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = 7200 * time.Second
	}
	if opts.ClassicGrace <= 0 {
		opts.ClassicGrace = 5 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{opts: opts, apps: map[string]*app{}, tokens: map[string]*tokenInfo{},
		calls: map[string]int{}, requests: map[string][]Request{}, lnk: newLinkState()}
	for id, secret := range opts.Apps {
		s.apps[id] = &app{secret: secret, codes: map[string]bool{}}
	}
	return s
}

// Close stops the server started by NewServer.
func (s *Server) Close() {
	if s.srv != nil {
		s.srv.CloseClientConnections()
		s.srv.Close()
	}
}

// RevokeTokens makes every token issued so far invalid (40001).
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	for _, t := range s.tokens {
		t.diesAt = now
	}
}

// SetLatency delays every answer by d (a call cancelled meanwhile gets none).
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// FailNext makes the next n calls to path ("" for any) fail with f.
func (s *Server) FailNext(path string, n int, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, pendingFault{path: path, n: n, fault: f})
}

// FailNextErrcode makes the next n calls to path answer errcode (HTTP 200).
func (s *Server) FailNextErrcode(path string, n int, errcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, pendingFault{path: path, n: n, errcode: errcode})
}

// FailNextErrcodeAs is FailNextErrcode with the answer labelled
// contentType, as older WeChat answers were (text/plain,
// application/json:UTF-8) or as a broken one might be (image/jpeg).
func (s *Server) FailNextErrcodeAs(path string, n int, errcode int, contentType string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, pendingFault{path: path, n: n, errcode: errcode, contentType: contentType})
}

// FailNextRedirect makes the next n calls to path ("" for any) answer 302
// Found with Location location.
func (s *Server) FailNextRedirect(path string, n int, location string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, pendingFault{path: path, n: n, fault: FaultRedirect, location: location})
}

// Calls is the number of calls received on path, failed ones included.
func (s *Server) Calls(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[path]
}

// TotalCalls is the number of calls received on any path.
func (s *Server) TotalCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// Requests returns what the fake saw on path, in order.
func (s *Server) Requests(path string) []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests[path])
}

// ResetCounts forgets the calls and requests seen so far.
func (s *Server) ResetCounts() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls, s.total, s.requests = map[string]int{}, 0, map[string][]Request{}
}

// ServeHTTP answers one call as WeChat would.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	path := r.URL.Path
	s.mu.Lock()
	s.calls[path]++
	s.total++
	s.requests[path] = append(s.requests[path], Request{Method: r.Method, Query: r.URL.Query(),
		Header: r.Header.Clone(), Body: body})
	latency := s.latency
	fault := s.takeFault(path)
	s.mu.Unlock()

	if latency > 0 {
		t := time.NewTimer(latency)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
	if fault != nil {
		s.fail(w, r, fault, body)
		return
	}
	handler, ok := s.route(path)
	if !ok {
		http.Error(w, "404 Not Found", http.StatusNotFound)
		return
	}
	handler(w, r, body)
}

func (s *Server) takeFault(path string) *pendingFault {
	for i := range s.faults {
		f := &s.faults[i]
		if f.n > 0 && (f.path == "" || f.path == path) {
			f.n--
			taken := *f
			if f.n == 0 {
				s.faults = slices.Delete(s.faults, i, i+1)
			}
			return &taken
		}
	}
	return nil
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, f *pendingFault, body []byte) {
	if f.errcode != 0 {
		if f.contentType != "" {
			w.Header().Set("Content-Type", f.contentType)
			fmt.Fprintf(w, `{"errcode":%d,"errmsg":"%s rid: %s"}`, f.errcode, errmsgs[f.errcode], rid())
			return
		}
		writeErr(w, f.errcode, errmsgs[f.errcode])
		return
	}
	switch f.fault {
	case FaultHTTP500:
		http.Error(w, "Internal Server Error", http.StatusInternalServerError)
	case FaultBusy:
		writeErr(w, -1, "system error")
	case FaultErrcodeAsImage:
		w.Header().Set("Content-Type", "image/jpeg")
		fmt.Fprintf(w, `{"errcode":-1,"errmsg":"system error rid: %s"}`, rid())
	case FaultTruncatedImage:
		img, _, err := s.imageFor(r.URL.Path, body)
		if err != nil {
			img = bytes.Repeat([]byte{0xFF, 0xD8, 0xFF}, 1000)
		}
		w.Header().Set("Content-Type", "image/jpeg")
		w.Header().Set("Content-Length", strconv.Itoa(len(img)))
		w.WriteHeader(http.StatusOK)
		w.Write(img[:len(img)/2])
		// Returning short of Content-Length makes net/http close the
		// connection: the client sees an unexpected EOF.
	case FaultCorruptJPEG:
		img := append([]byte{0xFF, 0xD8, 0xFF, 0xE0}, bytes.Repeat([]byte("not a jpeg scan "), 64)...)
		img = append(img, 0xFF, 0xD9)
		writeImage(w, img)
	case FaultHugeDimensions:
		writeImage(w, hugeJPEGHeader(65000, 65000))
	case FaultRedirect:
		http.Redirect(w, r, f.location, http.StatusFound)
	case FaultDropConnection:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
}

type handlerFunc func(w http.ResponseWriter, r *http.Request, body []byte)

func (s *Server) route(path string) (handlerFunc, bool) {
	if s.opts.TokenRedirect != "" && (path == "/cgi-bin/token" || path == "/cgi-bin/stable_token") {
		return s.redirectToken, true
	}
	switch path {
	case "/cgi-bin/token":
		return s.classicToken, true
	case "/cgi-bin/stable_token":
		return s.stableToken, true
	case "/sns/jscode2session":
		return s.jscode2session, true
	case "/wxa/getwxacodeunlimit", "/wxa/getwxacode", "/cgi-bin/wxaapp/createwxaqrcode":
		return s.withToken(s.code), true
	case pathScheme, pathURLLink, pathShortLink, pathNFCScheme:
		return s.withToken(s.link), true
	case "/wxa/msg_sec_check":
		return s.withToken(func(w http.ResponseWriter, r *http.Request, body []byte, _ string) {
			writeJSON(w, map[string]any{"errcode": 0, "errmsg": "ok", "result": map[string]any{"suggest": "pass", "label": 100}})
		}), true
	case "/wxa/img_sec_check":
		return s.withToken(s.imgSecCheck), true
	case "/cgi-bin/openapi/quota/get":
		return s.withToken(func(w http.ResponseWriter, r *http.Request, body []byte, _ string) {
			writeJSON(w, map[string]any{"errcode": 0, "errmsg": "ok",
				"quota":      map[string]any{"daily_limit": 0, "used": 0, "remain": 0},
				"rate_limit": map[string]any{"call_count": 5000, "refresh_second": 60}})
		}), true
	case "/cgi-bin/getcallbackip":
		return s.withToken(func(w http.ResponseWriter, r *http.Request, body []byte, _ string) {
			writeJSON(w, map[string]any{"ip_list": []string{"101.226.103.0/25", "101.226.62.0/26"}})
		}), true
	}
	return nil, false
}

// withToken checks the access_token as WeChat does before an API runs.
func (s *Server) withToken(h func(w http.ResponseWriter, r *http.Request, body []byte, appID string)) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		tok := r.URL.Query().Get("access_token")
		if tok == "" {
			if bytes.Contains(body, []byte(`"access_token"`)) {
				writeErr(w, 47001, "data format error")
				return
			}
			writeErr(w, 41001, "access_token missing")
			return
		}
		s.mu.Lock()
		t := s.tokens[tok]
		now := s.opts.Now()
		s.mu.Unlock()
		switch {
		case t == nil || (!t.diesAt.IsZero() && !now.Before(t.diesAt)):
			writeErr(w, 40001, "invalid credential, access_token is invalid or not latest")
		case !now.Before(t.expiry):
			writeErr(w, 42001, "access_token expired")
		default:
			h(w, r, body, t.app)
		}
	}
}

func (s *Server) checkApp(appID, secret string) (*app, int) {
	a := s.apps[appID]
	switch {
	case a == nil:
		return nil, 40013
	case secret == "":
		return nil, 41004
	case secret != a.secret:
		return nil, 40125
	}
	return a, 0
}

func (s *Server) issue(appID string, now time.Time) *tokenInfo {
	t := &tokenInfo{value: randomString(136), app: appID, expiry: now.Add(s.opts.TokenTTL)}
	s.tokens[t.value] = t
	return t
}

func (s *Server) classicToken(w http.ResponseWriter, r *http.Request, _ []byte) {
	q := r.URL.Query()
	if q.Get("grant_type") != "client_credential" {
		writeErr(w, 40002, "invalid grant_type")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, code := s.checkApp(q.Get("appid"), q.Get("secret"))
	if code != 0 {
		writeErr(w, code, errmsgs[code])
		return
	}
	now := s.opts.Now()
	if prev := a.classic; prev != nil && (prev.diesAt.IsZero() || prev.diesAt.After(now.Add(s.opts.ClassicGrace))) {
		prev.diesAt = now.Add(s.opts.ClassicGrace)
	}
	a.classic = s.issue(q.Get("appid"), now)
	writeJSON(w, map[string]any{"access_token": a.classic.value, "expires_in": s.expiresIn(a.classic, now)})
}

// redirectToken sends a token fetch, secret and all, elsewhere: what a
// hijacked DNS name or a compromised egress proxy could answer.
func (s *Server) redirectToken(w http.ResponseWriter, r *http.Request, _ []byte) {
	target := s.opts.TokenRedirect + r.URL.Path
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	w.Header().Set("Location", target)
	w.WriteHeader(http.StatusTemporaryRedirect)
}

// expiresIn is what a token answer reports as its remaining lifetime.
func (s *Server) expiresIn(t *tokenInfo, now time.Time) int64 {
	if s.opts.TokenExpiresIn != 0 {
		return s.opts.TokenExpiresIn
	}
	return int64(t.expiry.Sub(now) / time.Second)
}

// stableRollover is the last part of a stable token's life in which a
// normal-mode call gets the next token.
const stableRollover = 5 * time.Minute

func (s *Server) stableToken(w http.ResponseWriter, r *http.Request, body []byte) {
	if r.Method != http.MethodPost {
		writeErr(w, 43002, "require POST method")
		return
	}
	var req struct {
		GrantType    string `json:"grant_type"`
		AppID        string `json:"appid"`
		Secret       string `json:"secret"`
		ForceRefresh bool   `json:"force_refresh"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeErr(w, 47001, "data format error")
		return
	}
	if req.GrantType != "client_credential" {
		writeErr(w, 40002, "invalid grant_type")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, code := s.checkApp(req.AppID, req.Secret)
	if code != 0 {
		writeErr(w, code, errmsgs[code])
		return
	}
	now := s.opts.Now()
	alive := func(t *tokenInfo) bool {
		return t != nil && now.Before(t.expiry) && (t.diesAt.IsZero() || now.Before(t.diesAt))
	}
	switch {
	case req.ForceRefresh:
		kept := a.forced[:0]
		for _, at := range a.forced {
			if now.Sub(at) < 24*time.Hour {
				kept = append(kept, at)
			}
		}
		a.forced = kept
		if len(a.forced) >= 20 {
			writeErr(w, 45009, "reach max api daily quota limit")
			return
		}
		if len(a.forced) > 0 && now.Sub(a.forced[len(a.forced)-1]) < 30*time.Second {
			writeErr(w, 45011, "api minute-quota reach limit, mustslower retry next minute")
			return
		}
		a.forced = append(a.forced, now)
		if a.stable != nil {
			a.stable.diesAt = now
		}
		a.stable = s.issue(req.AppID, now)
	case s.opts.StaleStableToken && a.stable != nil && now.Before(a.stable.expiry) && !alive(a.stable):
		// Revoked, yet still what normal mode answers: only force mode
		// replaces it.
	case !alive(a.stable) || a.stable.expiry.Sub(now) <= stableRollover:
		// The old one, if alive, keeps working until its own expiry.
		a.stable = s.issue(req.AppID, now)
	}
	writeJSON(w, map[string]any{"access_token": a.stable.value, "expires_in": s.expiresIn(a.stable, now)})
}

func (s *Server) jscode2session(w http.ResponseWriter, r *http.Request, _ []byte) {
	q := r.URL.Query()
	s.mu.Lock()
	_, code := s.checkApp(q.Get("appid"), q.Get("secret"))
	s.mu.Unlock()
	if code != 0 {
		writeErr(w, code, errmsgs[code])
		return
	}
	jsCode := q.Get("js_code")
	if jsCode == "" || strings.ContainsAny(jsCode, " /") {
		writeErr(w, 40029, "invalid code")
		return
	}
	writeJSON(w, map[string]any{"openid": "o" + jsCode + "-openid", "session_key": "sk-" + jsCode, "unionid": "u" + jsCode})
}

func (s *Server) imgSecCheck(w http.ResponseWriter, r *http.Request, body []byte, _ string) {
	_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || params["boundary"] == "" {
		writeErr(w, 41005, "media data missing")
		return
	}
	req := &http.Request{Method: http.MethodPost, Header: r.Header, Body: io.NopCloser(bytes.NewReader(body))}
	if err := req.ParseMultipartForm(32 << 20); err != nil || req.MultipartForm.File["media"] == nil {
		writeErr(w, 41005, "media data missing")
		return
	}
	writeJSON(w, map[string]any{"errcode": 0, "errmsg": "ok"})
}

// code answers the three image endpoints.
func (s *Server) code(w http.ResponseWriter, r *http.Request, body []byte, appID string) {
	img, params, err := s.imageFor(r.URL.Path, body)
	if err != nil {
		code := err.(codeErr)
		writeErr(w, code.errcode, code.errmsg)
		return
	}
	h := w.Header()
	if r.URL.Path != "/wxa/getwxacodeunlimit" {
		s.mu.Lock()
		a := s.apps[appID]
		if !a.codes[params] && s.opts.LifetimeCap > 0 && len(a.codes) >= s.opts.LifetimeCap {
			// Past the cap only new parameters are refused; codes made
			// before are still served, and not counted again.
			s.mu.Unlock()
			writeErr(w, 45029, errmsgs[45029])
			return
		}
		a.codes[params] = true
		used := len(a.codes)
		s.mu.Unlock()
		h.Set("Num-Used", strconv.Itoa(used))
	}
	writeImage(w, img)
}

// writeImage answers img with WeChat's image headers.
func writeImage(w http.ResponseWriter, img []byte) {
	h := w.Header()
	h.Set("Content-Type", "image/jpeg") // even for a PNG, as WeChat does
	h.Set("Content-Disposition", ContentDisposition)
	h.Set("Content-Length", strconv.Itoa(len(img)))
	w.WriteHeader(http.StatusOK)
	w.Write(img)
}

// hugeJPEGHeader is the start of a baseline JPEG declaring width x height:
// SOI, a quantization table, SOF0, a Huffman table pair, SOS, a few bytes
// of scan and EOI. DecodeConfig reports its size without allocating it.
func hugeJPEGHeader(width, height int) []byte {
	b := []byte{0xFF, 0xD8}
	dqt := append([]byte{0xFF, 0xDB, 0x00, 0x43, 0x00}, bytes.Repeat([]byte{1}, 64)...)
	b = append(b, dqt...)
	b = append(b, 0xFF, 0xC0, 0x00, 0x0B, 0x08, byte(height>>8), byte(height), byte(width>>8), byte(width), 0x01, 0x01, 0x11, 0x00)
	// DC and AC tables with one code each.
	b = append(b, 0xFF, 0xC4, 0x00, 0x14, 0x00, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	b = append(b, 0xFF, 0xC4, 0x00, 0x14, 0x10, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	b = append(b, 0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00)
	b = append(b, bytes.Repeat([]byte{0x00}, 64)...)
	return append(b, 0xFF, 0xD9)
}

func writeJSON(w http.ResponseWriter, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json; encoding=utf-8")
	w.Write(b)
}

func writeErr(w http.ResponseWriter, code int, msg string) {
	if msg == "" {
		msg = "error"
	}
	writeJSON(w, map[string]any{"errcode": code, "errmsg": msg + " rid: " + rid()})
}

var errmsgs = map[int]string{
	-1:    "system error",
	40001: "invalid credential, access_token is invalid or not latest",
	40013: "invalid appid",
	40014: "invalid access_token",
	40097: "invalid args",
	40125: "invalid appsecret",
	40129: "invalid scene",
	40159: "invalid length for path, or the data is not json string",
	40169: "invalid length for scene, or the data is not json string",
	41004: "appsecret missing",
	41030: "invalid page",
	42001: "access_token expired",
	45009: "reach max api daily quota limit",
	45011: "api minute-quota reach limit, mustslower retry next minute",
	45029: "max code count reached",
	45063: "no permission to generate",
	61004: "access clientip is not registered",
	47001: "data format error",
	48001: "api unauthorized",
	85096: "not allow include scancode_time field",
	// The link endpoints' (links.go).
	40066:   "invalid url",
	40165:   "invalid weapp pagepath",
	40212:   "invalid query",
	44993:   "reach max daily quota limit of scheme and url link",
	85400:   "permanent short link reach max count",
	85401:   "time limit between 1min and 30days",
	85402:   "invalid env_version",
	9800003: "invalid model_id",
	9800010: "nfc scheme already exists",
}

func rid() string { return randomString(8) + "-" + randomString(8) }

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// sortedJSON re-encodes a parameter set with sorted keys, so identical
// parameters count once in Num-Used.
func sortedJSON(m map[string]any) string {
	keys := slices.Sorted(maps.Keys(m))
	var b strings.Builder
	for _, k := range keys {
		v, _ := json.Marshal(m[k])
		b.WriteString(k + "=" + string(v) + ";")
	}
	return b.String()
}
