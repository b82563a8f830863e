package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/token"
	"github.com/wxa-sidecar/wxa-sidecar/upstream"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"github.com/wxa-sidecar/wxa-sidecar/wxacode"
)

// Defaults of the link path (LINK_EXPIRY_MARGIN, LINK_MAX_AGE).
const (
	// defaultLinkMargin: a link is handed out until this long before it
	// expires, so a caller has time to use it and clock skew between
	// WeChat and us cannot serve a dead one.
	defaultLinkMargin = 10 * time.Minute
	// defaultLinkMaxAge: a link of relative life (days after it is made)
	// is handed out for at most this long after it was made, so a caller
	// still gets about the life it asked for.
	defaultLinkMaxAge = 24 * time.Hour
)

// routeLink is the requests_total route of the link endpoints.
const routeLink = "link"

// linkFields names the link in each endpoint's success answer: an
// answer without it is no link, whatever its errcode says.
var linkFields = map[string]string{
	wechat.PathScheme:    "openlink",
	wechat.PathURLLink:   "url_link",
	wechat.PathShortLink: "link",
	wechat.PathNFCScheme: "openlink",
}

// maxLinkAnswer bounds WeChat's answer to a link request: a few hundred
// bytes in practice.
const maxLinkAnswer = 64 << 10

// errBrokenLink is a 200 answer to a link request that is neither an
// errcode nor a link.
var errBrokenLink = &wechat.Error{Status: http.StatusBadGateway, Code: wechat.SystemBusy,
	Msg: "system error: WeChat's answer carries no link (wxa-sidecar)"}

// serveLink answers a POST to one of the link endpoints: validated
// locally, then a kept link, else one upstream call shared by every
// identical request in flight (across the fleet with REDIS_URL), whose
// link is kept until shortly before it expires.
func (p *Proxy) serveLink(w http.ResponseWriter, r *http.Request, c *call) {
	body, err := p.readBody(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	onlyCached := onlyIfCached(r.Header)
	if r.Header.Get("Wechatmp-Signature") != "" {
		if onlyCached {
			writeError(w, errNotCached)
			return
		}
		// Encrypted: no key can be read from it, and WeChat must see it
		// byte for byte.
		w.Header().Set("Cache-Status", cacheStatusBypass)
		p.proxyBuffered(w, r, c, body)
		return
	}
	canonical, life, err := wxacode.LinkCanonical(c.path, body, p.now())
	if err != nil {
		writeError(w, err)
		return
	}
	key := cache.Key(wxacode.KeyOf(c.app.id, c.path, canonical))
	c.body, c.header = body, r.Header
	req := codes.LinkRequest{App: c.app.id, Endpoint: c.endpoint,
		Keep: func(made time.Time) (time.Time, bool) {
			return life.KeepUntil(made, p.linkMargin, p.linkMaxAge)
		},
		Capped: c.path == wechat.PathShortLink && life.Permanent}
	var res codes.Result
	switch {
	case onlyCached:
		var found bool
		if res, found = p.links.Lookup(r.Context(), key, req); !found {
			writeError(w, errNotCached)
			return
		}
	case wantsNewLink(r.Header):
		res, err = p.links.Refresh(r.Context(), key, req, &linkCall{call: c, query: r.URL.RawQuery})
	default:
		res, err = p.links.Get(r.Context(), key, req, &linkCall{call: c, query: r.URL.RawQuery})
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeLink(w, res)
}

// wantsNewLink reports whether h's Cache-Control carries no-cache (RFC 9111
// 5.2.1.4): a new link, whatever is kept.
func wantsNewLink(h http.Header) bool {
	for _, line := range h.Values("Cache-Control") {
		for directive := range strings.SplitSeq(line, ",") {
			name, _, _ := strings.Cut(directive, "=")
			if strings.EqualFold(strings.TrimSpace(name), "no-cache") {
				return true
			}
		}
	}
	return false
}

// writeLink sends a link as WeChat sent it, byte for byte.
func writeLink(w http.ResponseWriter, res codes.Result) {
	h := w.Header()
	e := res.Entry
	contentType := e.ContentType
	if contentType == "" {
		contentType = jsonContentType
	}
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(e.Body)))
	h["Cache-Status"] = cacheStatusHeader[cacheStatusOf[res.Status]]
	w.WriteHeader(http.StatusOK)
	w.Write(e.Body)
}

// linkCall is a link request on its way upstream: the call and the
// caller's query, which reaches WeChat as it came (less any token).
type linkCall struct {
	*call
	query string
}

// FetchLink makes the upstream call for a link, for codes.Links: WeChat's
// success answer as it came, or why there is none, the failures worth a
// retry wrapped in codes.ErrTransient.
func (c *linkCall) FetchLink(ctx context.Context) (*codes.LinkAnswer, error) {
	base := c.app.up.Base()
	base.RawQuery = c.query
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base.String(), nil)
	if err != nil {
		return nil, err
	}
	contentType := c.header.Get("Content-Type")
	if contentType == "" {
		contentType = "application/json"
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := c.app.up.Send(ctx, req, &upstream.Call{Tokens: c.app.tokens, Path: c.path, Endpoint: c.endpoint, Body: c.body})
	if err != nil {
		var te *upstream.TransportError
		if errors.As(err, &te) && !errors.Is(err, context.Canceled) {
			return nil, fmt.Errorf("%w: %w", codes.ErrTransient, err)
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		err := fmt.Errorf("proxy: WeChat answered HTTP %d", resp.StatusCode)
		if resp.StatusCode >= 500 {
			err = fmt.Errorf("%w: %w", codes.ErrTransient, err)
		}
		return nil, err
	}
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxLinkAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("%w: proxy: reading a link: %w", codes.ErrTransient, err)
	}
	if len(answer) > maxLinkAnswer {
		return nil, fmt.Errorf("%w: an answer over %d bytes", errBrokenLink, maxLinkAnswer)
	}
	if code, msg := upstream.ErrcodeOf(answer); code != 0 {
		ans := &wechatAnswer{err: wechat.Errorf(code, msg), body: answer}
		if code == wechat.SystemBusy {
			return nil, fmt.Errorf("%w: %w", codes.ErrTransient, ans)
		}
		return nil, ans
	}
	// Only a success that carries its link is kept and handed out.
	var fields map[string]json.RawMessage
	var link string
	if json.Unmarshal(bytes.TrimSpace(answer), &fields) != nil ||
		json.Unmarshal(fields[linkFields[c.path]], &link) != nil || link == "" {
		return nil, errBrokenLink
	}
	return &codes.LinkAnswer{Body: answer, ContentType: resp.Header.Get("Content-Type")}, nil
}

// linkFetchFailed logs a link fetch that failed for good with a 502, as
// codeFetchFailed does.
func (p *Proxy) linkFetchFailed(r codes.LinkRequest, attempts int, err error) {
	if asWeChatError(err).Status != http.StatusOK {
		p.log.Warn("link fetch failed", "endpoint", r.Endpoint, "attempts", attempts,
			"error", token.RedactError(err).Error())
	}
}

// LinkStats are the link lookups by endpoint, for /status.
func (p *Proxy) LinkStats() []codes.LinkStats { return p.links.Stats() }
