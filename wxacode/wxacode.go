// Package wxacode owns the requests for WeChat's code images
// (getwxacodeunlimit, getwxacode, createwxaqrcode): it parses and validates
// them as WeChat would, refusing with WeChat's own errcodes and errmsgs
// before any quota is spent; it writes each in a canonical form, so that two
// requests for the same code are the same bytes; it derives the cache key
// from that form; and it reads GET /qrcode's query form.
//
// It is pure: no I/O, no clock. It never imports net/http, cache/ or quota/:
// the key is a plain [32]byte that cache stores by without either package
// knowing the other, and a bulk generator can use it without an HTTP handler.
package wxacode

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// refuse returns the error for code with WeChat's own errmsg, so a caller's
// SDK sees what WeChat itself would have said. A fresh value each time:
// nobody can alter an error another request gets.
func refuse(code wechat.Errcode) *wechat.Error {
	msg := "invalid args"
	switch code {
	case wechat.DataFormat:
		msg = "data format error"
	case wechat.InvalidSceneLength:
		msg = "invalid length for scene, or the data is not json string"
	case wechat.InvalidScene:
		msg = "invalid scene"
	case wechat.InvalidPage:
		msg = "invalid page"
	case wechat.InvalidPath:
		msg = "invalid length for path, or the data is not json string"
	case wechat.InvalidURL:
		msg = "invalid url"
	}
	return wechat.Errorf(code, msg)
}

// Limits of the code requests.
const (
	// maxSceneBytes is WeChat's 32 characters. Every allowed character is
	// ASCII, so bytes and characters only disagree for a scene that is
	// refused anyway (then as too long rather than as badly spelt).
	maxSceneBytes = 32
	// maxWxacodePath and maxQRCodePath are getwxacode's and
	// createwxaqrcode's limits on path, in bytes.
	maxWxacodePath = 1024
	maxQRCodePath  = 128
	// maxJSONDepth bounds nesting in unknown fields: the decoder recurses,
	// and a body of a few MB of "[" must not exhaust the stack. No real
	// code request nests beyond 2.
	maxJSONDepth = 64
	// maxCanonicalIntDigits keeps a normalized integer within int64; a
	// larger one is kept as given (see canonicalNumber).
	maxCanonicalIntDigits = 18
	// Widths /qrcode accepts: WeChat's documented range, enforced there
	// because nothing but the sidecar stands between a browser and the
	// quota.
	minQueryWidth = 280
	maxQueryWidth = 1280
)

// codeFields says which of WeChat's documented fields an endpoint has;
// every other field is unknown to it and kept as given.
type codeFields struct {
	scene   bool // getwxacodeunlimit's scene, page and check_path
	style   bool // auto_color, line_color, is_hyaline, env_version
	maxPath int  // path is required, at most this many bytes; 0: no path
}

func fieldsOf(endpoint string) (codeFields, bool) {
	switch endpoint {
	case wechat.PathUnlimited:
		return codeFields{scene: true, style: true}, true
	case wechat.PathWxacode:
		return codeFields{style: true, maxPath: maxWxacodePath}, true
	case wechat.PathQRCode:
		return codeFields{maxPath: maxQRCodePath}, true
	}
	return codeFields{}, false
}

