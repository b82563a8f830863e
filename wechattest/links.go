package wechattest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// The link endpoints, as WECHAT-API.md ("Links") describes them: every
// call that succeeds makes a new link; expiry, env_version, query, page
// and model_id are checked as WeChat checks them; quotas are counted per
// app as WeChat counts them (schemes and URL Links together a day, short
// links a day, permanent short links for life), each limit off until a
// test sets it.

// Link paths.
const (
	pathScheme    = "/wxa/generatescheme"
	pathURLLink   = "/wxa/generate_urllink"
	pathShortLink = "/wxa/genwxashortlink"
	pathNFCScheme = "/wxa/generatenfcscheme"
)

// Until SetPages names them, every page under pages/ exists (the usual
// layout of a mini program) and nothing else; "" (the home page) always
// exists.

// LinkQuotas are the link limits the fake enforces per app; 0 is none.
type LinkQuotas struct {
	// Daily caps schemes and URL Links together each day (UTC+8): 44993
	// past it (WeChat's 500 000).
	Daily int
	// ShortDaily caps short links each day: 45009 past it.
	ShortDaily int
	// Permanent caps permanent short links for the app's life: 85400
	// past it (WeChat's 100 000).
	Permanent int
}

// MadeLink is one link the fake made.
type MadeLink struct {
	Path    string
	App     string
	Link    string
	Made    time.Time
	Expires time.Time // zero: never
}

// linkState is the fake's memory of links, per app.
type linkState struct {
	mu     sync.Mutex
	pages  []string // nil: everything under pages/
	quotas LinkQuotas
	day    string         // the China date the daily counts are for
	daily  map[string]int // app → schemes + URL Links today
	short  map[string]int // app → short links today
	perm   map[string]int // app → permanent short links, ever
	nfc    map[string]bool
	made   []MadeLink
}

func newLinkState() *linkState {
	return &linkState{daily: map[string]int{}, short: map[string]int{},
		perm: map[string]int{}, nfc: map[string]bool{}}
}

func (s *Server) links() *linkState { return s.lnk }

// SetPages replaces the pages the mini program has (for 40165 and 40066).
func (s *Server) SetPages(pages []string) {
	st := s.links()
	st.mu.Lock()
	defer st.mu.Unlock()
	st.pages = slices.Clone(pages)
}

// SetLinkQuotas sets the link limits; counts made so far still count.
func (s *Server) SetLinkQuotas(q LinkQuotas) {
	st := s.links()
	st.mu.Lock()
	defer st.mu.Unlock()
	st.quotas = q
}

// LinksMade lists the links made on path ("" for every link path), in order.
func (s *Server) LinksMade(path string) []MadeLink {
	st := s.links()
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []MadeLink
	for _, m := range st.made {
		if path == "" || m.Path == path {
			out = append(out, m)
		}
	}
	return out
}

// LinkValid reports whether link was made by the fake and has not expired
// at the fake's now.
func (s *Server) LinkValid(link string) bool {
	st := s.links()
	now := s.opts.Now()
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, m := range st.made {
		if m.Link == link {
			return m.Expires.IsZero() || now.Before(m.Expires)
		}
	}
	return false
}

