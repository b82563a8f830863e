package proxy

import "github.com/wxa-sidecar/wxa-sidecar/upstream"

// The tests' own names for WeChat's paths and errcodes: numbers, as a
// caller would read them, not the vocabulary the code under test uses.
const (
	pathToken       = "/cgi-bin/token"
	pathStableToken = "/cgi-bin/stable_token"
	pathUnlimited   = "/wxa/getwxacodeunlimit"
	pathWxacode     = "/wxa/getwxacode"
	pathQRCode      = "/cgi-bin/wxaapp/createwxaqrcode"

	errcodeSystem        = -1
	errcodeInvalidAppID  = 40013
	errcodeInvalidSecret = 40125
	errcodeInvalidURL    = 40066
	errcodeNeedPOST      = 43002
	errcodeDataFormat    = 47001
	errcodeUnauthorized  = 48001
	errcodeDailyQuota    = 45009
	errcodeMinuteQuota   = 45011
	errcodeLifetimeQuota = 45029
)

// errcodeOf is the errcode of a WeChat JSON answer, 0 if there is none.
func errcodeOf(body []byte) int {
	code, _ := upstream.ErrcodeOf(body)
	return int(code)
}
