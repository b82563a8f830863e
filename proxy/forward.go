package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"

	"github.com/wxa-sidecar/wxa-sidecar/metrics"
	"github.com/wxa-sidecar/wxa-sidecar/token"
)

// call is one backend request on its way upstream.
type call struct {
	app      *app   // nil for /sns/*: no token
	path     string // the WeChat path, without any /apps/{appid} prefix
	endpoint string // path if known, else "other": the bounded label and limiter key
	// body is the buffered request body, replayed on a token error; nil
	// when the body streams through (multipart uploads).
	body []byte
}

// callKey carries a relayed call's *call; uploadKey its *upload, when
// the body streams through. (The upload is not a field of call: every
// request, cache hits included, allocates a call, and one more field
// would move it to a larger size class.)
type (
	callKey   struct{}
	uploadKey struct{}
)

// forward sends r upstream through the reverse proxy, buffering the body
// so a token error can be replayed, except for multipart uploads, which
// stream through unbuffered and are never replayed.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, c *call) {
	if isMultipart(r.Header.Get("Content-Type")) {
		if r.ContentLength > p.maxUpload {
			writeError(w, errUploadTooLarge)
			return
		}
		u := &upload{ReadCloser: http.MaxBytesReader(w, r.Body, p.maxUpload)}
		// Lifted by net/http at the upload's last byte, as in readBody.
		// Without a body its background read runs already: no deadline.
		if r.ContentLength != 0 {
			u.deadline = setReadDeadline(w, p.bodyTimeout)
		}
		r.Body = u
		p.relay(w, r.WithContext(context.WithValue(r.Context(), uploadKey{}, u)), c)
		return
	}
	body, err := p.readBody(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	p.proxyBuffered(w, r, c, body)
}

// proxyBuffered sends r upstream with its already-read body, which the
// transport replays on a token error.
func (p *Proxy) proxyBuffered(w http.ResponseWriter, r *http.Request, c *call, body []byte) {
	c.body = body
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	p.relay(w, r, c)
}

// relay sends r upstream through the reverse proxy, WeChat's answer
// reaching the caller as it came.
func (p *Proxy) relay(w http.ResponseWriter, r *http.Request, c *call) {
	p.reverseProxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callKey{}, c)))
}

// readBody buffers the request body up to MaxBodyBytes. The whole body
// must arrive within BodyReadTimeout, and the memory it holds is what
// arrived, not what Content-Length claims.
func (p *Proxy) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	n := r.ContentLength
	if n > p.maxBody {
		return nil, errBodyTooLarge
	}
	if n == 0 {
		// No body: net/http reads the connection in the background
		// already, and a deadline would end that read and the request.
		return []byte{}, nil
	}
	// net/http lifts the deadline itself when the body reads to its end
	// (it then reads on in the background, which must not fail at the
	// deadline and cancel the request while WeChat answers). After a
	// failed read it stays, so the server's discard of the rest of the
	// body, once answered, is bounded too.
	setReadDeadline(w, p.bodyTimeout)
	var body []byte
	var err error
	switch {
	case n > 0 && n <= exactBodyRead:
		// One allocation of the right size: the common, small body.
		body = make([]byte, n)
		_, err = io.ReadFull(r.Body, body)
	case n > 0:
		body, err = readDeclared(r.Body, n)
	default:
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, p.maxBody))
	}
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return nil, errBodyTooLarge
		case isTimeout(err):
			return nil, markBodyTimeout(w)
		}
		return nil, &wechatError{Status: http.StatusBadRequest, Errcode: errcodeDataFormat,
			Errmsg: "data format error: cannot read request body"}
	}
	return body, nil
}

func isMultipart(contentType string) bool {
	mt, _, _ := mime.ParseMediaType(contentType)
	return strings.HasPrefix(mt, "multipart/")
}

// rewrite points the outbound request at the upstream, whatever host or
// absolute URL the caller named. The token is injected by the transport,
// because a replay needs a fresh one.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	c := pr.In.Context().Value(callKey{}).(*call)
	pr.Out.URL.Path = c.path
	pr.Out.URL.RawPath = ""
	// ReverseProxy has re-encoded a query it could not parse (dropping
	// every part with a ';'): WeChat gets the caller's bytes instead, less
	// any access_token of the caller's.
	pr.Out.URL.RawQuery = withoutToken(pr.In.URL.RawQuery)
	pr.SetURL(p.upstream)
}

func (p *Proxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if u, _ := r.Context().Value(uploadKey{}).(*upload); u.timedOut() {
		writeError(w, markBodyTimeout(w))
		return
	}
	we := writeError(w, err)
	if r.Context().Err() != nil {
		// The caller hung up, or the shutdown drain answered it: not
		// WeChat's failure.
		p.log.Info("request cancelled before WeChat answered", "path", r.URL.Path,
			"error", token.RedactError(err).Error())
		return
	}
	if we.Status != http.StatusOK {
		p.log.Warn("upstream call failed", "path", r.URL.Path, "status", we.Status,
			"error", token.RedactError(err).Error())
	}
}

// upstreamTransport injects the managed token into every call that needs
// one and replays a buffered call once when WeChat says the token is dead.
type upstreamTransport struct{ p *Proxy }

func (t upstreamTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c, _ := req.Context().Value(callKey{}).(*call)
	if c == nil {
		return nil, errors.New("proxy: request without call")
	}
	return t.p.sendCall(req.Context(), req, c, true)
}

