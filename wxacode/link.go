package wxacode

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// Links: the requests of generatescheme, generate_urllink, genwxashortlink
// and generatenfcscheme, read as WeChat reads them (../shared/WECHAT-API.md,
// "Links"). Since 2023-12-19 anyone may open any link, so a link depends
// only on its request: two requests with one canonical form may be handed
// one link while it is valid. What the key is made of follows the codes'
// rules (decodeObject, appendJSON, KeyOf); what differs is which fields are
// known, their defaults, and the life of the link, which WeChat's answer
// does not carry and which is therefore read from the request.

// Limits of the link requests.
const (
	// maxLinkQuery is WeChat's limit on a query (and a short link's
	// page_url), in characters. Every allowed character is ASCII.
	maxLinkQuery = 1024
	// minExpiryAhead and maxExpiryAhead bound an absolute expire_time:
	// WeChat refuses one under a minute or over 30 days ahead (85401).
	minExpiryAhead = time.Minute
	maxExpiryAhead = 30 * 24 * time.Hour
	// maxExpiryDays bounds expire_interval, in days.
	maxExpiryDays = 30
	// defaultLinkDays is the life WeChat gives a scheme or URL Link sent
	// without an expiry, and every temporary short link.
	defaultLinkDays = 30
)

// LinkLife is how long the link WeChat makes for a request lives, as the
// request sets it: exactly one of Until, Days and Permanent is set.
type LinkLife struct {
	// Until is an absolute expiry: expire_type 0 with expire_time.
	Until time.Time
	// Days is a relative one: the link dies this many days after it is
	// made (expire_interval; 30 without any expiry field; a temporary
	// short link's 30).
	Days int
	// Permanent: a permanent short link or an NFC scheme, which never
	// expires.
	Permanent bool
}

