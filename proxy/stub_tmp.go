package proxy

import "net/url"

const (
	pathUnlimited = "/wxa/getwxacodeunlimit"
	pathWxacode   = "/wxa/getwxacode"
	pathQRCode    = "/cgi-bin/wxaapp/createwxaqrcode"
)

type requestError struct {
	Errcode int
	Errmsg  string
}

func (e *requestError) Error() string { return e.Errmsg }

func canonicalCodeRequest(endpoint string, body []byte) ([]byte, error) { return body, nil }
func qrcodeQueryBody(q url.Values) ([]byte, error)                      { return nil, nil }