// Canonical validates body, a request to the code endpoint (one of
// wechat.PathUnlimited, wechat.PathWxacode, wechat.PathQRCode), and returns
// its canonical form: two requests for the same code have the same
// canonical form, so it is what the cache key is made of (KeyOf). The form
// is compact JSON with keys sorted (recursively), WeChat's documented
// defaults filled in, page "" dropped, width and line_color numbers written
// as plain integers whether sent as numbers or strings, and unknown fields
// kept as given (only whitespace, order and string escapes normalized).
// body is not modified. Errors are *wechat.Error with Status 200, WeChat's
// errcode and WeChat's errmsg; any other endpoint is 40066.
//
// Refused with 47001 besides WeChat's documented errors: anything but
// exactly one JSON object, duplicate keys at any depth, invalid UTF-8 and
// lone surrogate escapes (see decodeObject), nesting deeper than
// maxJSONDepth, an access_token field, and known fields of the wrong type.
// Where WeChat's reading is unknown, the request goes through and stays
// apart in the key rather than being normalized, since a wrong merge would
// serve one code for another while a needless miss costs one call:
//   - JSON null for an optional field is kept as null (WeChat may treat it
//     as absent, but that is unconfirmed); for scene or path it is missing.
//   - A width or colour that is not an integer (430.5) or beyond int64 is
//     kept as given.
//   - Numbers in unknown fields keep their spelling (1.0 stays 1.0).
//
// Checks run in two passes, as a server that decodes before it validates
// would: first every type (47001), then the values in the order scene
// length (40169), scene characters (40129), page (41030), path (40159),
// env_version (40097). WeChat's own order is unconfirmed; all of them
// refuse the request.
func Canonical(endpoint string, body []byte) ([]byte, error) {
	fields, ok := fieldsOf(endpoint)
	if !ok {
		return nil, refuse(wechat.InvalidURL)
	}
	req, err := decodeObject(body)
	if err != nil {
		return nil, err
	}
	return canonicalize(req, fields, len(body))
}

// canonicalize validates req, decoded from a body of about sizeHint bytes,
// fills in its defaults and encodes it. It alters req.
func canonicalize(req map[string]any, fields codeFields, sizeHint int) ([]byte, error) {
	if err := normalizeTypes(req, fields); err != nil {
		return nil, err
	}
	if err := checkValues(req, fields); err != nil {
		return nil, err
	}
	return appendJSON(make([]byte, 0, sizeHint+128), req), nil
}

// KeyVersion is hashed first into every key (KeyOf). Bump it whenever the
// canonical form of some request changes (a default, a normalization, the
// encoding), so that keys of the old form and the new never meet: a shared
// cache tier outlives a deploy, and an old entry found under a new key
// would serve one code for another.
const KeyVersion byte = 1

// KeyOf is the cache key of a code: sha256 of KeyVersion, appID, a zero
// byte, endpoint, a zero byte and the canonical request (from Canonical or
// FromQuery). The zero bytes keep the parts apart, since neither an app ID
// nor an endpoint contains one. It is a plain [32]byte, the size of
// cache.Key, so that this package and the cache need not know each other.
func KeyOf(appID, endpoint string, canonical []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte{KeyVersion})
	for _, part := range []string{appID, endpoint} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	h.Write(canonical)
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// normalizeTypes checks the type of every field endpoint knows, fills in
// its defaults, and writes numbers in their canonical spelling.
func normalizeTypes(req map[string]any, f codeFields) error {
	if _, ok := req["access_token"]; ok {
		// The token travels only in the query; WeChat refuses it here.
		return refuse(wechat.DataFormat)
	}
	if err := normalizeNumberField(req, "width", json.Number("430")); err != nil {
		return err
	}
	if f.maxPath > 0 {
		switch req["path"].(type) {
		case nil, string: // nil: missing, refused by checkValues
		default:
			return refuse(wechat.DataFormat)
		}
	}
	if f.scene {
		switch req["scene"].(type) {
		case nil, string: // nil: missing, refused by checkValues
		default:
			return refuse(wechat.DataFormat)
		}
		switch v := req["page"].(type) {
		case nil:
		case string:
			if v == "" {
				delete(req, "page") // "" is the home page, as absent is
			}
		default:
			return refuse(wechat.DataFormat)
		}
		if err := normalizeBool(req, "check_path", true); err != nil {
			return err
		}
	}
	if !f.style {
		return nil
	}
	for _, k := range []string{"auto_color", "is_hyaline"} {
		if err := normalizeBool(req, k, false); err != nil {
			return err
		}
	}
	switch v, present := req["env_version"]; v.(type) {
	case string:
	case nil:
		if !present {
			req["env_version"] = "release"
		}
	default:
		return refuse(wechat.DataFormat)
	}
	switch v, present := req["line_color"]; color := v.(type) {
	case map[string]any:
		for _, k := range []string{"r", "g", "b"} {
			if err := normalizeNumberField(color, k, json.Number("0")); err != nil {
				return err
			}
		}
	case nil:
		if !present {
			req["line_color"] = map[string]any{"r": json.Number("0"), "g": json.Number("0"), "b": json.Number("0")}
		}
	default:
		return refuse(wechat.DataFormat)
	}
	return nil
}

