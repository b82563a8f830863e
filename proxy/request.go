package proxy

import (
	"io"
	"iter"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// What the API port refuses before anything is matched or forwarded.

var (
	errMethodNotAllowed = &wechatError{Status: http.StatusMethodNotAllowed, Errcode: errcodeNeedPOST,
		Errmsg: "require GET or POST method: wxa-sidecar forwards only GET, HEAD and POST"}
	errInvalidURL = &wechatError{Status: http.StatusBadRequest, Errcode: errcodeInvalidURL,
		Errmsg: `invalid url: the path carries ";", "\" or an encoded ".", "/" or "\" (wxa-sidecar)`}
	errBodyReadTimeout = &wechatError{Status: http.StatusRequestTimeout, Errcode: errcodeSystem,
		Errmsg: "system error: request body did not arrive within wxa-sidecar BODY_READ_TIMEOUT"}
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

// tokenParam is the query parameter WeChat reads the token from.
const tokenParam = "access_token"

// queryParts yields each part of rawQuery with the separator before it (0
// for the first). Both '&' and ';' separate, as they do for some servers,
// so a token hidden behind a ';' is found too.
func queryParts(rawQuery string) iter.Seq2[byte, string] {
	return func(yield func(byte, string) bool) {
		var sep byte
		for {
			i := strings.IndexAny(rawQuery, "&;")
			if i < 0 {
				yield(sep, rawQuery)
				return
			}
			if !yield(sep, rawQuery[:i]) {
				return
			}
			sep, rawQuery = rawQuery[i], rawQuery[i+1:]
		}
	}
}

// namesToken reports whether a query part's key is access_token once
// decoded: WeChat decodes keys, so access%5Ftoken and access_%74oken are
// the same parameter. Decoding is lenient, as a lenient server's would be
// (a valid %XX decoded, '+' a space, any other byte as is), and exact:
// Access_Token is another name.
func namesToken(part string) bool {
	key, _, _ := strings.Cut(part, "=")
	if !strings.ContainsAny(key, "%+") {
		return key == tokenParam
	}
	n := 0
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c == '%' && i+2 < len(key) && ishex(key[i+1]) && ishex(key[i+2]):
			c = unhex(key[i+1])<<4 | unhex(key[i+2])
			i += 2
		case c == '+':
			c = ' '
		}
		if n == len(tokenParam) || tokenParam[n] != c {
			return false
		}
		n++
	}
	return n == len(tokenParam)
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// withoutToken returns rawQuery without any access_token part, however
// spelled, and otherwise byte for byte: order, empty parts, ';' and
// escaping as the caller sent them (signed requests depend on it).
func withoutToken(rawQuery string) string {
	// Without a '%' the key can only be spelled literally.
	if !strings.Contains(rawQuery, tokenParam) && !strings.Contains(rawQuery, "%") {
		return rawQuery
	}
	var b strings.Builder
	b.Grow(len(rawQuery))
	wrote := false
	for sep, part := range queryParts(rawQuery) {
		if namesToken(part) {
			continue
		}
		if wrote {
			b.WriteByte(sep)
		}
		b.WriteString(part)
		wrote = true
	}
	return b.String()
}

// withToken returns rawQuery with every access_token of the caller's
// removed and tok appended, so WeChat sees exactly one token, ours.
func withToken(rawQuery, tok string) string {
	rest := withoutToken(rawQuery)
	if rest == "" {
		return tokenParam + "=" + tok
	}
	return rest + "&" + tokenParam + "=" + tok
}

// callerTokens yields the decoded values of the access_token parts of
// rawQuery, found as withoutToken finds them, so the token that picks the
// app is one of those that will be removed.
func callerTokens(rawQuery string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for _, part := range queryParts(rawQuery) {
			if !namesToken(part) {
				continue
			}
			_, value, _ := strings.Cut(part, "=")
			if v, err := url.QueryUnescape(value); err == nil && v != "" && !yield(v) {
				return
			}
		}
	}
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