// KeepUntil is how long a link made at made may be handed out, and false
// when it must not be kept at all. An absolute expiry is kept until
// margin before it, so a link expiring within the margin is never kept. A
// relative one is kept for at most maxAge after it was made (a caller
// still gets about the life it asked for) and never past its expiry less
// the margin. A permanent link is kept (true) with a zero instant: it never
// expires, and how long a tier holds it is the tier's business.
func (l LinkLife) KeepUntil(made time.Time, margin, maxAge time.Duration) (time.Time, bool) {
	var until time.Time
	switch {
	case l.Permanent:
		return time.Time{}, true
	case !l.Until.IsZero():
		until = l.Until.Add(-margin)
	default:
		until = made.Add(time.Duration(l.Days) * 24 * time.Hour).Add(-margin)
		if maxAge > 0 {
			until = minTime(until, made.Add(maxAge))
		}
	}
	if !until.After(made) {
		return time.Time{}, false
	}
	return until, true
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// linkFields says which of WeChat's documented fields a link endpoint has;
// every other field is unknown to it and kept as given.
type linkFields struct {
	jumpWxa   bool // jump_wxa{path, query, env_version}: scheme, NFC
	topLevel  bool // path, query, env_version at the top: URL Link
	expiry    bool // expire_type, expire_time, expire_interval, is_expire
	cloudBase bool // URL Link's cloud_base
	shortLink bool // page_url, page_title, is_permanent
	nfc       bool // model_id, sn
}

func linkFieldsOf(endpoint string) (linkFields, bool) {
	switch endpoint {
	case wechat.PathScheme:
		return linkFields{jumpWxa: true, expiry: true}, true
	case wechat.PathURLLink:
		return linkFields{topLevel: true, expiry: true, cloudBase: true}, true
	case wechat.PathShortLink:
		return linkFields{shortLink: true}, true
	case wechat.PathNFCScheme:
		return linkFields{jumpWxa: true, nfc: true}, true
	}
	return linkFields{}, false
}

// refuseLink returns the error for code with WeChat's own errmsg.
func refuseLink(code wechat.Errcode) *wechat.Error {
	msg := "invalid args"
	switch code {
	case wechat.DataFormat:
		msg = "data format error"
	case wechat.InvalidURL:
		msg = "invalid url"
	case wechat.InvalidLinkQuery:
		msg = "invalid query"
	case wechat.InvalidExpiry:
		msg = "invalid expire time"
	case wechat.InvalidEnvVersion:
		msg = "invalid env_version"
	case wechat.InvalidNFCModel:
		msg = "invalid model_id"
	}
	return wechat.Errorf(code, msg)
}

// LinkCanonical validates body, a request to the link endpoint (one of
// wechat.PathScheme, PathURLLink, PathShortLink, PathNFCScheme) at the
// instant now, and returns its canonical form and the life of the link
// WeChat would make for it. Two requests for the same link have the same
// canonical form, the cache key's stuff (KeyOf). The form is compact JSON
// with keys sorted (recursively), WeChat's documented defaults filled in
// (env_version "release", expire_type 0, is_permanent false, page_title
// ""), is_expire dropped (WeChat ignores it since 2022-04-11: every scheme
// and URL Link expires), integers in their plain spelling, and unknown
// fields kept as given. Nothing else is normalized: a page_title is not
// cut, and an expiry field the expire_type does not use stays, unjudged.
// body is not modified. Errors are *wechat.Error with Status 200, WeChat's
// errcode and errmsg; any other endpoint is 40066.
//
// Refused as WeChat would, before any quota is spent: 47001 for anything
// but one JSON object (decodeObject's rules), an access_token field, and a
// known field of the wrong type (an expiry that is not an integer among
// them); 85401 for an expire_type other than 0 and 1, an expire_time not
// within [now + 1 min, now + 30 days] (the common mistake is
// milliseconds) and an expire_interval outside 1..30; 85402 for an
// env_version other than release, trial and develop; 40212 for a query
// over 1024 characters or outside WeChat's characters (a short link's
// page_url: 40066, also when missing); 9800003 for an NFC scheme without
// model_id. JSON null for an optional field is kept as null, as for codes.
func LinkCanonical(endpoint string, body []byte, now time.Time) ([]byte, LinkLife, error) {
	fields, ok := linkFieldsOf(endpoint)
	if !ok {
		return nil, LinkLife{}, refuseLink(wechat.InvalidURL)
	}
	req, err := decodeObject(body)
	if err != nil {
		return nil, LinkLife{}, err
	}
	if _, ok := req["access_token"]; ok {
		return nil, LinkLife{}, refuseLink(wechat.DataFormat)
	}
	if err := normalizeLinkTypes(req, fields); err != nil {
		return nil, LinkLife{}, err
	}
	life, err := checkLinkValues(req, fields, now)
	if err != nil {
		return nil, LinkLife{}, err
	}
	return appendJSON(make([]byte, 0, len(body)+64), req), life, nil
}

// normalizeLinkTypes checks the type of every field the endpoint knows,
// fills in its defaults and writes integers in their plain spelling.
func normalizeLinkTypes(req map[string]any, f linkFields) error {
	if f.jumpWxa {
		switch v, present := req["jump_wxa"]; jump := v.(type) {
		case map[string]any:
			if err := normalizeTarget(jump); err != nil {
				return err
			}
		case nil:
			if !present {
				// No target: the home page of the release, which is what
				// the defaults spelled out say too.
				req["jump_wxa"] = map[string]any{"env_version": "release"}
			}
		default:
			return refuseLink(wechat.DataFormat)
		}
	}
	if f.topLevel {
		if err := normalizeTarget(req); err != nil {
			return err
		}
	}
	if f.expiry {
		if _, present := req["expire_type"]; !present {
			req["expire_type"] = json.Number("0")
		}
		for _, k := range []string{"expire_type", "expire_time", "expire_interval"} {
			if err := normalizeInteger(req, k); err != nil {
				return err
			}
		}
		switch req["is_expire"].(type) {
		case nil, bool:
			delete(req, "is_expire")
		default:
			return refuseLink(wechat.DataFormat)
		}
	}
	if f.cloudBase {
		switch req["cloud_base"].(type) {
		case nil, map[string]any:
		default:
			return refuseLink(wechat.DataFormat)
		}
	}
	if f.shortLink {
		for k, def := range map[string]any{"page_url": nil, "page_title": ""} {
			switch v, present := req[k]; v.(type) {
			case string:
			case nil:
				if !present && def != nil {
					req[k] = def
				}
			default:
				return refuseLink(wechat.DataFormat)
			}
		}
		if err := normalizeBool(req, "is_permanent", false); err != nil {
			return err
		}
	}
	if f.nfc {
		for _, k := range []string{"model_id", "sn"} {
			switch req[k].(type) {
			case nil, string:
			default:
				return refuseLink(wechat.DataFormat)
			}
		}
	}
	return nil
}

// normalizeTarget checks a link's target, jump_wxa or a URL Link's top
// level: path, query and env_version are strings, env_version "release"
// when absent.
func normalizeTarget(t map[string]any) error {
	for _, k := range []string{"path", "query", "env_version"} {
		switch t[k].(type) {
		case nil, string:
		default:
			return refuseLink(wechat.DataFormat)
		}
	}
	if _, present := t["env_version"]; !present {
		t["env_version"] = "release"
	}
	return nil
}

// normalizeInteger checks that obj[key], when present and not null, is a
// JSON number holding an integer, and writes it plainly (30, 30.0 and 3e1
// are one interval). A string, or a number with a fraction, is refused:
// WeChat's reading of either is unknown, and an expiry must be exact.
func normalizeInteger(obj map[string]any, key string) error {
	n, ok := obj[key].(json.Number)
	if !ok {
		if obj[key] != nil {
			return refuseLink(wechat.DataFormat)
		}
		return nil
	}
	canon, isNumber, isInt := canonicalInteger(string(n))
	switch {
	case !isNumber:
		return refuseLink(wechat.DataFormat)
	case isInt:
		obj[key] = json.Number(canon)
	case !integral(string(n)):
		return refuseLink(wechat.DataFormat)
	}
	// An integer beyond 18 digits keeps its spelling; checkLinkValues
	// finds it out of range.
	return nil
}

// integral reports whether a JSON number that canonicalInteger would not
// shorten (too many digits) still has no fraction: no '.', or only zeros
// after it, and no negative exponent. It errs towards false.
func integral(s string) bool {
	mant, exp, _ := strings.Cut(strings.ToLower(s), "e")
	if strings.HasPrefix(exp, "-") {
		return false
	}
	_, frac, _ := strings.Cut(mant, ".")
	return strings.Trim(frac, "0") == ""
}

// checkLinkValues checks the values WeChat constrains, once every type is
// known to be right, and reads the life of the link.
func checkLinkValues(req map[string]any, f linkFields, now time.Time) (LinkLife, error) {
	life := LinkLife{Days: defaultLinkDays}
	if f.expiry {
		var err error
		if life, err = readExpiry(req, now); err != nil {
			return LinkLife{}, err
		}
	}
	var target map[string]any
	switch {
	case f.jumpWxa:
		target, _ = req["jump_wxa"].(map[string]any)
	case f.topLevel:
		target = req
	}
	if target != nil {
		if env, ok := target["env_version"].(string); ok {
			switch env {
			case "release", "trial", "develop":
			default:
				return LinkLife{}, refuseLink(wechat.InvalidEnvVersion)
			}
		}
		if q, ok := target["query"].(string); ok && !validLinkQuery(q) {
			return LinkLife{}, refuseLink(wechat.InvalidLinkQuery)
		}
	}
	if f.shortLink {
		if u, ok := req["page_url"].(string); !ok || u == "" || !validLinkQuery(u) {
			return LinkLife{}, refuseLink(wechat.InvalidURL)
		}
		if permanent, _ := req["is_permanent"].(bool); permanent {
			life = LinkLife{Permanent: true}
		}
	}
	if f.nfc {
		if id, _ := req["model_id"].(string); id == "" {
			return LinkLife{}, refuseLink(wechat.InvalidNFCModel)
		}
		life = LinkLife{Permanent: true}
	}
	return life, nil
}

// readExpiry reads a scheme's or URL Link's expiry, refusing what WeChat
// refuses with 85401.
func readExpiry(req map[string]any, now time.Time) (LinkLife, error) {
	kind, _ := intOf(req["expire_type"])
	switch {
	case req["expire_type"] == nil:
		// null: WeChat's default, presumably; the key keeps the null.
		kind = 0
	case kind != 0 && kind != 1:
		return LinkLife{}, refuseLink(wechat.InvalidExpiry)
	}
	if kind == 0 {
		v, present := req["expire_time"]
		if !present || v == nil {
			return LinkLife{Days: defaultLinkDays}, nil
		}
		secs, ok := intOf(v)
		// Seconds since the epoch: the range check below is what catches
		// milliseconds, a thousand times too far ahead.
		if !ok || secs > now.Add(maxExpiryAhead).Unix() || secs < now.Add(minExpiryAhead).Unix() {
			return LinkLife{}, refuseLink(wechat.InvalidExpiry)
		}
		return LinkLife{Until: time.Unix(secs, 0)}, nil
	}
	v, present := req["expire_interval"]
	if !present || v == nil {
		return LinkLife{Days: defaultLinkDays}, nil
	}
	days, ok := intOf(v)
	if !ok || days < 1 || days > maxExpiryDays {
		return LinkLife{}, refuseLink(wechat.InvalidExpiry)
	}
	return LinkLife{Days: int(days)}, nil
}

// intOf is a normalized integer's value; false for anything else (null,
// or an integer beyond int64 kept as spelt).
func intOf(v any) (int64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	i, err := strconv.ParseInt(string(n), 10, 64)
	return i, err == nil
}

// validLinkQuery reports whether s is at most 1024 characters, each a
// digit, a letter or one of !#$&'()*+,/:;=?@-._~% (WeChat's rule for a
// link's query and a short link's page_url; % is allowed: a query may be
// URL-encoded).
func validLinkQuery(s string) bool {
	if utf8.RuneCountInString(s) > maxLinkQuery {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isSceneByte(c) && c != '%' {
			return false
		}
	}
	return true
}
