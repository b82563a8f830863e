// Package upstream is the only code that sends to WeChat. Every request it
// sends goes to the one configured base URL, asks the quota.Gate first,
// carries exactly one access_token (the managed one), is replayed once with
// a fresh token when WeChat says the token is dead (40001, 40014, 42001),
// never follows a redirect, and has its outcome reported exactly once
// through Hooks: plain and signed calls, code fetches and token fetches.
//
// It never imports cache/ or proxy/: what is sent and what an image is
// belong to its callers.
package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/internal/neterr"
	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/token"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// Tokens is one app's managed access_token (token.Manager is one).
// Implementations are safe for concurrent use. Token returns a token that
// has not expired; Invalidate is told a token WeChat called dead and returns
// its replacement, fetching one only if failed is still the current token.
type Tokens interface {
	AppID() string
	Token(ctx context.Context) (token.Token, error)
	Invalidate(ctx context.Context, failed string) (token.Token, error)
}

// Call is one call to WeChat.
type Call struct {
	// Tokens is the app whose token the call carries; nil for calls that
	// authenticate otherwise (/sns/*), which carry none.
	Tokens Tokens
	// Path is the WeChat path, sent to the base URL's path + Path.
	Path string
	// Endpoint is Path's bounded name (wechat.Endpoint): the gate's key and
	// the hooks' label.
	Endpoint string
	// Body is the buffered body, replayed on a token error; nil when the
	// request's own body streams through (never replayed).
	Body []byte
	// Image marks a code fetch: a 200 answer without an errcode is judged
	// by the caller (a whole image or a broken one), who reports it with
	// Client.Report. Every other outcome is reported here.
	Image bool
	// Budget, when set, is a further gate every request of this call (a
	// replay included) must pass before the Client's own, under the same
	// key: a share of the endpoint's limit that caps what one kind of
	// caller may spend (GET /qrcode on QRCODE_ADDR). Its refusal is the
	// call's error; it is told nothing of WeChat's answers.
	Budget quota.Gate
}

// Outcome is what one request to WeChat came to: the bounded values of the
// upstream_requests_total outcome label.
type Outcome string

// The outcomes.
const (
	OK          Outcome = "ok"
	Errcode     Outcome = "errcode"
	HTTPError   Outcome = "http_error"
	Timeout     Outcome = "timeout"
	BrokenImage Outcome = "broken_image"
)

// Outcomes lists every Outcome, for metrics that start at zero.
var Outcomes = []Outcome{OK, Errcode, HTTPError, Timeout, BrokenImage}

// Hooks observe every request sent; nil fields are no-ops. They are called
// on the caller's goroutine and must not block.
type Hooks struct {
	// Outcome is called exactly once for every request that reached the
	// network (a replay is a second request).
	Outcome func(endpoint string, o Outcome)
	// Errcode is called for every errcode WeChat answered.
	Errcode func(endpoint string, code wechat.Errcode)
	// Duration is the time until WeChat's response headers.
	Duration func(endpoint string, d time.Duration)
	// Replayed is called when a call is replayed with a fresh token.
	Replayed func(app string)
}

// Options configures a Client. Zero values get the documented defaults.
type Options struct {
	// Base is WeChat's base URL, e.g. https://api.weixin.qq.com; required.
	Base string
	// Transport sends requests; default http.DefaultTransport. Used through
	// RoundTrip, so no redirect is ever followed.
	Transport http.RoundTripper
	// Timeout bounds each call, its replay included; default 10s.
	Timeout time.Duration
	// Gate admits every request; default quota.NoGate.
	Gate quota.Gate
	// Hooks observe every request.
	Hooks Hooks
	// Logger receives warnings; default discard.
	Logger *slog.Logger
	// Now is the clock of the duration hook; default time.Now.
	Now func() time.Time
}

// Client sends calls to WeChat. Its methods are safe for concurrent use.
type Client struct {
	base      *url.URL
	transport http.RoundTripper
	timeout   time.Duration
	gate      quota.Gate
	hooks     Hooks
	log       *slog.Logger
	now       func() time.Time
}