// link answers the four link endpoints.
func (s *Server) link(w http.ResponseWriter, r *http.Request, body []byte, appID string) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var req map[string]any
	if err := dec.Decode(&req); err != nil || req == nil {
		writeErr(w, 47001, errmsgs[47001])
		return
	}
	now := s.opts.Now()
	st := s.links()
	st.mu.Lock()
	defer st.mu.Unlock()
	if day := now.In(chinaTime).Format(time.DateOnly); day != st.day {
		st.day, st.daily, st.short = day, map[string]int{}, map[string]int{}
	}
	path := r.URL.Path
	var expires time.Time
	var permanent bool
	var answer map[string]any
	switch path {
	case pathScheme, pathNFCScheme:
		target, _ := req["jump_wxa"].(map[string]any)
		if code := st.checkTarget(target); code != 0 {
			writeErr(w, code, errmsgs[code])
			return
		}
		if path == pathNFCScheme {
			model, _ := req["model_id"].(string)
			if model == "" {
				writeErr(w, 9800003, errmsgs[9800003])
				return
			}
			if sn, _ := req["sn"].(string); sn != "" {
				if st.nfc[appID+"\x00"+model+"\x00"+sn] {
					writeErr(w, 9800010, errmsgs[9800010])
					return
				}
				st.nfc[appID+"\x00"+model+"\x00"+sn] = true
			}
			permanent = true
		} else {
			var code int
			if expires, code = linkExpiry(req, now); code != 0 {
				writeErr(w, code, errmsgs[code])
				return
			}
		}
		answer = map[string]any{"openlink": "weixin://dl/business/?t=" + randomString(11)}
	case pathURLLink:
		if code := st.checkTarget(req); code != 0 {
			writeErr(w, code, errmsgs[code])
			return
		}
		var code int
		if expires, code = linkExpiry(req, now); code != 0 {
			writeErr(w, code, errmsgs[code])
			return
		}
		answer = map[string]any{"url_link": "https://wxaurl.cn/" + randomString(12)}
	case pathShortLink:
		pageURL, _ := req["page_url"].(string)
		page, query, _ := strings.Cut(pageURL, "?")
		if pageURL == "" || !st.hasPage(page) || !linkQueryOK(query) {
			writeErr(w, 40066, errmsgs[40066])
			return
		}
		permanent, _ = req["is_permanent"].(bool)
		if !permanent {
			expires = now.Add(30 * 24 * time.Hour)
		}
		title, _ := req["page_title"].(string)
		if utf8.RuneCountInString(title) > 20 {
			title = string([]rune(title)[:20]) // WeChat cuts it
		}
		answer = map[string]any{"link": "#小程序://demo/" + title + "/" + randomString(8)}
	}
	// The quotas, once the request is known to be good.
	switch {
	case path == pathScheme || path == pathURLLink:
		if st.quotas.Daily > 0 && st.daily[appID] >= st.quotas.Daily {
			writeErr(w, 44993, errmsgs[44993])
			return
		}
		st.daily[appID]++
	case path == pathShortLink:
		if permanent && st.quotas.Permanent > 0 && st.perm[appID] >= st.quotas.Permanent {
			writeErr(w, 85400, errmsgs[85400])
			return
		}
		if st.quotas.ShortDaily > 0 && st.short[appID] >= st.quotas.ShortDaily {
			writeErr(w, 45009, errmsgs[45009])
			return
		}
		st.short[appID]++
		if permanent {
			st.perm[appID]++
		}
	}
	var link string
	for _, v := range answer {
		link = v.(string)
	}
	st.made = append(st.made, MadeLink{Path: path, App: appID, Link: link, Made: now, Expires: expires})
	answer["errcode"], answer["errmsg"] = 0, "ok"
	writeJSON(w, answer)
}

// checkTarget checks a link's path, query and env_version (jump_wxa, or
// a URL Link's top level; nil is the home page of the release).
func (st *linkState) checkTarget(t map[string]any) int {
	if t == nil {
		return 0
	}
	if env, ok := t["env_version"].(string); ok && env != "release" && env != "trial" && env != "develop" {
		return 85402
	}
	if q, _ := t["query"].(string); !linkQueryOK(q) {
		return 40212
	}
	if p, _ := t["path"].(string); !st.hasPage(p) {
		return 40165
	}
	return 0
}

func (st *linkState) hasPage(p string) bool {
	if st.pages == nil {
		return p == "" || strings.HasPrefix(p, "pages/")
	}
	return p == "" || slices.Contains(st.pages, p)
}

// linkQueryOK is WeChat's rule for a query: at most 1024 characters of
// 0-9 a-z A-Z !#$&'()*+,/:;=?@-._~%.
func linkQueryOK(q string) bool {
	if len(q) > 1024 {
		return false
	}
	for _, c := range []byte(q) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' ||
			strings.IndexByte("!#$&'()*+,/:;=?@-._~%", c) >= 0) {
			return false
		}
	}
	return true
}

// linkExpiry is when a scheme or URL Link made at now expires, or 85401.
func linkExpiry(req map[string]any, now time.Time) (time.Time, int) {
	num := func(k string) (int64, bool) {
		n, ok := req[k].(json.Number)
		if !ok {
			return 0, false
		}
		i, err := n.Int64()
		return i, err == nil
	}
	kind, _ := num("expire_type")
	switch kind {
	case 0:
		if _, present := req["expire_time"]; !present {
			return now.Add(30 * 24 * time.Hour), 0
		}
		t, ok := num("expire_time")
		if !ok || t < now.Add(time.Minute).Unix() || t > now.Add(30*24*time.Hour).Unix() {
			return time.Time{}, 85401
		}
		return time.Unix(t, 0), 0
	case 1:
		if _, present := req["expire_interval"]; !present {
			return now.Add(30 * 24 * time.Hour), 0
		}
		d, ok := num("expire_interval")
		if !ok || d < 1 || d > 30 {
			return time.Time{}, 85401
		}
		return now.Add(time.Duration(d) * 24 * time.Hour), 0
	}
	return time.Time{}, 85401
}

// chinaTime is UTC+8, where WeChat's days begin.
var chinaTime = time.FixedZone("UTC+8", 8*60*60)
