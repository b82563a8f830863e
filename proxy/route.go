package proxy

import (
	"fmt"
	"net/http"
	"path"
	"strings"

	"github.com/wxa-sidecar/wxa-sidecar/upstream"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// Routes, the bounded values of the metrics' route label.
const (
	routeWxacode     = "wxacode"
	routeQRCode      = "qrcode"
	routeToken       = "token"
	routePassthrough = "passthrough"
)

// serve answers r and returns its route for the metrics.
func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) string {
	if refuseRequest(w, r) {
		return routePassthrough
	}
	a, apiPath, err := p.appFromPrefix(r.URL.Path)
	if err != nil {
		writeError(w, err)
		return routePassthrough
	}
	if rec, ok := w.(*accessRecorder); ok {
		rec.note(p, r, a, apiPath)
	}
	if !p.pathAllowed(apiPath) {
		// Every path of this port, /qrcode included: ALLOWED_PATHS is
		// what the port serves.
		writeError(w, errPathNotAllowed)
		return routePassthrough
	}
	if apiPath == "/qrcode" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		p.serveQRCode(w, r, a, false)
		return routeQRCode
	}
	switch {
	case apiPath == PathLimits:
		p.serveLimits(w, r, a)
		return routePassthrough
	case apiPath == wechat.PathToken || apiPath == wechat.PathStableToken:
		p.serveToken(w, r, a, apiPath)
		return routeToken
	case strings.HasPrefix(apiPath, "/sns/"):
		// appid/secret authenticate these; no token, no app, nothing touched.
		p.forward(w, r, &call{path: apiPath, endpoint: wechat.Endpoint(apiPath)})
		return routePassthrough
	}
	if a == nil {
		if a, err = p.appFromToken(r); err != nil {
			writeError(w, err)
			return routePassthrough
		}
	}
	c := &call{app: a, path: apiPath, endpoint: wechat.Endpoint(apiPath)}
	if wechat.IsCodeEndpoint(apiPath) && r.Method == http.MethodPost {
		p.serveCode(w, r, c)
		return routeWxacode
	}
	if wechat.IsLinkEndpoint(apiPath) && r.Method == http.MethodPost {
		p.serveLink(w, r, c)
		return routeLink
	}
	p.forward(w, r, c)
	return routePassthrough
}

// appFromPrefix splits an /apps/{appid}/ prefix off urlPath and returns the
// app it names (nil without a prefix) and the cleaned WeChat path.
func (p *Proxy) appFromPrefix(urlPath string) (*app, string, error) {
	// Cleaning first means "..", "." and "//" can neither escape
	// ALLOWED_PATHS nor reach WeChat in a form we did not check.
	cleaned := cleanPath(urlPath)
	rest, ok := strings.CutPrefix(cleaned, "/apps/")
	if !ok {
		return nil, cleaned, nil
	}
	id, apiPath, _ := strings.Cut(rest, "/")
	a := p.apps[id]
	if a == nil {
		return nil, "", &wechat.Error{Status: http.StatusOK, Code: wechat.InvalidAppID,
			Msg: "invalid appid: wxa-sidecar does not manage app " + quoteShort(id)}
	}
	return a, "/" + apiPath, nil
}

// cleanPath is path.Clean that keeps a trailing slash and roots the path.
// Nearly every path arrives clean, and saying so is cheaper than Clean.
func cleanPath(urlPath string) string {
	if !strings.HasPrefix(urlPath, "/") {
		urlPath = "/" + urlPath
	}
	if !strings.Contains(urlPath, "//") && !strings.Contains(urlPath, "/.") {
		// No empty, "." or ".." element: Clean would change nothing but a
		// trailing slash, which is kept anyway.
		return urlPath
	}
	cleaned := path.Clean(urlPath)
	if strings.HasSuffix(urlPath, "/") && cleaned != "/" {
		cleaned += "/"
	}
	return cleaned
}

// appFromToken picks the app when the path does not name one: the app that
// issued the caller's token, else the only app.
func (p *Proxy) appFromToken(r *http.Request) (*app, error) {
	if p.only != nil {
		return p.only, nil
	}
	// The caller's tokens, however spelled, as the rewrite will strip
	// them: only a token the sidecar issued picks an app.
	for callerToken := range upstream.CallerTokens(r.URL.RawQuery) {
		for _, a := range p.apps {
			if a.tokens.Owns(callerToken) {
				return a, nil
			}
		}
	}
	return nil, &wechat.Error{Status: http.StatusOK, Code: wechat.InvalidAppID,
		Msg: "invalid appid: wxa-sidecar manages several apps; call /apps/{appid}/... or pass a token it issued"}
}

func (p *Proxy) pathAllowed(apiPath string) bool {
	if len(p.allowed) == 0 {
		return true
	}
	for _, prefix := range p.allowed {
		if strings.HasPrefix(apiPath, prefix) {
			return true
		}
	}
	return false
}

// quoteShort quotes a caller-supplied value for an error message, cut short
// so a caller cannot make the sidecar echo a large body.
func quoteShort(s string) string {
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return fmt.Sprintf("%q", s)
}