// New checks o and returns a Client.
func New(o Options) (*Client, error) {
	u, err := url.Parse(o.Base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("upstream: base %q is not an absolute http(s) URL", o.Base)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath, u.RawQuery, u.Fragment = "", "", ""
	c := &Client{base: u, transport: o.Transport, timeout: o.Timeout, gate: o.Gate, hooks: o.Hooks,
		log: o.Logger, now: o.Now}
	if c.transport == nil {
		c.transport = http.DefaultTransport
	}
	if c.timeout <= 0 {
		c.timeout = 10 * time.Second
	}
	if c.gate == nil {
		c.gate = quota.NoGate
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// Base is the upstream's base URL.
func (c *Client) Base() url.URL { return *c.base }

// TransportError is a failed exchange with WeChat: no answer at all.
type TransportError struct{ Err error }

func (e *TransportError) Error() string { return "upstream: " + e.Err.Error() }
func (e *TransportError) Unwrap() error { return e.Err }

// Send makes call with req as its template (method, headers, and the body
// when call.Body is nil; the query without any caller's access_token) and
// returns WeChat's answer, replayed once with a fresh token on 40001,
// 40014 or 42001 when the body is buffered. Closing the answer's body ends
// the call's timeout. Errors: a *quota.Refusal from the gate, a
// *TransportError, the token manager's error, or ctx's.
func (c *Client) Send(ctx context.Context, req *http.Request, call *Call) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	resp, err := c.sendWithToken(ctx, req, call)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

func (c *Client) sendWithToken(ctx context.Context, req *http.Request, call *Call) (*http.Response, error) {
	if call.Tokens == nil {
		resp, _, err := c.roundTrip(ctx, req, call, "", "")
		return resp, err
	}
	app := call.Tokens.AppID()
	tok, err := call.Tokens.Token(ctx)
	if err != nil {
		return nil, err
	}
	resp, code, err := c.roundTrip(ctx, req, call, app, tok.Value)
	if err != nil || call.Body == nil || !code.IsTokenError() {
		return resp, err
	}
	fresh, ferr := call.Tokens.Invalidate(ctx, tok.Value)
	if ferr != nil || fresh.Value == tok.Value {
		// No better token to try: the caller sees WeChat's own answer.
		c.log.Warn("token refresh after a token error failed", "app", app,
			"errcode", int(code), "error", token.RedactError(ferr))
		return resp, nil
	}
	resp.Body.Close()
	if c.hooks.Replayed != nil {
		c.hooks.Replayed(app)
	}
	resp, _, err = c.roundTrip(ctx, req, call, app, fresh.Value)
	return resp, err
}

// roundTrip makes exactly one request once the gate admits it, and reports
// its outcome; it returns the errcode of a small JSON answer (0 if none).
func (c *Client) roundTrip(ctx context.Context, req *http.Request, call *Call, app, tok string) (*http.Response, wechat.Errcode, error) {
	key := quota.Key{App: app, Endpoint: call.Endpoint}
	if call.Budget != nil {
		// First: a slot of the endpoint's taken and then refused by the
		// budget would be lost to every other caller.
		if err := call.Budget.Admit(ctx, key); err != nil {
			return nil, 0, err
		}
	}
	if err := c.gate.Admit(ctx, key); err != nil {
		return nil, 0, err
	}
	out := req.Clone(ctx)
	u := *c.base
	u.Path += call.Path
	if call.Tokens != nil {
		u.RawQuery = WithToken(req.URL.RawQuery, tok)
	} else {
		u.RawQuery = StripToken(req.URL.RawQuery)
	}
	out.URL, out.Host, out.RequestURI = &u, "", ""
	if call.Body != nil {
		out.Body = io.NopCloser(bytes.NewReader(call.Body))
		out.ContentLength = int64(len(call.Body))
		if len(call.Body) == 0 {
			out.Body = http.NoBody
		}
	}
	resp, code, err := c.exchange(out, call.Endpoint, call.Image)
	if code != 0 {
		c.gate.Observe(ctx, key, code)
	}
	return resp, code, err
}

// exchange sends out and reports its outcome (for an image call, all but a
// 200 without an errcode).
func (c *Client) exchange(out *http.Request, endpoint string, image bool) (*http.Response, wechat.Errcode, error) {
	start := c.now()
	resp, err := c.transport.RoundTrip(out)
	if c.hooks.Duration != nil {
		c.hooks.Duration(endpoint, c.now().Sub(start))
	}
	if err != nil {
		if neterr.IsTimeout(err) {
			c.report(endpoint, Timeout)
		} else {
			c.report(endpoint, HTTPError)
		}
		return nil, 0, &TransportError{err}
	}
	if resp.StatusCode != http.StatusOK {
		c.report(endpoint, HTTPError)
		return resp, 0, nil
	}
	code := peekErrcode(resp)
	switch {
	case code != 0:
		c.report(endpoint, Errcode)
		if c.hooks.Errcode != nil {
			c.hooks.Errcode(endpoint, code)
		}
	case !image:
		c.report(endpoint, OK)
	}
	return resp, code, nil
}

// Report records an image call's outcome once its caller judged the answer:
// OK for a whole image, BrokenImage otherwise.
func (c *Client) Report(endpoint string, o Outcome) { c.report(endpoint, o) }

func (c *Client) report(endpoint string, o Outcome) {
	if c.hooks.Outcome != nil {
		c.hooks.Outcome(endpoint, o)
	}
}

// Transport is the RoundTripper token managers fetch through: each request
// is reported like any other call to WeChat, under its path's endpoint name,
// and goes to the base URL's host whatever host it names. It neither
// carries a managed token nor asks the gate (token fetches back off on
// their own).
func (c *Client) Transport() http.RoundTripper { return tokenTransport{c} }

type tokenTransport struct{ c *Client }

func (t tokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.Clone(req.Context())
	u := *out.URL
	u.Scheme, u.Host = t.c.base.Scheme, t.c.base.Host
	out.URL, out.Host = &u, ""
	endpoint := wechat.Endpoint(strings.TrimPrefix(u.Path, t.c.base.Path))
	resp, _, err := t.c.exchange(out, endpoint, false)
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// maxErrcodePeek bounds how much of an answer is read to look for an
// errcode: WeChat's errcode answers are far smaller, and a larger body is
// never one.
const maxErrcodePeek = 4 << 10

// peekErrcode returns the errcode of a small JSON answer (0 when there is
// none) and leaves resp.Body readable from the start.
func peekErrcode(resp *http.Response) wechat.Errcode {
	if resp.ContentLength > maxErrcodePeek {
		return 0
	}
	head, err := io.ReadAll(io.LimitReader(resp.Body, maxErrcodePeek+1))
	resp.Body = readCloser{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	if err != nil || len(head) > maxErrcodePeek {
		return 0
	}
	code, _ := ErrcodeOf(head)
	return code
}

// ErrcodeOf returns the errcode and errmsg of a WeChat JSON answer; 0 and
// "" when body is not one.
func ErrcodeOf(body []byte) (wechat.Errcode, string) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return 0, ""
	}
	var e struct {
		Errcode wechat.Errcode `json:"errcode"`
		Errmsg  string         `json:"errmsg"`
	}
	if json.Unmarshal(body, &e) != nil {
		return 0, ""
	}
	return e.Errcode, e.Errmsg
}

type readCloser struct {
	io.Reader
	io.Closer
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
