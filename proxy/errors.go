package proxy

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/wxa-sidecar/wxa-sidecar/token"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// wechatError is an answer the sidecar gives in WeChat's own words: an
// errcode and errmsg, sent with the HTTP status the WeChat paths use for
// that cause (200 for anything WeChat itself would say, 413, 403 or 502 for
// the sidecar's own refusals).
type wechatError struct {
	Status  int
	Errcode int
	Errmsg  string
}

func (e *wechatError) Error() string {
	return "proxy: errcode " + strconv.Itoa(e.Errcode) + ": " + e.Errmsg
}

// Errcodes the sidecar answers with itself.
const (
	errcodeSystem        = -1
	errcodeBadGrantType  = 40002
	errcodeInvalidAppID  = 40013
	errcodeInvalidSecret = 40125
	errcodeMissingToken  = 41001
	errcodeNeedPOST      = 43002
	errcodeDataFormat    = 47001
	errcodeUnauthorized  = 48001
	errcodeMinuteQuota   = 45011
	errcodeDailyQuota    = 45009
	errcodeLifetimeQuota = 45029
	errcodeInvalidURL    = int(wechat.InvalidURL)
)

var (
	errUpstream = &wechatError{Status: http.StatusBadGateway, Errcode: errcodeSystem,
		Errmsg: "system error: WeChat unreachable or failed (wxa-sidecar)"}
	errBodyTooLarge = &wechatError{Status: http.StatusRequestEntityTooLarge, Errcode: errcodeDataFormat,
		Errmsg: "data format error: request body too large (wxa-sidecar MAX_BODY_BYTES)"}
	errUploadTooLarge = &wechatError{Status: http.StatusRequestEntityTooLarge, Errcode: errcodeDataFormat,
		Errmsg: "data format error: upload too large (wxa-sidecar MAX_UPLOAD_BYTES)"}
	errPathNotAllowed = &wechatError{Status: http.StatusForbidden, Errcode: errcodeUnauthorized,
		Errmsg: "api unauthorized: path not in wxa-sidecar ALLOWED_PATHS"}
)

// jsonContentType is what WeChat labels its errcode answers with; SDKs tell
// an error from an image by it.
const jsonContentType = "application/json; encoding=utf-8"

// writeJSON sends a small JSON body the sidecar built itself.
func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", jsonContentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// writeErrcode answers with {"errcode":N,"errmsg":"..."}.
func writeErrcode(w http.ResponseWriter, status, errcode int, errmsg string) {
	b := make([]byte, 0, 48+len(errmsg))
	b = append(b, `{"errcode":`...)
	b = strconv.AppendInt(b, int64(errcode), 10)
	b = append(b, `,"errmsg":`...)
	b = strconv.AppendQuote(b, errmsg)
	b = append(b, '}')
	writeJSON(w, status, b)
}

// asWeChatError maps any error on a WeChat path to what the caller sees:
// WeChat-level errors with HTTP 200, everything else as 502 errcode -1.
func asWeChatError(err error) *wechatError {
	var we *wechatError
	if errors.As(err, &we) {
		return we
	}
	var e *wechat.Error
	if errors.As(err, &e) {
		status := e.Status
		if status == 0 {
			status = http.StatusOK // a literal without one: WeChat's own status
		}
		return &wechatError{Status: status, Errcode: int(e.Code), Errmsg: e.Msg}
	}
	var ans *wechatAnswer
	if errors.As(err, &ans) {
		return &wechatError{Status: http.StatusOK, Errcode: ans.errcode, Errmsg: errmsgOf(ans.body)}
	}
	var qe *quotaError
	if errors.As(err, &qe) {
		return &wechatError{Status: http.StatusOK, Errcode: qe.errcode, Errmsg: qe.msg}
	}
	var ae *token.APIError
	if errors.As(err, &ae) {
		// No token because fetching keeps failing with an errcode: WeChat's
		// own words, so SDKs handle it as they would from WeChat.
		return &wechatError{Status: http.StatusOK, Errcode: ae.Code, Errmsg: ae.Msg}
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errUploadTooLarge
	}
	return errUpstream
}

// writeError answers err on a WeChat path and returns what it sent.
func writeError(w http.ResponseWriter, err error) *wechatError {
	var ans *wechatAnswer
	if errors.As(err, &ans) {
		// WeChat's own words reach the caller as WeChat sent them, labelled
		// as WeChat labels them today whatever this answer said: SDKs tell
		// an error from an image by the label, and some save an error
		// labelled otherwise (text/plain, application/json:UTF-8, an image
		// type) as the image.
		w.Header().Set("Content-Type", jsonContentType)
		w.Header().Set("Content-Length", strconv.Itoa(len(ans.body)))
		w.WriteHeader(http.StatusOK)
		w.Write(ans.body)
		return &wechatError{Status: http.StatusOK, Errcode: ans.errcode}
	}
	var qe *quotaError
	if errors.As(err, &qe) {
		// A client that can pace itself need not guess when to come back.
		w.Header().Set("Retry-After", qe.retryAfterSeconds())
	}
	var e *wechat.Error
	if errors.As(err, &e) && e.RetryAfter > 0 {
		w.Header().Set("Retry-After", retryAfterSeconds(e.RetryAfter))
	}
	we := asWeChatError(err)
	writeErrcode(w, we.Status, we.Errcode, we.Errmsg)
	return we
}
