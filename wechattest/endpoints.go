package wechattest

import (
	"bytes"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
)

func (s *Server) jscode2session(w http.ResponseWriter, r *http.Request, _ []byte) {
	q := r.URL.Query()
	s.mu.Lock()
	_, code := s.checkApp(q.Get("appid"), q.Get("secret"))
	s.mu.Unlock()
	if code != 0 {
		writeErr(w, code, errmsgs[code])
		return
	}
	jsCode := q.Get("js_code")
	if jsCode == "" || strings.ContainsAny(jsCode, " /") {
		writeErr(w, 40029, "invalid code")
		return
	}
	writeJSON(w, map[string]any{"openid": "o" + jsCode + "-openid", "session_key": "sk-" + jsCode, "unionid": "u" + jsCode})
}

func (s *Server) imgSecCheck(w http.ResponseWriter, r *http.Request, body []byte, _ string) {
	_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || params["boundary"] == "" {
		writeErr(w, 41005, "media data missing")
		return
	}
	req := &http.Request{Method: http.MethodPost, Header: r.Header, Body: io.NopCloser(bytes.NewReader(body))}
	if err := req.ParseMultipartForm(32 << 20); err != nil || req.MultipartForm.File["media"] == nil {
		writeErr(w, 41005, "media data missing")
		return
	}
	writeJSON(w, map[string]any{"errcode": 0, "errmsg": "ok"})
}

// code answers the three image endpoints.
func (s *Server) code(w http.ResponseWriter, r *http.Request, body []byte, appID string) {
	img, params, err := s.imageFor(r.URL.Path, body)
	if err != nil {
		code := err.(codeErr)
		writeErr(w, code.errcode, code.errmsg)
		return
	}
	h := w.Header()
	if r.URL.Path != "/wxa/getwxacodeunlimit" {
		s.mu.Lock()
		a := s.apps[appID]
		if !a.codes[params] && s.opts.LifetimeCap > 0 && len(a.codes) >= s.opts.LifetimeCap {
			// Past the cap only new parameters are refused; codes made
			// before are still served, and not counted again.
			s.mu.Unlock()
			writeErr(w, 45029, errmsgs[45029])
			return
		}
		a.codes[params] = true
		used := len(a.codes)
		s.mu.Unlock()
		h.Set("Num-Used", strconv.Itoa(used))
	}
	writeImage(w, img)
}

// writeImage answers img with WeChat's image headers.
func writeImage(w http.ResponseWriter, img []byte) {
	h := w.Header()
	h.Set("Content-Type", "image/jpeg") // even for a PNG, as WeChat does
	h.Set("Content-Disposition", ContentDisposition)
	h.Set("Content-Length", strconv.Itoa(len(img)))
	w.WriteHeader(http.StatusOK)
	w.Write(img)
}