// send makes c's upstream call for the image path, which counts an
// image's outcome itself (see sendCall).
func (p *Proxy) send(ctx context.Context, req *http.Request, c *call) (*http.Response, error) {
	return p.sendCall(ctx, req, c, false)
}

// sendCall makes c's upstream call with req as the template, replaying it
// once with a fresh token on 40001/40014/42001. The response body, when
// there is one, cancels the call's timeout when closed. relayed: WeChat's
// answer goes back to the caller as it came, through the reverse proxy, so
// a 200 without an errcode counts as ok here; an image fetch is not
// relayed, as it alone can tell a whole image from a broken one.
func (p *Proxy) sendCall(ctx context.Context, req *http.Request, c *call, relayed bool) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	resp, err := p.sendWithToken(ctx, req, c, relayed)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

func (p *Proxy) sendWithToken(ctx context.Context, req *http.Request, c *call, relayed bool) (*http.Response, error) {
	if c.app == nil {
		resp, _, err := p.roundTrip(ctx, req, c, "", relayed)
		return resp, err
	}
	tok, err := c.app.tokens.Token(ctx)
	if err != nil {
		return nil, err
	}
	resp, errcode, err := p.roundTrip(ctx, req, c, tok.Value, relayed)
	if err != nil || c.body == nil || !isTokenErrcode(errcode) {
		return resp, err
	}
	fresh, ferr := c.app.tokens.Invalidate(ctx, tok.Value)
	if ferr != nil || fresh.Value == tok.Value {
		// No better token to try: the caller sees WeChat's own answer.
		p.log.Warn("token refresh after a token error failed", "app", c.app.id,
			"errcode", errcode, "error", token.RedactError(ferr))
		return resp, nil
	}
	resp.Body.Close()
	p.metrics.TokenReplays.WithLabelValues(c.app.id).Inc()
	resp, _, err = p.roundTrip(ctx, req, c, fresh.Value, relayed)
	return resp, err
}

// roundTrip makes exactly one upstream request — req's method and headers,
// c's buffered body (or req's streamed one), tok in the query — once the
// limiter grants a slot. It returns the errcode of a small JSON answer (0
// if none) and records the call's metrics; the outcome of a call that is
// not relayed, an image's, is left to the image path.
func (p *Proxy) roundTrip(ctx context.Context, req *http.Request, c *call, tok string, relayed bool) (*http.Response, int, error) {
	var appID string
	if c.app != nil {
		appID = c.app.id
	}
	if err := p.limits.admit(ctx, appID, c.endpoint); err != nil {
		return nil, 0, err
	}
	out := req.Clone(ctx)
	if c.body != nil {
		out.Body = io.NopCloser(bytes.NewReader(c.body))
		out.ContentLength = int64(len(c.body))
		if len(c.body) == 0 {
			out.Body = http.NoBody
		}
	}
	if c.app != nil {
		out.URL.RawQuery = withToken(req.URL.RawQuery, tok)
	}
	start := p.now()
	resp, err := p.transport.RoundTrip(out)
	p.metrics.UpstreamDuration.WithLabelValues(c.endpoint).Observe(p.now().Sub(start).Seconds())
	outcome := func(o string) { p.metrics.UpstreamRequests.WithLabelValues(c.endpoint, o).Inc() }
	if err != nil {
		if isTimeout(err) {
			outcome("timeout")
		} else {
			outcome("http_error")
		}
		return nil, 0, &transportError{err}
	}
	if resp.StatusCode != http.StatusOK {
		outcome("http_error")
		return resp, 0, nil
	}
	errcode := peekErrcode(resp)
	if errcode != 0 {
		outcome("errcode")
		p.metrics.UpstreamErrcodes.WithLabelValues(c.endpoint, metrics.ErrcodeLabel(errcode)).Inc()
		p.limits.observe(appID, c.endpoint, errcode)
	} else if relayed {
		outcome("ok")
	}
	return resp, errcode, nil
}

// transportError is a failed exchange with WeChat: no answer at all.
type transportError struct{ err error }

func (e *transportError) Error() string { return "proxy: upstream: " + e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// maxErrcodePeek bounds how much of a response is read to look for a token
// error: WeChat's errcode answers are far smaller, and a larger body is
// never one.
const maxErrcodePeek = 4 << 10

// peekErrcode returns the errcode of a small JSON answer (0 when there is
// none) and leaves resp.Body readable from the start.
func peekErrcode(resp *http.Response) int {
	if resp.ContentLength > maxErrcodePeek {
		return 0
	}
	head, err := io.ReadAll(io.LimitReader(resp.Body, maxErrcodePeek+1))
	resp.Body = readCloser{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	if err != nil || len(head) > maxErrcodePeek {
		return 0
	}
	return errcodeOf(head)
}

// errcodeOf returns the errcode of a WeChat JSON answer, 0 if there is none.
func errcodeOf(body []byte) int {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return 0
	}
	var e struct {
		Errcode int `json:"errcode"`
	}
	if json.Unmarshal(body, &e) != nil {
		return 0
	}
	return e.Errcode
}

// errmsgOf returns the errmsg of a WeChat JSON answer.
func errmsgOf(body []byte) string {
	var e struct {
		Errmsg string `json:"errmsg"`
	}
	json.Unmarshal(body, &e)
	return e.Errmsg
}

// isTokenErrcode reports the codes that mean "fresh token, replay once".
func isTokenErrcode(code int) bool {
	return code == 40001 || code == 40014 || code == 42001
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
