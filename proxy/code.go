package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/token"
	"github.com/wxa-sidecar/wxa-sidecar/upstream"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"github.com/wxa-sidecar/wxa-sidecar/wxacode"
)

// Cache-Status values (RFC 9211), exactly one per image response.
const (
	cacheStatusHit       = "wxa-sidecar; hit"
	cacheStatusStored    = "wxa-sidecar; fwd=uri-miss; stored"
	cacheStatusCollapsed = "wxa-sidecar; fwd=uri-miss; collapsed"
	cacheStatusMiss      = "wxa-sidecar; fwd=uri-miss"
	cacheStatusBypass    = "wxa-sidecar; fwd=bypass"
	// The shared tier's: found there by this request's flight, or by a
	// flight that waited for another replica's.
	cacheStatusSharedHit       = "wxa-sidecar; hit; detail=shared"
	cacheStatusCollapsedShared = "wxa-sidecar; fwd=uri-miss; collapsed; detail=shared"
	// The durable store's: found there by this request's flight.
	cacheStatusStoreHit = "wxa-sidecar; hit; detail=store"
)

// cacheStatusHeader holds each Cache-Status value as a header value, built
// once and shared.
var cacheStatusHeader = map[string][]string{
	cacheStatusHit:       {cacheStatusHit},
	cacheStatusStored:    {cacheStatusStored},
	cacheStatusCollapsed: {cacheStatusCollapsed},
	cacheStatusMiss:      {cacheStatusMiss},

	cacheStatusSharedHit:       {cacheStatusSharedHit},
	cacheStatusCollapsedShared: {cacheStatusCollapsedShared},

	cacheStatusStoreHit: {cacheStatusStoreHit},
}

// cacheStatusOf is the Cache-Status of each way codes got an image.
var cacheStatusOf = [...]string{
	codes.Hit:             cacheStatusHit,
	codes.SharedHit:       cacheStatusSharedHit,
	codes.Miss:            cacheStatusMiss,
	codes.Stored:          cacheStatusStored,
	codes.Collapsed:       cacheStatusCollapsed,
	codes.CollapsedShared: cacheStatusCollapsedShared,
	codes.StoreHit:        cacheStatusStoreHit,
}

