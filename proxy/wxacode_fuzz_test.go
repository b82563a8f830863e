package proxy

import (
	"bytes"
	"net/url"
	"testing"
)

// FuzzCanonicalCodeRequest: no input panics, and the canonical form of a
// canonical form is itself (canonicalizing twice equals once).
func FuzzCanonicalCodeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"scene":"a=1","page":"pages/x"}`,
		`{"scene":"a","width":"430","line_color":{"r":"0","g":1,"b":2.5,"a":"x"},"show_splash_ad":true}`,
		`{"scene":"!#$&'()*+,/:;=?@-._~","env_version":"develop","check_path":false,"is_hyaline":true}`,
		`{"path":"pages/a?x=1","width":1e3}`,
		`{"scene":"<&>","page":"\u00e9"}`,
		`{"scene":"a","nested":{"z":[1,2,{"y":null}],"a":"b"}}`,
		`{"scene":""}`, `{"scene":1}`, `[]`, `null`, `{`, `{"scene":"a"} x`, `{"width":"-0"}`,
		`{"scene":"a","width":"1e400"}`, `{"scene":"a","line_color":{"r":" 7 "}}`,
	} {
		for _, endpoint := range []string{pathUnlimited, pathWxacode, pathQRCode} {
			f.Add(endpoint, []byte(seed))
		}
	}
	f.Fuzz(func(t *testing.T, endpoint string, body []byte) {
		if !isCodeEndpoint(endpoint) {
			endpoint = pathUnlimited
		}
		once, err := canonicalCodeRequest(endpoint, body)
		if err != nil {
			if _, ok := err.(*requestError); !ok {
				t.Fatalf("error of type %T, want *requestError", err)
			}
			return
		}
		twice, err := canonicalCodeRequest(endpoint, once)
		if err != nil {
			t.Fatalf("the canonical form %s is refused: %v", once, err)
		}
		if !bytes.Equal(once, twice) {
			t.Fatalf("not idempotent:\n once  %s\n twice %s", once, twice)
		}
	})
}

// FuzzQRCodeQuery: no query panics, and every body it builds canonicalizes
// idempotently.
func FuzzQRCodeQuery(f *testing.F) {
	for _, seed := range []string{
		"scene=a", "scene=id%3D5&page=pages/a&width=300", "scene=a&is_hyaline=T&check_path=0",
		"scene=&width=99999", "scene=a%25b", "scene=a&env_version=trial&app=wx1", "page=/x", "%zz", "scene=a+b",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		body, err := qrcodeQueryBody(q)
		if err != nil {
			if _, ok := err.(*requestError); !ok {
				t.Fatalf("error of type %T", err)
			}
			return
		}
		once, err := canonicalCodeRequest(pathUnlimited, body)
		if err != nil {
			return // refused by the same rules as a POST
		}
		twice, err := canonicalCodeRequest(pathUnlimited, once)
		if err != nil || !bytes.Equal(once, twice) {
			t.Fatalf("not idempotent: %s → %s (%v)", once, twice, err)
		}
	})
}
