package proxy

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func canonical(t *testing.T, endpoint, body string) string {
	t.Helper()
	c, err := canonicalCodeRequest(endpoint, []byte(body))
	if err != nil {
		t.Fatalf("%s %s: %v", endpoint, body, err)
	}
	return string(c)
}

func TestEquivalentRequestsShareACanonicalForm(t *testing.T) {
	groups := []struct {
		endpoint string
		bodies   []string
	}{
		{pathUnlimited, []string{
			`{"scene":"a=1","page":"pages/x"}`,
			`{"page":"pages/x","scene":"a=1"}`,
			"\n{ \"scene\" : \"a=1\",\t\"page\":\"pages/x\" }  ",
			`{"scene":"a=1","page":"pages/x","width":430,"check_path":true,"env_version":"release","auto_color":false,"is_hyaline":false,"line_color":{"r":0,"g":0,"b":0}}`,
			`{"scene":"a=1","page":"pages/x","width":"430","line_color":{"r":"0","g":"0","b":"0"}}`,
			`{"scene":"a=1","page":"pages/x","width":430.0,"line_color":{"b":0}}`,
		}},
		{pathUnlimited, []string{`{"scene":"a"}`, `{"scene":"a","page":""}`}},
		{pathWxacode, []string{`{"path":"p?x=1"}`, `{"path":"p?x=1","width":"430","env_version":"release","line_color":{"r":"0"}}`}},
		{pathQRCode, []string{`{"path":"p"}`, `{"width":430,"path":"p"}`}},
	}
	for _, g := range groups {
		want := canonical(t, g.endpoint, g.bodies[0])
		for _, b := range g.bodies[1:] {
			if got := canonical(t, g.endpoint, b); got != want {
				t.Errorf("%s\n  canonical %s\n  want      %s", b, got, want)
			}
		}
	}
}

func TestDifferentRequestsDiffer(t *testing.T) {
	base := canonical(t, pathUnlimited, `{"scene":"a","page":"p"}`)
	for _, b := range []string{
		`{"scene":"A","page":"p"}`, `{"scene":"a","page":"q"}`, `{"scene":"a","page":"p","width":431}`,
		`{"scene":"a","page":"p","show_splash_ad":true}`, `{"scene":"a","page":"p","check_path":false}`,
		`{"scene":"a","page":"p","line_color":{"r":0,"g":0,"b":1}}`, `{"scene":"a","page":"p","env_version":"trial"}`,
	} {
		if canonical(t, pathUnlimited, b) == base {
			t.Errorf("%s has the canonical form of a different code", b)
		}
	}
	if canonical(t, pathUnlimited, `{"scene":"a","x":1}`) == canonical(t, pathUnlimited, `{"scene":"a","x":2}`) {
		t.Error("unknown fields must stay in the key as given")
	}
}

func TestInvalidRequestsGetWeChatsErrcode(t *testing.T) {
	tests := []struct {
		endpoint, body string
		errcode        int
	}{
		{pathUnlimited, `{"scene":""}`, 40169},
		{pathUnlimited, `{}`, 40169},
		{pathUnlimited, `{"scene":"` + strings.Repeat("a", 33) + `"}`, 40169},
		{pathUnlimited, `{"scene":"` + strings.Repeat("a", 32) + `%"}`, 40169},
		{pathUnlimited, `{"scene":"a b"}`, 40129},
		{pathUnlimited, `{"scene":"中文"}`, 40129},
		{pathUnlimited, `{"scene":1}`, 47001},
		{pathUnlimited, `{"scene":"a","page":"/p"}`, 41030},
		{pathUnlimited, `{"scene":"a","page":"p?x=1"}`, 41030},
		{pathUnlimited, `{"scene":"a","page":7}`, 47001},
		{pathUnlimited, `{"scene":"a","env_version":"prod"}`, 40097},
		{pathUnlimited, `{"scene":"a","env_version":1}`, 47001},
		{pathUnlimited, `{"scene":"a","is_hyaline":1}`, 47001},
		{pathUnlimited, `{"scene":"a","check_path":"false"}`, 47001},
		{pathUnlimited, `{"scene":"a","width":"wide"}`, 47001},
		{pathUnlimited, `{"scene":"a","width":true}`, 47001},
		{pathUnlimited, `{"scene":"a","line_color":"red"}`, 47001},
		{pathUnlimited, `{"scene":"a","line_color":{"r":"x"}}`, 47001},
		{pathUnlimited, `{"scene":"a","access_token":"t"}`, 47001},
		{pathUnlimited, `{"scene":"a"} {}`, 47001},
		{pathUnlimited, `[]`, 47001},
		{pathUnlimited, `null`, 47001},
		{pathUnlimited, ``, 47001},
		{pathWxacode, `{"width":430}`, 40159},
		{pathWxacode, `{"path":"` + strings.Repeat("a", 1025) + `"}`, 40159},
		{pathWxacode, `{"path":3}`, 47001},
		{pathQRCode, `{"path":"` + strings.Repeat("a", 129) + `"}`, 40159},
	}
	for _, tt := range tests {
		_, err := canonicalCodeRequest(tt.endpoint, []byte(tt.body))
		var re *requestError
		if !errors.As(err, &re) || re.Errcode != tt.errcode {
			t.Errorf("%s %.60s: %v, want errcode %d", tt.endpoint, tt.body, err, tt.errcode)
		}
	}
	// Widths out of range are WeChat's to refuse on its own paths.
	canonical(t, pathUnlimited, `{"scene":"a","width":100}`)
}

func TestQRCodeQueryMatchesThePOST(t *testing.T) {
	q, _ := url.ParseQuery("scene=id%3D5&page=pages/a&width=300&check_path=false&is_hyaline=1&env_version=trial&app=wx1&junk=1")
	body, err := qrcodeQueryBody(q)
	if err != nil {
		t.Fatal(err)
	}
	post := `{"scene":"id=5","page":"pages/a","width":300,"check_path":false,"is_hyaline":true,"env_version":"trial"}`
	if got, want := canonical(t, pathUnlimited, string(body)), canonical(t, pathUnlimited, post); got != want {
		t.Errorf("GET canonical %s, POST %s", got, want)
	}
	for query, errcode := range map[string]int{"scene=a&width=279": 40097, "scene=a&width=1281": 40097,
		"scene=a&width=x": 40097, "scene=a&check_path=maybe": 47001} {
		q, _ := url.ParseQuery(query)
		_, err := qrcodeQueryBody(q)
		var re *requestError
		if !errors.As(err, &re) || re.Errcode != errcode {
			t.Errorf("%s: %v, want errcode %d", query, err, errcode)
		}
	}
}

func BenchmarkCanonicalCodeRequest(b *testing.B) {
	body := []byte(`{"scene":"id=12345","page":"pages/index/index","width":430,"line_color":{"r":"0","g":"0","b":"0"},"is_hyaline":false}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := canonicalCodeRequest(pathUnlimited, body); err != nil {
			b.Fatal(err)
		}
	}
}
