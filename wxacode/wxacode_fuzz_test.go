package wxacode

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// checkCanonical asserts what must hold for any body on endpoint: a refusal
// is a *wechat.Error; an accepted body is valid JSON, its canonical form is
// valid UTF-8 JSON that canonicalizes to itself, and re-indenting the body
// does not change it.
func checkCanonical(t *testing.T, endpoint string, body []byte) {
	t.Helper()
	canon, err := Canonical(endpoint, body)
	if err != nil {
		var we *wechat.Error
		if !errors.As(err, &we) {
			t.Fatalf("%s: got error %v of type %T, want *wechat.Error", endpoint, err, err)
		}
		return
	}
	if !json.Valid(body) {
		t.Fatalf("%s: accepted invalid JSON %q", endpoint, body)
	}
	if !json.Valid(canon) || !utf8.Valid(canon) {
		t.Fatalf("%s: canonical form %q of %q is not valid JSON", endpoint, canon, body)
	}
	again, err := Canonical(endpoint, canon)
	if err != nil {
		t.Fatalf("%s: canonical form %q refused: %v", endpoint, canon, err)
	}
	if !bytes.Equal(again, canon) {
		t.Fatalf("%s: canonical form not stable:\n%q\n%q", endpoint, canon, again)
	}
	checkPreserved(t, endpoint, body, canon)
	if bytes.ContainsRune(canon, utf8.RuneError) && !bytes.ContainsRune(body, utf8.RuneError) &&
		!strings.Contains(strings.ToLower(string(body)), `\ufffd`) {
		// encoding/json's stand-in for what it could not decode: two
		// different bodies would share the key.
		t.Fatalf("%s: canonical form %q of %q has U+FFFD the body did not", endpoint, canon, body)
	}
	var indented bytes.Buffer
	if err := json.Indent(&indented, body, "\t", "  "); err != nil {
		t.Fatalf("%s: json.Indent of accepted body %q: %v", endpoint, body, err)
	}
	reflowed, err := Canonical(endpoint, indented.Bytes())
	if err != nil || !bytes.Equal(reflowed, canon) {
		t.Fatalf("%s: indented body gives %q (err %v), want %q", endpoint, reflowed, err, canon)
	}
}

// checkPreserved asserts that canon says what body said: every field the
// canonicalizer does not normalize decodes to the same value from both, and
// canon adds nothing but defaults.
func checkPreserved(t *testing.T, endpoint string, body, canon []byte) {
	t.Helper()
	decode := func(b []byte) map[string]any {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("%s: decoding %q: %v", endpoint, b, err)
		}
		return m
	}
	given, got := decode(body), decode(canon)
	normalized := map[string]bool{"width": true}
	defaults := map[string]bool{"width": true}
	if endpoint != pathQRCode {
		for _, k := range []string{"line_color", "auto_color", "is_hyaline", "env_version"} {
			defaults[k] = true
		}
		normalized["line_color"] = true
	}
	if endpoint == pathUnlimited {
		defaults["check_path"] = true
		if given["page"] == "" {
			if _, ok := got["page"]; ok {
				t.Fatalf("%s: page \"\" kept in %q", endpoint, canon)
			}
			delete(given, "page")
		}
	}
	for k, v := range given {
		if normalized[k] {
			continue
		}
		if w, ok := got[k]; !ok || !reflect.DeepEqual(v, w) {
			t.Fatalf("%s: field %q is %#v in %q but %#v in %q", endpoint, k, v, body, w, canon)
		}
	}
	for k := range got {
		if _, ok := given[k]; !ok && !defaults[k] {
			t.Fatalf("%s: canonical form %q adds field %q to %q", endpoint, canon, k, body)
		}
	}
	if color, ok := given["line_color"].(map[string]any); ok && normalized["line_color"] {
		out := got["line_color"].(map[string]any)
		for k, v := range color {
			if k != "r" && k != "g" && k != "b" && !reflect.DeepEqual(v, out[k]) {
				t.Fatalf("%s: line_color.%s is %#v in %q but %#v in %q", endpoint, k, v, body, out[k], canon)
			}
		}
	}
}