// normalizeBool checks that obj[key] is a bool (or null), filling in def
// when it is absent. WeChat refuses 1 for a bool; "true" is refused too,
// although WeChat's handling of it is unconfirmed.
func normalizeBool(obj map[string]any, key string, def bool) error {
	switch v, present := obj[key]; v.(type) {
	case bool:
	case nil:
		if !present {
			obj[key] = def
		}
	default:
		return refuse(wechat.DataFormat)
	}
	return nil
}

// normalizeNumberField rewrites obj[key] with canonicalNumber, filling in
// def when it is absent and keeping null.
func normalizeNumberField(obj map[string]any, key string, def json.Number) error {
	v, present := obj[key]
	switch {
	case !present:
		obj[key] = def
	case v != nil:
		n, ok := canonicalNumber(v)
		if !ok {
			return refuse(wechat.DataFormat)
		}
		obj[key] = n
	}
	return nil
}

// checkValues checks the values WeChat constrains, once every type is
// known to be right.
func checkValues(req map[string]any, f codeFields) error {
	if f.scene {
		scene, _ := req["scene"].(string)
		if err := checkScene(scene); err != nil {
			return err
		}
		if page, ok := req["page"].(string); ok && (strings.HasPrefix(page, "/") || strings.Contains(page, "?")) {
			return refuse(wechat.InvalidPage)
		}
	}
	if f.maxPath > 0 {
		path, ok := req["path"].(string)
		if !ok || path == "" || len(path) > f.maxPath {
			return refuse(wechat.InvalidPath)
		}
	}
	if env, ok := req["env_version"].(string); ok && f.style {
		switch env {
		case "release", "trial", "develop":
		default:
			return refuse(wechat.InvalidArgs)
		}
	}
	return nil
}

// checkScene applies WeChat's scene rules: length first, so an over-long
// scene of bad characters is 40169.
func checkScene(scene string) error {
	if scene == "" || len(scene) > maxSceneBytes {
		return refuse(wechat.InvalidSceneLength)
	}
	for i := 0; i < len(scene); i++ {
		if !isSceneByte(scene[i]) {
			return refuse(wechat.InvalidScene)
		}
	}
	return nil
}

// isSceneByte reports whether c is one of 0-9 a-z A-Z !#$&'()*+,/:;=?@-._~
// (notably not %: a scene is not URL-encoded).
func isSceneByte(c byte) bool {
	switch {
	case '0' <= c && c <= '9', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		return true
	}
	return strings.IndexByte("!#$&'()*+,/:;=?@-._~", c) >= 0
}

// canonicalNumber accepts a JSON number or a string holding one (SDKs send
// "430" and "0") and returns an integer as a json.Number of its plain
// decimal spelling, so 430, "430", 430.0 and 4.3e2 share a key. Any other
// number is returned as given: how WeChat reads 430.5 is unconfirmed, so
// it must not share 430's key. A string that is not a JSON number (" 430",
// "wide") is refused.
func canonicalNumber(v any) (any, bool) {
	var text string
	switch n := v.(type) {
	case json.Number:
		text = string(n)
	case string:
		text = n
	default:
		return nil, false
	}
	canon, isNumber, isInt := canonicalInteger(text)
	switch {
	case !isNumber:
		return nil, false
	case isInt:
		return json.Number(canon), true
	}
	return v, true
}

