package wxacode

import (
	"encoding/json"
	"net/url"
	"strconv"
	"unicode/utf8"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

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
