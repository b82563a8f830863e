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
	"crypto/rand"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
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
