package wxacode

import (
	"encoding/json"
	"strings"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

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