func FuzzCanonicalCodeRequest(f *testing.F) {
	seeds := []string{
		// Valid.
		`{"scene":"a"}`,
		`{"scene":"id=7","page":"pages/a/b","width":"430","check_path":false,"env_version":"trial","auto_color":true,"is_hyaline":true,"line_color":{"r":"255","g":1,"b":"0"}}`,
		`{"path":"pages/index?id=3","width":280}`,
		`{"path":"p","scene":"","page":"/x","check_path":1,"show_splash_ad":true}`,
		`{"scene":"a","x":{"y":[3,{"b":1.50,"a":null}],"z":"\u00e9\/\ud83d\ude00"}}`,
		`{"scene":"a","line_color":{"r":null,"alpha":"0.5"},"width":null,"page":null}`,
		// Edges.
		`{"scene":"` + strings.Repeat("x", 32) + `"}`,
		`{"scene":"a","width":430.5}`,
		`{"scene":"a","width":"1e999999999999999999999"}`,
		`{"scene":"a","width":-0.0e-0}`,
		`{"scene":"a","line_color":{"r":0e99999999999999999999}}`,
		`{"scene":"a","width":"999999999999999999"}`,
		`{"path":"` + strings.Repeat("p", 128) + `"}`,
		" \n{ \"scene\" :\t\"a\" }\r\n",
		`{"scene":"a","x":"\t\u0001\"\\<>&` + "\u2028" + `"}`,
		`{"scene":"a","x":[[[[[[[[[[]]]]]]]]]]}`,
		// Invalid.
		``,
		`{"scene":`,
		`null`,
		`{"scene":"a"} {}`,
		`{"scene":"a","scene":"b"}`,
		`{"scene":"a","\u0073cene":"a"}`,
		"{\"scene\":\"a\",\"x\":\"\xff\"}",
		`{"scene":"a","x":"\ud800"}`,
		`{"scene":"a","x":"\ud800\u0041"}`,
		`{"scene":"a","x":"\\ud800"}`,
		`{"scene":"a","access_token":"T"}`,
		`{"scene":"100%","page":"/x"}`,
		`{"scene":"a","page":"pages/a?x=1"}`,
		`{"scene":"a","env_version":"beta"}`,
		`{"scene":"a","is_hyaline":1}`,
		`{"scene":"a","width":" 430"}`,
		`{"scene":"a","line_color":[0,0,0]}`,
		`{"path":""}`,
		`{"scene":"a","x":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, endpoint := range []string{pathUnlimited, pathWxacode, pathQRCode} {
			checkCanonical(t, endpoint, body)
		}
	})
}

func FuzzQRCodeQuery(f *testing.F) {
	seeds := []string{
		"scene=a",
		"scene=id%3D5&page=pages/a&width=300",
		"app=wx1&scene=a&page=p/q&width=1280&env_version=trial&check_path=false&auto_color=T&is_hyaline=1",
		"scene=a&width=3e2&page=&env_version=",
		"scene=a&scene=b&foo=bar",
		"",
		"scene=",
		"scene=a%25b",
		"scene=%FF",
		"scene=a&page=/x",
		"scene=a&page=%FF",
		"scene=a&width=100",
		"scene=a&width=430.5",
		"scene=a&width=1e99999999999999999999",
		"scene=a&is_hyaline=maybe",
		"scene=a;b",
		"scene=%zz",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, _ := url.ParseQuery(raw) // what parsed is still a query to serve
		body, canonical, err := FromQuery(q)
		if err != nil {
			var we *wechat.Error
			if !errors.As(err, &we) {
				t.Fatalf("got error %v of type %T, want *wechat.Error", err, err)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("body %q is not valid JSON", body)
		}
		checkCanonical(t, pathUnlimited, body)
		// One pass must give what canonicalizing the body sent upstream
		// gives, or /qrcode and the equivalent POST would not share a key.
		if again, err := Canonical(pathUnlimited, body); err != nil || !bytes.Equal(again, canonical) {
			t.Fatalf("canonical form %q, but body %q canonicalizes to %q (err %v)", canonical, body, again, err)
		}
		var fields map[string]any
		if err := json.Unmarshal(body, &fields); err != nil {
			t.Fatal(err)
		}
		if _, ok := fields["app"]; ok {
			t.Fatalf("body %q carries the app selector", body)
		}
		if w, ok := fields["width"].(float64); ok && (w < minQueryWidth || w > maxQueryWidth) {
			t.Fatalf("body %q has width %v outside %d..%d", body, w, minQueryWidth, maxQueryWidth)
		}
	})
}
