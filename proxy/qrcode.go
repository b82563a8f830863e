package proxy

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"github.com/wxa-sidecar/wxa-sidecar/wxacode"
)

// serveQRCode answers GET /qrcode?scene=...&page=...: the same image and
// cache entry as POST /wxa/getwxacodeunlimit, with plain HTTP statuses a
// front end or an <img src> can use directly.
func (p *Proxy) serveQRCode(w http.ResponseWriter, r *http.Request, a *app) {
	q := r.URL.Query()
	if a == nil {
		if id := q.Get("app"); id != "" {
			a = p.apps[id]
		} else {
			a = p.only
		}
		if a == nil {
			writeErrcode(w, http.StatusBadRequest, errcodeInvalidAppID,
				"invalid appid: name a managed app with ?app= or /apps/{appid}/qrcode")
			return
		}
	}
	c := &call{app: a, path: pathUnlimited, endpoint: pathUnlimited}
	body, canonical, err := wxacode.FromQuery(q)
	if err != nil {
		p.qrcodeError(w, c, err)
		return
	}
	res, err := p.code(r.Context(), c, cache.Key(wxacode.KeyOf(a.id, pathUnlimited, canonical)), body, "application/json")
	if err != nil {
		p.qrcodeError(w, c, err)
		return
	}
	h := w.Header()
	h["Cache-Control"] = p.cacheControl
	if etagMatches(r.Header.Get("If-None-Match"), res.entry.ETag) {
		h.Set("Etag", res.entry.ETag)
		h.Set("Cache-Status", res.cacheStatus)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	writeImage(w, res, r.Method == http.MethodHead)
}

// qrcodeError maps an error of c to GET /qrcode's plain statuses, with
// WeChat's errcode JSON as the body.
func (p *Proxy) qrcodeError(w http.ResponseWriter, c *call, err error) {
	var qe *quotaError
	if errors.As(err, &qe) {
		w.Header().Set("Retry-After", qe.retryAfterSeconds())
		writeErrcode(w, http.StatusTooManyRequests, qe.errcode, qe.msg)
		return
	}
	errcode, errmsg := 0, ""
	var ans *wechatAnswer
	switch {
	case errors.As(err, &ans):
		errcode, errmsg = ans.errcode, errmsgOf(ans.body)
	default:
		we := asWeChatError(err)
		errcode, errmsg = we.Errcode, we.Errmsg
	}
	status := http.StatusBadGateway
	switch wechat.Errcode(errcode) {
	case wechat.InvalidScene, wechat.InvalidSceneLength, wechat.InvalidPage, wechat.InvalidArgs, wechat.DataFormat,
		wechat.ScancodeTime, wechat.InvalidAppID:
		status = http.StatusBadRequest
	case wechat.MinuteQuota, wechat.DailyQuota:
		status = http.StatusTooManyRequests
		// WeChat's own answer has just started a cool-down (limits.observe):
		// its end, which may be midnight, is when to come back.
		retry := time.Minute
		if left, ok := p.limits.cooldownLeft(c.app.id, c.endpoint); ok {
			retry = left
		}
		w.Header().Set("Retry-After", retryAfterSeconds(retry))
	case wechat.LifetimeQuota:
		// Refused for these parameters for good: no time helps.
		status = http.StatusTooManyRequests
	}
	writeErrcode(w, status, errcode, errmsg)
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
		a, apiPath, err := p.appFromPrefix(r.URL.Path)
		if err != nil || apiPath != "/qrcode" || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			writeErrcode(w, http.StatusNotFound, errcodeInvalidURL, "invalid url: this port serves only GET /qrcode")
			return
		}
		start := p.now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		p.serveQRCode(rec, r, a)
		p.observeRequest(routeQRCode, rec.status, start)
	})
}

func maxAge(seconds int64) string { return "public, max-age=" + strconv.FormatInt(seconds, 10) }
