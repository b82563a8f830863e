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
//
// Canonical, in this file, runs the steps each kept in its own file: the
// strict decode (decode.go), the checks and defaults (validate.go) and the
// canonical encoding (encode.go); key.go derives the key, query.go reads
// the query form, link.go owns the link requests.
package wxacode

import "github.com/wxa-sidecar/wxa-sidecar/wechat"

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
