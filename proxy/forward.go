package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/http/httputil"
	"strings"

	"github.com/wxa-sidecar/wxa-sidecar/internal/neterr"
	"github.com/wxa-sidecar/wxa-sidecar/token"
	"github.com/wxa-sidecar/wxa-sidecar/upstream"
)

// call is one backend request on its way upstream.
type call struct {
	app      *app   // nil for /sns/*: no token
	path     string // the WeChat path, without any /apps/{appid} prefix
	endpoint string // path if known, else "other": the bounded label and limiter key
	// body is the buffered request body, replayed on a token error; nil
	// when the body streams through (multipart uploads).
	body []byte
	// header is a code request's own, read only if it is fetched (its
	// Content-Type goes with the fetch): a hit never looks at it. Nothing
	// writes a request's header once its handler runs.
	header http.Header
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
		case neterr.IsTimeout(err):
			return nil, markBodyTimeout(w)
		}
		return nil, errUnreadableBody
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
	pr.Out.URL.RawQuery = upstream.StripToken(pr.In.URL.RawQuery)
	base := p.upstream.Base()
	pr.SetURL(&base)
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

// upstreamTransport sends the reverse proxy's requests through upstream,
// which injects the managed token and replays a buffered call once when
// WeChat says the token is dead.
type upstreamTransport struct{ p *Proxy }

func (t upstreamTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c, _ := req.Context().Value(callKey{}).(*call)
	if c == nil {
		return nil, errors.New("proxy: request without call")
	}
	uc := &upstream.Call{Path: c.path, Endpoint: c.endpoint, Body: c.body}
	if c.app != nil {
		uc.Tokens = c.app.tokens
	}
	ctx := req.Context()
	if t.p.scope != nil {
		ctx = t.p.scope(ctx)
	}
	return t.p.upstream.Send(ctx, req, uc)
}
