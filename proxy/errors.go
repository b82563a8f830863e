package proxy

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// The sidecar's own refusals, in WeChat's words, with the status the API
// port sends them with.
var (
	errUpstream = &wechat.Error{Status: http.StatusBadGateway, Code: wechat.SystemBusy,
		Msg: "system error: WeChat unreachable or failed (wxa-sidecar)"}
	errBodyTooLarge = &wechat.Error{Status: http.StatusRequestEntityTooLarge, Code: wechat.DataFormat,
		Msg: "data format error: request body too large (wxa-sidecar MAX_BODY_BYTES)"}
	errUploadTooLarge = &wechat.Error{Status: http.StatusRequestEntityTooLarge, Code: wechat.DataFormat,
		Msg: "data format error: upload too large (wxa-sidecar MAX_UPLOAD_BYTES)"}
	errPathNotAllowed = &wechat.Error{Status: http.StatusForbidden, Code: wechat.Unauthorized,
		Msg: "api unauthorized: path not in wxa-sidecar ALLOWED_PATHS"}
	errUnreadableBody = &wechat.Error{Status: http.StatusBadRequest, Code: wechat.DataFormat,
		Msg: "data format error: cannot read request body"}
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
func writeErrcode(w http.ResponseWriter, status int, code wechat.Errcode, errmsg string) {
	if status < 200 || status > 599 {
		// No answer of ours has another; net/http panics on some.
		status = http.StatusBadGateway
	}
	b := make([]byte, 0, 48+len(errmsg))
	b = append(b, `{"errcode":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"errmsg":`...)
	b = strconv.AppendQuote(b, errmsg)
	b = append(b, '}')
	writeJSON(w, status, b)
}

// wechatAnswer is WeChat's own errcode answer to a code request, passed on
// as WeChat sent it. It unwraps to its *wechat.Error, so every part reads
// the errcode the same way.
type wechatAnswer struct {
	err  *wechat.Error
	body []byte
}

func (e *wechatAnswer) Error() string { return e.err.Error() }
func (e *wechatAnswer) Unwrap() error { return e.err }

// asWeChatError is the one mapping of any error on a WeChat path to what
// the caller is told: a *wechat.Error as it is, with HTTP 200 when it has
// no status of its own (WeChat's errcode to a token fetch, a quota
// refusal with when to come back: WeChat's words, so SDKs handle them as
// they would from WeChat), everything else 502 errcode -1.
func asWeChatError(err error) *wechat.Error {
	var e *wechat.Error
	if errors.As(err, &e) {
		if e.Status == 0 {
			c := *e
			c.Status = http.StatusOK // WeChat's own answers come with 200
			return &c
		}
		return e
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errUploadTooLarge
	}
	return errUpstream
}

// writeError is the API port's renderer: err in WeChat's JSON, with
// Retry-After when waiting helps. It returns what it sent.
func writeError(w http.ResponseWriter, err error) *wechat.Error {
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
		return ans.err
	}
	we := asWeChatError(err)
	if we.RetryAfter > 0 {
		// A client that can pace itself need not guess when to come back.
		w.Header().Set("Retry-After", retryAfterSeconds(we.RetryAfter))
	}
	writeErrcode(w, we.Status, we.Code, we.Msg)
	return we
}

// retryAfterSeconds is a Retry-After value: whole seconds, rounded up, at
// least 1.
func retryAfterSeconds(d time.Duration) string {
	// Rounded up without adding to d, which may be near its maximum.
	s := int64(d / time.Second)
	if d%time.Second > 0 {
		s++
	}
	return strconv.FormatInt(max(s, 1), 10)
}
