package wechat

import "slices"

// Endpoint paths the sidecar treats specially.
const (
	PathToken       = "/cgi-bin/token"
	PathStableToken = "/cgi-bin/stable_token"
	PathUnlimited   = "/wxa/getwxacodeunlimit"
	PathWxacode     = "/wxa/getwxacode"
	PathQRCode      = "/cgi-bin/wxaapp/createwxaqrcode"

	// The link endpoints: JSON in, a new link out, kept until it expires.
	PathScheme    = "/wxa/generatescheme"
	PathURLLink   = "/wxa/generate_urllink"
	PathShortLink = "/wxa/genwxashortlink"
	PathNFCScheme = "/wxa/generatenfcscheme"
)

// EndpointOther names every path that is not a known endpoint.
const EndpointOther = "other"

// knownEndpoints get a metric label, a limiter and a cool-down of their
// own. Every other path shares EndpointOther, so callers cannot grow any of
// these without bound.
var knownEndpoints = map[string]bool{
	PathToken:                             true,
	PathStableToken:                       true,
	PathUnlimited:                         true,
	PathWxacode:                           true,
	PathQRCode:                            true,
	"/sns/jscode2session":                 true,
	PathScheme:                            true,
	PathURLLink:                           true,
	PathShortLink:                         true,
	PathNFCScheme:                         true,
	"/wxa/query_urllink":                  true,
	"/wxa/queryscheme":                    true,
	"/wxa/business/getuserphonenumber":    true,
	"/wxa/msg_sec_check":                  true,
	"/wxa/img_sec_check":                  true,
	"/wxa/media_check_async":              true,
	"/cgi-bin/message/subscribe/send":     true,
	"/cgi-bin/message/custom/send":        true,
	"/cgi-bin/media/upload":               true,
	"/cgi-bin/openapi/quota/get":          true,
	"/cgi-bin/getcallbackip":              true,
	"/wxa/getpaidunionid":                 true,
	"/wxa/checksession":                   true,
	"/cgi-bin/wxaapp/getwxadevinfo":       true,
	"/wxa/sec/order/upload_shipping_info": true,
}

// Endpoint returns the bounded name of an API path: the path itself if it
// is known, else EndpointOther.
func Endpoint(apiPath string) string {
	if knownEndpoints[apiPath] {
		return apiPath
	}
	return EndpointOther
}

// IsKnownEndpoint reports whether apiPath has a name of its own.
func IsKnownEndpoint(apiPath string) bool { return knownEndpoints[apiPath] }

// KnownEndpoints lists the known endpoints, sorted, without EndpointOther.
func KnownEndpoints() []string {
	out := make([]string, 0, len(knownEndpoints))
	for p := range knownEndpoints {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// IsCodeEndpoint reports the three endpoints that answer with an image.
func IsCodeEndpoint(apiPath string) bool {
	return apiPath == PathUnlimited || apiPath == PathWxacode || apiPath == PathQRCode
}

// IsTokenEndpoint reports the two endpoints that issue tokens.
func IsTokenEndpoint(apiPath string) bool {
	return apiPath == PathToken || apiPath == PathStableToken
}

// IsLinkEndpoint reports the four endpoints that make a link (a URL
// Scheme, a URL Link, a Short Link, an NFC scheme): JSON answers the
// sidecar keeps until they expire.
func IsLinkEndpoint(apiPath string) bool {
	return apiPath == PathScheme || apiPath == PathURLLink || apiPath == PathShortLink || apiPath == PathNFCScheme
}

// LinkEndpoints lists the link endpoints, sorted.
func LinkEndpoints() []string {
	return []string{PathURLLink, PathNFCScheme, PathScheme, PathShortLink}
}