// serveCode answers a POST to one of the code-image endpoints: validated
// locally, then from the cache, else by one upstream call shared by every
// identical request in flight.
func (p *Proxy) serveCode(w http.ResponseWriter, r *http.Request, c *call) {
	body, err := p.readBody(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	onlyCached := onlyIfCached(r.Header)
	if r.Header.Get("Wechatmp-Signature") != "" {
		if onlyCached {
			// Never cached, so never in the cache.
			writeError(w, errNotCached)
			return
		}
		// A signed body is encrypted: it cannot be keyed by its parameters
		// and must reach WeChat byte for byte.
		w.Header().Set("Cache-Status", cacheStatusBypass)
		// WeChat's answer as it came, but an image still leaves as one.
		w.Header()["X-Content-Type-Options"] = nosniffHeader
		p.proxyBuffered(w, r, c, body)
		return
	}
	c.header = r.Header
	key, ok := p.aliases.get(c.app.id, c.path, body)
	if !ok {
		canonical, err := wxacode.Canonical(c.path, body)
		if err != nil {
			writeError(w, err)
			return
		}
		key = cache.Key(wxacode.KeyOf(c.app.id, c.path, canonical))
		p.aliases.put(c.app.id, c.path, body, key)
	}
	c.body = body
	var res codes.Result
	if onlyCached {
		var found bool
		if res, found = p.codes.Lookup(r.Context(), key, codes.Request{App: c.app.id, Endpoint: c.endpoint}); !found {
			writeError(w, errNotCached)
			return
		}
	} else if res, err = p.getCode(r.Context(), key, codes.Request{App: c.app.id, Endpoint: c.endpoint}, c, true); err != nil {
		writeError(w, err)
		return
	}
	// POSTs ignore conditional headers: SDKs never send them, and RFC 9110
	// would demand 412 rather than 304.
	writeImage(w, res, false, nil)
}

// nosniffHeader is X-Content-Type-Options' value on every image, shared.
var nosniffHeader = []string{"nosniff"}

// errNotCached answers a request with Cache-Control: only-if-cached whose
// image is in neither tier: RFC 9111 (5.2.1.7) says 504, and nothing is
// asked of WeChat. -1 because no errcode of WeChat's means "not cached",
// and SDKs already read -1 as "try again later".
var errNotCached = &wechat.Error{Status: http.StatusGatewayTimeout, Code: wechat.SystemBusy,
	Msg: "system error: not cached, and Cache-Control: only-if-cached forbids asking WeChat (wxa-sidecar)"}

// onlyIfCached reports whether h's Cache-Control carries only-if-cached
// (RFC 9111 5.2.1.7): answer from the cache or not at all. Directive names
// are case-insensitive and may come in several header lines.
func onlyIfCached(h http.Header) bool {
	for _, line := range h.Values("Cache-Control") {
		for directive := range strings.SplitSeq(line, ",") {
			name, _, _ := strings.Cut(directive, "=")
			if strings.EqualFold(strings.TrimSpace(name), "only-if-cached") {
				return true
			}
		}
	}
	return false
}

// aliasTable remembers which canonical key a valid raw body stands for, so
// a body seen before, byte for byte, is neither parsed nor hashed again: the
// common case of a page asking for the same code. Bodies are compared in
// full and the key is a pure function of them, so an entry is never wrong;
// the table starts over when it holds maxBytes, so it stays bounded.
type aliasTable struct {
	mu       sync.RWMutex
	m        map[aliasScope]map[string]cache.Key
	bytes    int
	maxBytes int
}

type aliasScope struct{ app, endpoint string }

const (
	// maxAliasBody: a code request weighs about a hundred bytes; a larger
	// one is canonicalized every time rather than held.
	maxAliasBody = 1 << 10
	// aliasOverhead approximates what an entry costs beyond its body.
	aliasOverhead = 96
)

func newAliasTable(maxBytes int) *aliasTable {
	return &aliasTable{m: make(map[aliasScope]map[string]cache.Key), maxBytes: maxBytes}
}

func (t *aliasTable) get(app, endpoint string, body []byte) (cache.Key, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	k, ok := t.m[aliasScope{app, endpoint}][string(body)]
	return k, ok
}

func (t *aliasTable) put(app, endpoint string, body []byte, canonical cache.Key) {
	if len(body) > maxAliasBody {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.bytes+len(body)+aliasOverhead > t.maxBytes {
		clear(t.m)
		t.bytes = 0
	}
	scope := aliasScope{app, endpoint}
	bodies := t.m[scope]
	if bodies == nil {
		bodies = make(map[string]cache.Key)
		t.m[scope] = bodies
	}
	if _, ok := bodies[string(body)]; !ok {
		t.bytes += len(body) + aliasOverhead
		bodies[string(body)] = canonical
	}
}

// Fetch makes c's upstream call for a code image, for codes: WeChat's
// answer as an image to judge, or why there is none, with the failures
// worth a retry wrapped in codes.ErrTransient.
func (c *call) Fetch(ctx context.Context) (*codes.Image, error) { return c.fetchImage(ctx, nil) }

// fetchImage is Fetch with budget (nil: none) as the upstream.Call's
// Budget: GET /qrcode on QRCODE_ADDR spends the public share.
func (c *call) fetchImage(ctx context.Context, budget quota.Gate) (*codes.Image, error) {
	base := c.app.up.Base()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base.String(), nil)
	if err != nil {
		return nil, err
	}
	contentType := c.header.Get("Content-Type")
	if contentType == "" {
		contentType = "application/json"
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := c.app.up.Send(ctx, req, &upstream.Call{Tokens: c.app.tokens, Path: c.path, Endpoint: c.endpoint,
		Body: c.body, Image: true, Budget: budget})
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
	img, err := codes.ReadImage(resp.Body, resp.ContentLength)
	if err != nil {
		return nil, err
	}
	if bytes.HasPrefix(bytes.TrimSpace(img), []byte("{")) {
		// An errcode answer, whatever its Content-Type says.
		code, msg := upstream.ErrcodeOf(img)
		ans := &wechatAnswer{err: wechat.Errorf(code, msg), body: img}
		if code == wechat.SystemBusy {
			return nil, fmt.Errorf("%w: %w", codes.ErrTransient, ans)
		}
		return nil, ans
	}
	return &codes.Image{Body: img, ContentType: resp.Header.Get("Content-Type"),
		ContentDisposition: resp.Header.Get("Content-Disposition"), NumUsed: resp.Header.Get("Num-Used")}, nil
}

// codeFetchFailed logs a code fetch that failed for good: callers see 502,
// the log says why, without secrets. WeChat's own answers and local
// refusals are the callers' news, not the operator's.
func (p *Proxy) codeFetchFailed(r codes.Request, attempts int, err error) {
	if asWeChatError(err).Status != http.StatusOK {
		p.log.Warn("code fetch failed", "endpoint", r.Endpoint, "attempts", attempts,
			"error", token.RedactError(err).Error())
	}
}

// writeImage sends a cached or fetched image with WeChat's headers, and
// nosniff: a browser must take it as the image it is labelled, never sniff
// it into a page. contentType, when not nil, replaces the stored label.
func writeImage(w http.ResponseWriter, res codes.Result, headOnly bool, contentType []string) {
	h := w.Header()
	e := res.Entry
	// Shared, prebuilt values: a hit allocates no header.
	for k, v := range e.Header {
		h[k] = v
	}
	h["X-Content-Type-Options"] = nosniffHeader
	if contentType != nil {
		h["Content-Type"] = contentType
	}
	h["Cache-Status"] = cacheStatusHeader[cacheStatusOf[res.Status]]
	if res.NumUsed != "" {
		h.Set("Num-Used", res.NumUsed)
	}
	w.WriteHeader(http.StatusOK)
	if !headOnly {
		w.Write(e.Body)
	}
}
