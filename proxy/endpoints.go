package proxy

import "slices"

// knownEndpoints are the WeChat paths that get a label, a limiter and a
// cool-down of their own. Every other path shares "other", so callers
// cannot grow any of these without bound.
var knownEndpoints = map[string]bool{
	pathToken:                             true,
	pathStableToken:                       true,
	pathUnlimited:                         true,
	pathWxacode:                           true,
	pathQRCode:                            true,
	"/sns/jscode2session":                 true,
	"/wxa/generatescheme":                 true,
	"/wxa/generate_urllink":               true,
	"/wxa/genwxashortlink":                true,
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

// endpointOther labels every path not in knownEndpoints.
const endpointOther = "other"

// endpointOf returns the bounded name of apiPath.
func endpointOf(apiPath string) string {
	if knownEndpoints[apiPath] {
		return apiPath
	}
	return endpointOther
}

// isCodeEndpoint reports the endpoints whose images are cached.
func isCodeEndpoint(apiPath string) bool {
	return apiPath == pathUnlimited || apiPath == pathWxacode || apiPath == pathQRCode
}

// KnownEndpoints returns every value the endpoint label can take: the known
// WeChat paths, sorted, then "other". The metrics are created at zero for
// each, so an alert sees the first event.
func KnownEndpoints() []string {
	endpoints := make([]string, 0, len(knownEndpoints)+1)
	for e := range knownEndpoints {
		endpoints = append(endpoints, e)
	}
	slices.Sort(endpoints)
	return append(endpoints, endpointOther)
}
