package proxy

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"github.com/wxa-sidecar/wxa-sidecar/wxacode"
)

// serveQRCode answers GET /qrcode?scene=...&page=...: the same image and
// cache entry as POST /wxa/getwxacodeunlimit, with plain HTTP statuses a
// front end or an <img src> can use directly.
//
// On QRCODE_ADDR (public) a request that starts an upstream call spends
// the port's own limits (PublicOptions); on the API port, the API side's.
func (p *Proxy) serveQRCode(w http.ResponseWriter, r *http.Request, a *app, public bool) {
	q := r.URL.Query()
	if a == nil {
		if id := q.Get("app"); id != "" {
			a = p.apps[id]
		} else {
			a = p.only
		}
		if a == nil {
			writeErrcode(w, http.StatusBadRequest, wechat.InvalidAppID,
				"invalid appid: name a managed app with ?app= or /apps/{appid}/qrcode")
			return
		}
	}
	c, pc := p.qrcodeCall(a, r, public)
	body, canonical, err := wxacode.FromQuery(q)
	if err != nil {
		p.qrcodeError(w, c, err)
		return
	}
	c.body = body
	key := cache.Key(wxacode.KeyOf(a.id, wechat.PathUnlimited, canonical))
	var f codes.Fetcher = c
	if pc != nil {
		pc.key = key
		f = pc
	}
	var res codes.Result
	if onlyIfCached(r.Header) {
		var found bool
		if res, found = p.codes.Lookup(r.Context(), key, codes.Request{App: a.id, Endpoint: c.endpoint}); !found {
			writeErrcode(w, errNotCached.Status, errNotCached.Code, errNotCached.Msg)
			return
		}
	} else if res, err = p.getCode(r.Context(), key, codes.Request{App: a.id, Endpoint: c.endpoint}, f, !public); err != nil {
		p.qrcodeError(w, c, err)
		return
	}
	h := w.Header()
	h["Cache-Control"] = p.cacheControl
	if etagMatches(r.Header.Get("If-None-Match"), res.Entry.ETag) {
		h.Set("Etag", res.Entry.ETag)
		h["Cache-Status"] = cacheStatusHeader[cacheStatusOf[res.Status]]
		w.WriteHeader(http.StatusNotModified)
		return
	}
	// What browsers load: the label is the image's own, from its magic
	// bytes, whatever was stored beside it.
	contentType := imageTypeOf(res.Entry.Body)
	if contentType == nil {
		p.log.Error("an image to serve on GET /qrcode is neither a JPEG nor a PNG; refused", "app", a.id,
			"bytes", len(res.Entry.Body))
		writeErrcode(w, http.StatusBadGateway, wechat.SystemBusy, "system error: not an image (wxa-sidecar)")
		return
	}
	writeImage(w, res, r.Method == http.MethodHead, contentType)
}

// Content-Type values of GET /qrcode, shared.
var (
	contentTypeJPEG = []string{"image/jpeg"}
	contentTypePNG  = []string{"image/png"}
)

// imageTypeOf is the Content-Type body's magic bytes name, nil for neither
// a JPEG nor a PNG (codes accepts nothing else).
func imageTypeOf(body []byte) []string {
	switch {
	case bytes.HasPrefix(body, []byte{0xFF, 0xD8, 0xFF}):
		return contentTypeJPEG
	case bytes.HasPrefix(body, []byte{0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A}):
		return contentTypePNG
	}
	return nil
}

// qrcodeError is GET /qrcode's renderer: plain HTTP statuses a front end
// can act on, WeChat's errcode JSON as the body, and Retry-After whenever
// waiting helps.
func (p *Proxy) qrcodeError(w http.ResponseWriter, c *call, err error) {
	we := asWeChatError(err)
	status := http.StatusBadGateway
	retryAfter := we.RetryAfter
	switch we.Code {
	case wechat.InvalidScene, wechat.InvalidSceneLength, wechat.InvalidPage, wechat.InvalidArgs, wechat.DataFormat,
		wechat.ScancodeTime, wechat.InvalidAppID:
		status = http.StatusBadRequest
	case wechat.MinuteQuota, wechat.DailyQuota:
		status = http.StatusTooManyRequests
		if retryAfter == 0 {
			// WeChat's own answer has just started a cool-down: its end,
			// which may be midnight, is when to come back.
			retryAfter = time.Minute
			if left, ok := p.quota.CooldownLeft(quota.Key{App: c.app.id, Endpoint: c.endpoint}); ok {
				retryAfter = left
			}
		}
	case wechat.LifetimeQuota:
		// Refused for these parameters for good: no time helps.
		status, retryAfter = http.StatusTooManyRequests, 0
	}
	if retryAfter > 0 {
		w.Header().Set("Retry-After", retryAfterSeconds(retryAfter))
	}
	writeErrcode(w, status, we.Code, we.Msg)
}

// etagMatches implements If-None-Match's weak comparison (RFC 9110 13.1.2).
func etagMatches(header, etag string) bool {
	if header == "" {
		return false
	}
	for candidate := range strings.SplitSeq(header, ",") {
		candidate = strings.TrimSpace(candidate)
		if candidate == "*" || strings.TrimPrefix(candidate, "W/") == etag {
			return true
		}
	}
	return false
}

// QRCodeHandler serves only GET /qrcode and /apps/{appid}/qrcode: safe
// behind a Service or Ingress, unlike the token-injecting API port.
func (p *Proxy) QRCodeHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := p.now()
		if p.logsAccess(r) {
			rec := newAccessRecorder(w)
			counted := p.serveQRCodePort(rec, r)
			p.logAccess(listenerQRCode, r, rec, start)
			if counted {
				p.observeRequest(routeQRCode, rec.status, start)
			}
			return
		}
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		if p.serveQRCodePort(rec, r) {
			p.observeRequest(routeQRCode, rec.status, start)
		}
	})
}

// serveQRCodePort answers one request on the QRCODE_ADDR port and reports
// whether it was a /qrcode request, the only kind the metrics count.
func (p *Proxy) serveQRCodePort(w http.ResponseWriter, r *http.Request) bool {
	a, apiPath, err := p.appFromPrefix(r.URL.Path)
	if err != nil || apiPath != "/qrcode" || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		writeErrcode(w, http.StatusNotFound, wechat.InvalidURL, "invalid url: this port serves only GET /qrcode")
		return false
	}
	if rec, ok := w.(*accessRecorder); ok {
		rec.note(p, r, a, apiPath)
	}
	p.serveQRCode(w, r, a, true)
	return true
}

func maxAge(seconds int64) string { return "public, max-age=" + strconv.FormatInt(seconds, 10) }