// canonicalInteger parses s by JSON's number grammar and, if its value is
// an integer of at most maxCanonicalIntDigits digits, returns its plain
// decimal spelling ("-0" is "0"). Exact: no floating point is involved.
func canonicalInteger(s string) (canon string, isNumber, isInt bool) {
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	intPart, s := leadingDigits(s)
	if intPart == "" || (len(intPart) > 1 && intPart[0] == '0') {
		return "", false, false
	}
	var frac string
	if strings.HasPrefix(s, ".") {
		frac, s = leadingDigits(s[1:])
		if frac == "" {
			return "", false, false
		}
	}
	// exp saturates at expLimit, far beyond any fraction a body can hold,
	// so exp-len(frac) keeps the sign and magnitude class that matter.
	const expLimit = 1 << 50
	exp := 0
	if s != "" && (s[0] == 'e' || s[0] == 'E') {
		s = s[1:]
		expNeg := false
		if s != "" && (s[0] == '+' || s[0] == '-') {
			expNeg = s[0] == '-'
			s = s[1:]
		}
		var digits string
		digits, s = leadingDigits(s)
		if digits == "" {
			return "", false, false
		}
		for i := 0; i < len(digits) && exp < expLimit; i++ {
			exp = exp*10 + int(digits[i]-'0')
		}
		if expNeg {
			exp = -exp
		}
	}
	if s != "" {
		return "", false, false
	}
	digits := strings.TrimLeft(intPart+frac, "0")
	if digits == "" {
		return "0", true, true
	}
	exp -= len(frac)
	trimmed := strings.TrimRight(digits, "0")
	exp += len(digits) - len(trimmed)
	if exp < 0 || len(trimmed)+exp > maxCanonicalIntDigits {
		return "", true, false
	}
	canon = trimmed + strings.Repeat("0", exp)
	if neg {
		canon = "-" + canon
	}
	return canon, true, true
}

func leadingDigits(s string) (digits, rest string) {
	i := 0
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		i++
	}
	return s[:i], s[i:]
}

// decodeObject decodes body, which must be one JSON object and nothing
// else, into map[string]any, []any, string, json.Number, bool and nil.
// encoding/json alone would let through what must not reach the key:
// duplicate keys (which one WeChat reads is unknown, so they are refused
// at any depth), and invalid UTF-8 or lone surrogate escapes, which it
// turns into U+FFFD and so would give different strings one key.
func decodeObject(body []byte) (map[string]any, error) {
	if !utf8.Valid(body) || hasLoneSurrogate(body) {
		return nil, refuse(wechat.DataFormat)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, refuse(wechat.DataFormat)
	}
	obj, err := decodeMembers(dec, 1)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimLeft(body[dec.InputOffset():], " \t\r\n")) != 0 {
		return nil, refuse(wechat.DataFormat) // trailing data
	}
	return obj, nil
}

// decodeMembers decodes an object's members after its '{' and consumes its
// '}'.
func decodeMembers(dec *json.Decoder, depth int) (map[string]any, error) {
	obj := make(map[string]any)
	for dec.More() {
		tok, err := dec.Token()
		key, ok := tok.(string)
		if err != nil || !ok {
			return nil, refuse(wechat.DataFormat)
		}
		if _, dup := obj[key]; dup {
			return nil, refuse(wechat.DataFormat)
		}
		v, err := decodeValue(dec, depth)
		if err != nil {
			return nil, err
		}
		obj[key] = v
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, refuse(wechat.DataFormat)
	}
	return obj, nil
}

// decodeValue decodes the next value; depth is that of its container.
func decodeValue(dec *json.Decoder, depth int) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, refuse(wechat.DataFormat)
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return tok, nil // string, json.Number, bool or nil
	}
	if depth >= maxJSONDepth {
		return nil, refuse(wechat.DataFormat)
	}
	switch delim {
	case '{':
		return decodeMembers(dec, depth+1)
	case '[':
		arr := []any{}
		for dec.More() {
			v, err := decodeValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		if tok, err := dec.Token(); err != nil || tok != json.Delim(']') {
			return nil, refuse(wechat.DataFormat)
		}
		return arr, nil
	}
	return nil, refuse(wechat.DataFormat)
}

