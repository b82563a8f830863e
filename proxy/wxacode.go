package proxy

import (
	"bytes"
	"encoding/json"
	"math"
	"net/url"
	"strconv"
	"strings"
)

// The code-image endpoints, whose answers are cached.
const (
	pathUnlimited = "/wxa/getwxacodeunlimit"
	pathWxacode   = "/wxa/getwxacode"
	pathQRCode    = "/cgi-bin/wxaapp/createwxaqrcode"
)

// requestError is a request WeChat would refuse, answered locally with
// WeChat's own errcode before any quota is spent.
type requestError struct {
	Errcode int
	Errmsg  string
}

func (e *requestError) Error() string {
	return "proxy: invalid request: errcode " + strconv.Itoa(e.Errcode) + ": " + e.Errmsg
}

var (
	errFormat      = &requestError{47001, "data format error"}
	errSceneLength = &requestError{40169, "invalid length for scene, or the data is not json string"}
	errSceneChars  = &requestError{40129, "invalid scene"}
	errPage        = &requestError{41030, "invalid page"}
	errArgs        = &requestError{40097, "invalid args"}
	errPath        = &requestError{40159, "invalid length for path, or the data is not json string"}
)

// sceneAllowed marks the characters WeChat accepts in a scene.
var sceneAllowed = func() (a [256]bool) {
	for _, c := range "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!#$&'()*+,/:;=?@-._~" {
		a[c] = true
	}
	return a
}()

// codeDefaults are WeChat's documented defaults per endpoint: a request
// that spells one out is the same code as one that leaves it out.
var codeDefaults = map[string]map[string]any{
	pathUnlimited: {"width": json.Number("430"), "check_path": true, "env_version": "release",
		"auto_color": false, "is_hyaline": false, "line_color": defaultLineColor()},
	pathWxacode: {"width": json.Number("430"), "env_version": "release",
		"auto_color": false, "is_hyaline": false, "line_color": defaultLineColor()},
	pathQRCode: {"width": json.Number("430")},
}

func defaultLineColor() map[string]any {
	return map[string]any{"r": json.Number("0"), "g": json.Number("0"), "b": json.Number("0")}
}

// canonicalCodeRequest validates body for endpoint and returns its
// canonical form: JSON re-encoded with sorted keys, documented defaults
// filled in, numbers sent as strings made numbers, unknown fields kept as
// given. Two requests for the same code have the same canonical form.
// Errors are *requestError.
func canonicalCodeRequest(endpoint string, body []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var req map[string]any
	if err := dec.Decode(&req); err != nil || req == nil {
		return nil, errFormat
	}
	if _, err := dec.Token(); err == nil {
		return nil, errFormat // trailing data after the object
	}
	if _, ok := req["access_token"]; ok {
		return nil, errFormat // WeChat refuses a token in the body
	}
	defaults := codeDefaults[endpoint]
	for k, v := range defaults {
		if _, ok := req[k]; !ok {
			req[k] = v
		}
	}
	if err := canonicalFields(endpoint, req); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(req); err != nil {
		return nil, errFormat
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// canonicalFields checks and normalizes the fields endpoint knows, in place.
func canonicalFields(endpoint string, req map[string]any) error {
	w, ok := number(req["width"])
	if !ok {
		return errFormat
	}
	req["width"] = w
	if endpoint == pathQRCode {
		return checkPath(req, 128)
	}
	for _, k := range []string{"auto_color", "is_hyaline"} {
		if _, ok := req[k].(bool); !ok {
			return errFormat
		}
	}
	color, ok := req["line_color"].(map[string]any)
	if !ok {
		return errFormat
	}
	normalized := make(map[string]any, len(color)+3)
	for k, v := range color {
		normalized[k] = v
	}
	for _, k := range []string{"r", "g", "b"} {
		v, present := color[k]
		if !present {
			v = json.Number("0")
		}
		n, ok := number(v)
		if !ok {
			return errFormat
		}
		normalized[k] = n
	}
	req["line_color"] = normalized
	env, ok := req["env_version"].(string)
	if !ok {
		return errFormat
	}
	if env != "release" && env != "trial" && env != "develop" {
		return errArgs
	}
	if endpoint == pathWxacode {
		return checkPath(req, 1024)
	}
	if _, ok := req["check_path"].(bool); !ok {
		return errFormat
	}
	scene, ok := req["scene"].(string)
	if _, present := req["scene"]; present && !ok {
		return errFormat
	}
	if scene == "" || len(scene) > 32 {
		return errSceneLength
	}
	for i := 0; i < len(scene); i++ {
		if !sceneAllowed[scene[i]] {
			return errSceneChars
		}
	}
	if p, present := req["page"]; present {
		page, ok := p.(string)
		if !ok {
			return errFormat
		}
		if strings.HasPrefix(page, "/") || strings.Contains(page, "?") {
			return errPage
		}
		if page == "" {
			delete(req, "page") // "" means the home page, as absent does
		}
	}
	return nil
}

// checkPath validates getwxacode's and createwxaqrcode's path.
func checkPath(req map[string]any, maxBytes int) error {
	p, present := req["path"]
	path, ok := p.(string)
	if present && !ok {
		return errFormat
	}
	if path == "" || len(path) > maxBytes {
		return errPath
	}
	return nil
}

// number accepts a JSON number or a numeric string (SDKs send both) and
// returns its one canonical spelling.
func number(v any) (json.Number, bool) {
	var text string
	switch n := v.(type) {
	case json.Number:
		text = string(n)
	case string:
		text = strings.TrimSpace(n)
	default:
		return "", false
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return "", false
	}
	return json.Number(strconv.FormatFloat(f, 'f', -1, 64)), true
}

// qrcodeQueryBody turns GET /qrcode's query into the getwxacodeunlimit
// body it stands for; both share one cache entry. Unlike the WeChat path,
// a width outside 280..1280 is refused here (40097), since nothing but this
// sidecar stands between a browser and the quota.
func qrcodeQueryBody(q url.Values) ([]byte, error) {
	req := map[string]any{"scene": q.Get("scene")}
	if page := q.Get("page"); page != "" {
		req["page"] = page
	}
	if env := q.Get("env_version"); env != "" {
		req["env_version"] = env
	}
	if w := q.Get("width"); w != "" {
		n, err := strconv.Atoi(w)
		if err != nil || n < 280 || n > 1280 {
			return nil, errArgs
		}
		req["width"] = n
	}
	for _, k := range []string{"check_path", "is_hyaline", "auto_color"} {
		if v := q.Get(k); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, errFormat
			}
			req[k] = b
		}
	}
	return json.Marshal(req)
}
