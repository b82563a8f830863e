package proxy

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// The listener values of the access log.
const (
	listenerAPI    = "api"
	listenerQRCode = "qrcode"
)

// errcodeWindow is how much of a JSON answer is kept to find its errcode:
// WeChat puts errcode first, and its error answers are a few dozen bytes.
const errcodeWindow = 512

// accessRecorder is the statusRecorder of a logged request: it also notes
// which app and endpoint the request was for and keeps the start of a JSON
// answer, to log its errcode. That start may hold a token or a session key
// (a token endpoint's answer, jscode2session's): only the errcode is ever
// read from it.
type accessRecorder struct {
	statusRecorder
	app      string // empty when no app is known
	endpoint string // empty until the path is known
	json     bool   // the answer looks like a JSON object
	looked   bool   // the first byte of the body was seen
	window   []byte
}

func newAccessRecorder(w http.ResponseWriter) *accessRecorder {
	return &accessRecorder{statusRecorder: statusRecorder{ResponseWriter: w, status: http.StatusOK}}
}

func (a *accessRecorder) Write(b []byte) (int, error) {
	if !a.looked && len(b) > 0 {
		a.looked = true
		a.json = bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("{")) &&
			!strings.HasPrefix(a.Header().Get("Content-Type"), "image/")
	}
	if a.json && len(a.window) < errcodeWindow {
		a.window = append(a.window, b[:min(len(b), errcodeWindow-len(a.window))]...)
	}
	return a.statusRecorder.Write(b)
}

// note records the app and endpoint a request on a WeChat path is for,
// chosen as serve and serveQRCode will choose them; prefixed is the app an
// /apps/{appid}/ prefix named, if any.
func (a *accessRecorder) note(p *Proxy, r *http.Request, prefixed *app, apiPath string) {
	a.endpoint = wechat.Endpoint(apiPath)
	chosen := prefixed
	switch {
	case apiPath == "/qrcode" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		a.endpoint = routeQRCode
		if chosen == nil {
			if id := r.URL.Query().Get("app"); id != "" {
				chosen = p.apps[id]
			} else {
				chosen = p.only
			}
		}
	case strings.HasPrefix(apiPath, "/sns/"):
		// No app: appid and secret authenticate these.
	case chosen != nil:
	case apiPath == wechat.PathToken:
		chosen = p.apps[r.URL.Query().Get("appid")]
	case apiPath == wechat.PathStableToken:
		// Its appid is in the body, not read here.
		chosen = p.only
	default:
		chosen, _ = p.appFromToken(r)
	}
	if chosen != nil {
		// A managed app's id, never a caller's word: the values are
		// bounded like the metrics' labels.
		a.app = chosen.id
	}
}

// logsAccess reports whether r gets an access log line: ACCESS_LOG on and
// the logger taking info lines.
func (p *Proxy) logsAccess(r *http.Request) bool {
	return p.accessLog && p.log.Enabled(r.Context(), slog.LevelInfo)
}

// logAccess writes r's access log line. The path is the request's, never
// its query (an access_token, a classic token call's secret) or body.
func (p *Proxy) logAccess(listener string, r *http.Request, rec *accessRecorder, start time.Time) {
	endpoint := rec.endpoint
	if endpoint == "" {
		// Refused before its path was parsed (a method, an ambiguous path,
		// an unknown app).
		endpoint = wechat.EndpointOther
	}
	attrs := make([]slog.Attr, 0, 9)
	attrs = append(attrs,
		slog.String("listener", listener),
		slog.String("method", clip(r.Method, 16)),
		slog.String("path", clip(r.URL.Path, 256)),
		slog.String("endpoint", endpoint),
		slog.Int("status", rec.status))
	if rec.json {
		code, _ := leadingErrcode(rec.window)
		attrs = append(attrs, slog.Int64("errcode", code))
	}
	if cs := rec.Header().Get("Cache-Status"); cs != "" {
		attrs = append(attrs, slog.String("cache_status", strings.TrimPrefix(cs, "wxa-sidecar; ")))
	}
	if rec.app != "" {
		attrs = append(attrs, slog.String("app", rec.app))
	}
	attrs = append(attrs, slog.String("duration", p.now().Sub(start).Round(time.Microsecond).String()))
	p.log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
}

// leadingErrcode reads the top-level errcode of a JSON object from the start of
// its text, which may be cut anywhere: false when it is not there.
func leadingErrcode(prefix []byte) (int64, bool) {
	dec := json.NewDecoder(bytes.NewReader(prefix))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return 0, false
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return 0, false
		}
		if key == "errcode" {
			var n json.Number
			if dec.Decode(&n) != nil {
				return 0, false
			}
			code, err := n.Int64()
			return code, err == nil
		}
		var skipped json.RawMessage
		if dec.Decode(&skipped) != nil {
			return 0, false
		}
	}
	return 0, false
}

// clip cuts a caller's string for a log line, so a huge path cannot bloat
// the log.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
