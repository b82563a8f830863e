package proxy

import (
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// What the API port refuses before anything is matched or forwarded.

var (
	errMethodNotAllowed = &wechat.Error{Status: http.StatusMethodNotAllowed, Code: wechat.NeedPOST,
		Msg: "require GET or POST method: wxa-sidecar forwards only GET, HEAD and POST"}
	errInvalidURL = &wechat.Error{Status: http.StatusBadRequest, Code: wechat.InvalidURL,
		Msg: `invalid url: the path carries ";", "\" or an encoded ".", "/" or "\" (wxa-sidecar)`}
	errBodyReadTimeout = &wechat.Error{Status: http.StatusRequestTimeout, Code: wechat.SystemBusy,
		Msg: "system error: request body did not arrive within wxa-sidecar BODY_READ_TIMEOUT"}
)

// allowHeader is the Allow value of every 405, shared: WeChat's API uses
// no other method.
var allowHeader = []string{"GET, HEAD, POST"}

// refuseRequest answers, and reports, a request the API port never
// forwards: a method WeChat's API does not use (CONNECT would otherwise go
// out as "CONNECT /?access_token=<managed>") or a path that upstream
// servers and path matchers may read differently from us.
func refuseRequest(w http.ResponseWriter, r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodPost, http.MethodHead:
	default:
		w.Header()["Allow"] = allowHeader
		writeError(w, errMethodNotAllowed)
		return true
	}
	if ambiguousPath(r.URL) {
		writeError(w, errInvalidURL)
		return true
	}
	return false
}

// ambiguousPath reports a path carrying ';' or '\' (sent as is or
// encoded), or an encoded '.', '/' or '\': what some servers split on,
// treat as a separator or decode a second time, so ALLOWED_PATHS and
// cleanPath would judge one path and WeChat act on another. Literal ".",
// ".." and "//" are not refused: cleanPath resolves them first.
//
// u.Path is decoded, so ';' and '\' show there however they were sent;
// an encoded '.' or '/' shows only in u.RawPath, which net/url keeps
// whenever the path was not sent in its default encoding (and '.' and
// '/' are never encoded by default). A clean path costs one scan.
func ambiguousPath(u *url.URL) bool {
	for i := 0; i < len(u.Path); i++ {
		if c := u.Path[i]; c == ';' || c == '\\' {
			return true
		}
	}
	raw := u.RawPath
	for i := strings.IndexByte(raw, '%'); i >= 0 && i+2 < len(raw); i = strings.IndexByte(raw, '%') {
		switch raw[i+1 : i+3] {
		case "2e", "2E", "2f", "2F", "5c", "5C":
			return true
		}
		raw = raw[i+1:]
	}
	return false
}

// exactBodyRead is the largest declared body read into one buffer of
// exactly its length before a byte has arrived. Nearly every WeChat call
// is a JSON body under a few KB (a code request is about a hundred
// bytes), and one exact allocation is the cheapest read; above it, a body
// is held as it arrives, so a Content-Length that is never sent costs at
// most this much, about what the server's own buffers and goroutine cost
// every connection anyway.
const exactBodyRead = 16 << 10

// readDeclared reads a body that declared n bytes (n > exactBodyRead),
// growing its buffer only as bytes arrive: from exactBodyRead, doubling,
// never beyond n.
func readDeclared(body io.Reader, n int64) ([]byte, error) {
	buf := make([]byte, 0, exactBodyRead)
	for int64(len(buf)) < n {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, int(min(int64(cap(buf)), n-int64(len(buf)))))
		}
		m, err := body.Read(buf[len(buf):min(int64(cap(buf)), n)])
		buf = buf[:len(buf)+m]
		if err == io.EOF {
			if int64(len(buf)) < n {
				return nil, io.ErrUnexpectedEOF
			}
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// markBodyTimeout readies the answer to a body that did not arrive in
// time: the rest of it may still be on its way, so the connection cannot
// carry another request.
func markBodyTimeout(w http.ResponseWriter) error {
	w.Header().Set("Connection", "close")
	return errBodyReadTimeout
}

// setReadDeadline gives the rest of the request body timeout to arrive,
// as http.ResponseController.SetReadDeadline would, and returns the
// deadline (zero when the writer takes none: a test's or a recorder).
// Unlike the controller it builds no error value for such a writer, and
// reads the clock only when there is a deadline to set: the cache-hit
// benchmark measures the handler alone.
func setReadDeadline(w http.ResponseWriter, timeout time.Duration) time.Time {
	for {
		switch rw := w.(type) {
		case interface{ SetReadDeadline(time.Time) error }:
			deadline := time.Now().Add(timeout)
			if rw.SetReadDeadline(deadline) != nil {
				return time.Time{}
			}
			return deadline
		case interface{ Unwrap() http.ResponseWriter }:
			w = rw.Unwrap()
		default:
			return time.Time{}
		}
	}
}

// upload is a streamed request body with BodyReadTimeout to arrive.
type upload struct {
	io.ReadCloser
	deadline time.Time   // zero when the connection takes no deadline
	done     atomic.Bool // the last byte was read
}

func (u *upload) Read(p []byte) (int, error) {
	n, err := u.ReadCloser.Read(p)
	if err == io.EOF {
		u.done.Store(true)
	}
	return n, err
}

// timedOut reports an upload cut short by its deadline. It looks at the
// clock rather than at the read's error: the server cancels the request
// when the read fails, and the transport may report that cancellation
// before the read's own error reaches us.
func (u *upload) timedOut() bool {
	return u != nil && !u.deadline.IsZero() && !u.done.Load() && !time.Now().Before(u.deadline)
}