// hasLoneSurrogate reports whether body escapes half a UTF-16 surrogate
// pair (\ud800 not followed by \udc00-\udfff, or the latter alone). It may
// scan outside strings too: a backslash there makes the JSON invalid anyway.
func hasLoneSurrogate(body []byte) bool {
	pendingHigh := false
	for i := 0; i < len(body); i++ {
		if body[i] != '\\' {
			if pendingHigh {
				return true
			}
			continue
		}
		if i+1 >= len(body) || body[i+1] != 'u' {
			if pendingHigh {
				return true
			}
			i++ // skip the escaped character, which may be a backslash
			continue
		}
		r, ok := hex4(body[i+2:])
		switch {
		case !ok:
			return pendingHigh // invalid JSON, refused by the decoder
		case 0xD800 <= r && r < 0xDC00:
			if pendingHigh {
				return true
			}
			pendingHigh = true
		case 0xDC00 <= r && r < 0xE000:
			if !pendingHigh {
				return true
			}
			pendingHigh = false
		default:
			if pendingHigh {
				return true
			}
		}
		i += 5
	}
	return pendingHigh
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// appendJSON appends v, a value of decodeObject's types, as compact JSON
// with object keys sorted. Strings must be valid UTF-8; they are written
// raw except for what JSON requires escaped, so one string has one
// spelling.
func appendJSON(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		return strconv.AppendBool(b, v)
	case json.Number:
		return append(b, v...)
	case string:
		return appendJSONString(b, v)
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSON(b, e)
		}
		return append(b, ']')
	case map[string]any:
		b = append(b, '{')
		for i, k := range slices.Sorted(maps.Keys(v)) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendJSON(b, v[k])
		}
		return append(b, '}')
	}
	panic("wxacode: appendJSON: unexpected type") // only decodeObject's types reach here
}

func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// FromQuery reads GET /qrcode's query as the getwxacodeunlimit request it
// stands for, validated and canonicalized in the same pass: body is what to
// send WeChat (the parameters asked for, as compact JSON with sorted keys,
// no default filled in) and canonical is Canonical(wechat.PathUnlimited,
// body), so the query and the equivalent POST share one cache entry.
// Parameters: scene, page, width, env_version, check_path, auto_color and
// is_hyaline (bools as strconv.ParseBool reads them); an empty value is
// the default. Anything else, including app (the caller's app selector),
// is ignored. Unlike a POST, a width that is not an integer from 280 to
// 1280 is refused, since nothing but the sidecar stands between a browser
// and the quota: 40097 invalid args even for "wide", as no JSON was sent.
// Otherwise the request is validated as a POST would be. Errors are
// *wechat.Error, as Canonical's.
func FromQuery(q url.Values) (body, canonical []byte, err error) {
	req := make(map[string]any)
	scene := q.Get("scene")
	if !utf8.ValidString(scene) {
		return nil, nil, checkScene(scene) // a scene is ASCII: refused either way
	}
	req["scene"] = scene
	for _, k := range []string{"page", "env_version"} {
		if v := q.Get(k); v != "" {
			if !utf8.ValidString(v) {
				return nil, nil, refuse(wechat.DataFormat)
			}
			req[k] = v
		}
	}
	if w := q.Get("width"); w != "" {
		canon, _, isInt := canonicalInteger(w)
		n, err := strconv.Atoi(canon)
		if !isInt || err != nil || n < minQueryWidth || n > maxQueryWidth {
			return nil, nil, refuse(wechat.InvalidArgs)
		}
		req["width"] = json.Number(canon)
	}
	for _, k := range []string{"check_path", "auto_color", "is_hyaline"} {
		if v := q.Get(k); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, nil, refuse(wechat.DataFormat)
			}
			req[k] = b
		}
	}
	// req holds exactly what decoding body would give: valid UTF-8
	// strings, an integer json.Number and bools, one value per key. So it
	// goes straight to canonicalize, which fills in the defaults: body
	// first, while req is still only what was asked.
	body = appendJSON(nil, req)
	fields, _ := fieldsOf(wechat.PathUnlimited)
	canonical, err = canonicalize(req, fields, len(body))
	if err != nil {
		return nil, nil, err
	}
	return body, canonical, nil
}
