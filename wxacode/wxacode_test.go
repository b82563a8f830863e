package wxacode

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// canonicalOK canonicalizes body for endpoint, failing the test on error.
func canonicalOK(t *testing.T, endpoint, body string) string {
	t.Helper()
	got, err := Canonical(endpoint, []byte(body))
	if err != nil {
		t.Fatalf("Canonical(%s, %s): got error %v, want none", endpoint, body, err)
	}
	return string(got)
}

// errcodeOfRefusal returns the errcode of a *wechat.Error, or 0 when err
// is nil or of another type.
func errcodeOfRefusal(err error) int {
	var we *wechat.Error
	if errors.As(err, &we) {
		return int(we.Code)
	}
	return 0
}

// Short names for the endpoints the tables here are written in.
const (
	pathUnlimited = wechat.PathUnlimited
	pathWxacode   = wechat.PathWxacode
	pathQRCode    = wechat.PathQRCode
)

const defaultsUnlimited = `"auto_color":false,"check_path":true,"env_version":"release","is_hyaline":false,"line_color":{"b":0,"g":0,"r":0}`

func TestCanonicalFormFillsDefaultsAndSortsKeys(t *testing.T) {
	tests := []struct {
		name, endpoint, body, want string
	}{
		{"unlimited minimal", pathUnlimited, `{"scene":"a"}`,
			`{` + defaultsUnlimited + `,"scene":"a","width":430}`},
		{"unlimited everything", pathUnlimited,
			`{"width":"300","scene":"id=7","page":"pages/a/b","check_path":false,"env_version":"trial","auto_color":true,"is_hyaline":true,"line_color":{"r":"255","g":1,"b":"0"}}`,
			`{"auto_color":true,"check_path":false,"env_version":"trial","is_hyaline":true,"line_color":{"b":0,"g":1,"r":255},"page":"pages/a/b","scene":"id=7","width":300}`},
		{"unlimited page empty dropped", pathUnlimited, `{"scene":"a","page":""}`,
			`{` + defaultsUnlimited + `,"scene":"a","width":430}`},
		{"unknown fields kept, sorted recursively", pathUnlimited,
			`{"scene":"a","show_splash_ad":true,"z":{"y":[3,{"b":1.50,"a":null}],"x":"\u00e9\/"}}`,
			`{` + defaultsUnlimited + `,"scene":"a","show_splash_ad":true,"width":430,"z":{"x":"é/","y":[3,{"a":null,"b":1.50}]}}`},
		{"line_color partial and extra keys", pathUnlimited, `{"scene":"a","line_color":{"r":"12","alpha":"0.5"}}`,
			`{"auto_color":false,"check_path":true,"env_version":"release","is_hyaline":false,"line_color":{"alpha":"0.5","b":0,"g":0,"r":12},"scene":"a","width":430}`},
		{"control characters escaped once", pathUnlimited, `{"scene":"a","x":"\t\u0001\"\\<>&\u2028"}`,
			`{` + defaultsUnlimited + `,"scene":"a","width":430,"x":"\t\u0001\"\\<>&` + "\u2028" + `"}`},
		{"wxacode minimal", pathWxacode, `{"path":"pages/a?x=1"}`,
			`{"auto_color":false,"env_version":"release","is_hyaline":false,"line_color":{"b":0,"g":0,"r":0},"path":"pages/a?x=1","width":430}`},
		{"wxacode keeps scene page check_path as unknown", pathWxacode, `{"path":"p","scene":"","page":"/x","check_path":1}`,
			`{"auto_color":false,"check_path":1,"env_version":"release","is_hyaline":false,"line_color":{"b":0,"g":0,"r":0},"page":"/x","path":"p","scene":"","width":430}`},
		{"qrcode minimal", pathQRCode, `{"path":"pages/index?id=3"}`,
			`{"path":"pages/index?id=3","width":430}`},
		{"qrcode keeps style fields as unknown", pathQRCode, `{"path":"p","is_hyaline":1,"env_version":"beta","line_color":"red"}`,
			`{"env_version":"beta","is_hyaline":1,"line_color":"red","path":"p","width":430}`},
		{"width not an integer kept as given", pathUnlimited, `{"scene":"a","width":430.5}`,
			`{` + defaultsUnlimited + `,"scene":"a","width":430.5}`},
		{"width string not an integer kept as given", pathUnlimited, `{"scene":"a","width":"1e999"}`,
			`{` + defaultsUnlimited + `,"scene":"a","width":"1e999"}`},
		{"width out of WeChat's range kept, not refused", pathUnlimited, `{"scene":"a","width":"-100"}`,
			`{` + defaultsUnlimited + `,"scene":"a","width":-100}`},
		{"nulls kept apart", pathUnlimited, `{"scene":"a","page":null,"width":null,"check_path":null,"env_version":null,"auto_color":null,"is_hyaline":null,"line_color":null}`,
			`{"auto_color":null,"check_path":null,"env_version":null,"is_hyaline":null,"line_color":null,"page":null,"scene":"a","width":null}`},
		{"null colour component kept", pathUnlimited, `{"scene":"a","line_color":{"r":null}}`,
			`{"auto_color":false,"check_path":true,"env_version":"release","is_hyaline":false,"line_color":{"b":0,"g":0,"r":null},"scene":"a","width":430}`},
		{"every scene character", pathUnlimited, `{"scene":"09azAZ!#$&'()*+,/:;=?@-._~"}`,
			`{` + defaultsUnlimited + `,"scene":"09azAZ!#$&'()*+,/:;=?@-._~","width":430}`},
		{"scene of 32", pathUnlimited, `{"scene":"` + strings.Repeat("x", 32) + `"}`,
			`{` + defaultsUnlimited + `,"scene":"` + strings.Repeat("x", 32) + `","width":430}`},
		{"wxacode path of 1024", pathWxacode, `{"path":"` + strings.Repeat("p", 1024) + `"}`,
			`{"auto_color":false,"env_version":"release","is_hyaline":false,"line_color":{"b":0,"g":0,"r":0},"path":"` + strings.Repeat("p", 1024) + `","width":430}`},
		{"qrcode path of 128", pathQRCode, `{"path":"` + strings.Repeat("p", 128) + `"}`,
			`{"path":"` + strings.Repeat("p", 128) + `","width":430}`},
		{"escaped backslash before u is not an escape", pathUnlimited, `{"scene":"a","x":"\\ud800"}`,
			`{` + defaultsUnlimited + `,"scene":"a","width":430,"x":"\\ud800"}`},
		{"surrogate pair accepted", pathUnlimited, `{"scene":"a","x":"\ud83d\ude00"}`,
			`{` + defaultsUnlimited + `,"scene":"a","width":430,"x":"😀"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := canonicalOK(t, tt.endpoint, tt.body)
			if got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			if again := canonicalOK(t, tt.endpoint, got); again != got {
				t.Errorf("canonical form not stable: got %s, want %s", again, got)
			}
		})
	}
}

func TestCanonicalRefusesWhatWeChatRefuses(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	deep := `{"scene":"a","x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`
	tests := []struct {
		name, endpoint, body string
		errcode              int
	}{
		// 47001: not one JSON object.
		{"empty body", pathUnlimited, ``, 47001},
		{"truncated", pathUnlimited, `{"scene":`, 47001},
		{"null", pathUnlimited, `null`, 47001},
		{"array", pathUnlimited, `[{"scene":"a"}]`, 47001},
		{"string", pathUnlimited, `"scene"`, 47001},
		{"number", pathUnlimited, `42`, 47001},
		{"trailing garbage", pathUnlimited, `{"scene":"a"}x`, 47001},
		{"second object", pathUnlimited, `{"scene":"a"} {}`, 47001},
		{"trailing comma", pathUnlimited, `{"scene":"a",}`, 47001},
		{"byte order mark", pathUnlimited, "\ufeff{\"scene\":\"a\"}", 47001},
		{"single quotes", pathUnlimited, `{'scene':'a'}`, 47001},
		{"too deep", pathUnlimited, deep, 47001},
		// 47001: keys and strings that would not have one meaning.
		{"duplicate key", pathUnlimited, `{"scene":"a","scene":"b"}`, 47001},
		{"duplicate key by escape", pathUnlimited, `{"scene":"a","\u0073cene":"a"}`, 47001},
		{"duplicate in line_color", pathUnlimited, `{"scene":"a","line_color":{"r":1,"r":2}}`, 47001},
		{"duplicate in unknown field", pathUnlimited, `{"scene":"a","x":[{"k":1,"k":1}]}`, 47001},
		{"invalid UTF-8", pathUnlimited, "{\"scene\":\"a\",\"x\":\"\xff\"}", 47001},
		{"lone high surrogate", pathUnlimited, `{"scene":"a","x":"\ud800"}`, 47001},
		{"lone low surrogate", pathUnlimited, `{"scene":"a","x":"\udc00"}`, 47001},
		{"high surrogate then letter", pathUnlimited, `{"scene":"a","x":"\ud800\u0041"}`, 47001},
		{"escaped backslash then lone surrogate", pathUnlimited, `{"scene":"a","x":"\\\ud800"}`, 47001},
		{"high surrogate then escaped backslash", pathUnlimited, `{"scene":"a","x":"\ud800\\"}`, 47001},
		{"two high surrogates", pathUnlimited, `{"scene":"a","x":"\ud800\ud800\udc00"}`, 47001},
		// 47001: a token in the body.
		{"access_token unlimited", pathUnlimited, `{"scene":"a","access_token":"T"}`, 47001},
		{"access_token wxacode", pathWxacode, `{"path":"p","access_token":"T"}`, 47001},
		{"access_token qrcode", pathQRCode, `{"path":"p","access_token":null}`, 47001},
		// 47001: wrong types.
		{"scene number", pathUnlimited, `{"scene":123}`, 47001},
		{"scene bool", pathUnlimited, `{"scene":true}`, 47001},
		{"scene object", pathUnlimited, `{"scene":{}}`, 47001},
		{"page number", pathUnlimited, `{"scene":"a","page":1}`, 47001},
		{"page array", pathUnlimited, `{"scene":"a","page":["p"]}`, 47001},
		{"check_path number", pathUnlimited, `{"scene":"a","check_path":1}`, 47001},
		{"check_path string", pathUnlimited, `{"scene":"a","check_path":"true"}`, 47001},
		{"auto_color number", pathUnlimited, `{"scene":"a","auto_color":0}`, 47001},
		{"is_hyaline number", pathUnlimited, `{"scene":"a","is_hyaline":1}`, 47001},
		{"is_hyaline string", pathUnlimited, `{"scene":"a","is_hyaline":"true"}`, 47001},
		{"wxacode is_hyaline number", pathWxacode, `{"path":"p","is_hyaline":1}`, 47001},
		{"env_version number", pathUnlimited, `{"scene":"a","env_version":1}`, 47001},
		{"env_version bool", pathWxacode, `{"path":"p","env_version":true}`, 47001},
		{"width word", pathUnlimited, `{"scene":"a","width":"wide"}`, 47001},
		{"width padded", pathUnlimited, `{"scene":"a","width":" 430"}`, 47001},
		{"width plus sign", pathUnlimited, `{"scene":"a","width":"+430"}`, 47001},
		{"width hex", pathUnlimited, `{"scene":"a","width":"0x1AE"}`, 47001},
		{"width leading zero", pathUnlimited, `{"scene":"a","width":"0430"}`, 47001},
		{"width with unit", pathUnlimited, `{"scene":"a","width":"430px"}`, 47001},
		{"width empty string", pathUnlimited, `{"scene":"a","width":""}`, 47001},
		{"width bool", pathUnlimited, `{"scene":"a","width":true}`, 47001},
		{"width object", pathUnlimited, `{"scene":"a","width":{}}`, 47001},
		{"qrcode width word", pathQRCode, `{"path":"p","width":"wide"}`, 47001},
		{"wxacode width array", pathWxacode, `{"path":"p","width":[430]}`, 47001},
		{"line_color string", pathUnlimited, `{"scene":"a","line_color":"0,0,0"}`, 47001},
		{"line_color array", pathUnlimited, `{"scene":"a","line_color":[0,0,0]}`, 47001},
		{"line_color number", pathWxacode, `{"path":"p","line_color":0}`, 47001},
		{"colour word", pathUnlimited, `{"scene":"a","line_color":{"r":"red"}}`, 47001},
		{"colour bool", pathUnlimited, `{"scene":"a","line_color":{"g":true}}`, 47001},
		{"colour empty string", pathUnlimited, `{"scene":"a","line_color":{"b":""}}`, 47001},
		// 40169, 40129: scene.
		{"scene missing", pathUnlimited, `{"page":"pages/a"}`, 40169},
		{"scene null", pathUnlimited, `{"scene":null}`, 40169},
		{"scene empty", pathUnlimited, `{"scene":""}`, 40169},
		{"scene of 33", pathUnlimited, `{"scene":"` + long(33) + `"}`, 40169},
		{"long scene of bad characters: length first", pathUnlimited, `{"scene":"` + strings.Repeat("%", 33) + `"}`, 40169},
		{"11 Chinese characters are 33 bytes", pathUnlimited, `{"scene":"` + strings.Repeat("码", 11) + `"}`, 40169},
		{"scene percent", pathUnlimited, `{"scene":"100%"}`, 40129},
		{"scene space", pathUnlimited, `{"scene":"a b"}`, 40129},
		{"scene quote", pathUnlimited, `{"scene":"a\"b"}`, 40129},
		{"scene backslash", pathUnlimited, `{"scene":"a\\b"}`, 40129},
		{"scene caret", pathUnlimited, `{"scene":"a^b"}`, 40129},
		{"scene Chinese", pathUnlimited, `{"scene":"码"}`, 40129},
		{"scene NUL", pathUnlimited, `{"scene":"a\u0000"}`, 40129},
		// 41030: page.
		{"page leading slash", pathUnlimited, `{"scene":"a","page":"/pages/a"}`, 41030},
		{"page query", pathUnlimited, `{"scene":"a","page":"pages/a?x=1"}`, 41030},
		{"page only question mark", pathUnlimited, `{"scene":"a","page":"?"}`, 41030},
		// 40097: env_version.
		{"env_version unknown", pathUnlimited, `{"scene":"a","env_version":"beta"}`, 40097},
		{"env_version capitalized", pathUnlimited, `{"scene":"a","env_version":"Release"}`, 40097},
		{"env_version empty", pathUnlimited, `{"scene":"a","env_version":""}`, 40097},
		{"wxacode env_version unknown", pathWxacode, `{"path":"p","env_version":"prod"}`, 40097},
		// 40159: path.
		{"wxacode path missing", pathWxacode, `{"width":430}`, 40159},
		{"wxacode path empty", pathWxacode, `{"path":""}`, 40159},
		{"wxacode path null", pathWxacode, `{"path":null}`, 40159},
		{"wxacode path number", pathWxacode, `{"path":1}`, 47001},
		{"wxacode path of 1025", pathWxacode, `{"path":"` + long(1025) + `"}`, 40159},
		{"qrcode path missing", pathQRCode, `{}`, 40159},
		{"qrcode path of 129", pathQRCode, `{"path":"` + long(129) + `"}`, 40159},
		{"qrcode path object", pathQRCode, `{"path":{}}`, 47001},
		// Order: types first, then scene, page, path, env_version.
		{"type error before scene", pathUnlimited, `{"scene":"","is_hyaline":1}`, 47001},
		{"scene length before page", pathUnlimited, `{"scene":"","page":"/x"}`, 40169},
		{"scene characters before page", pathUnlimited, `{"scene":"%","page":"/x"}`, 40129},
		{"page before env_version", pathUnlimited, `{"scene":"a","page":"/x","env_version":"x"}`, 41030},
		{"path before env_version", pathWxacode, `{"path":"","env_version":"x"}`, 40159},
		{"type error before path", pathWxacode, `{"is_hyaline":1}`, 47001},
		{"path type before env_version", pathWxacode, `{"path":3,"env_version":"x"}`, 47001},
		// Not a code endpoint.
		{"unknown endpoint", "/wxa/getwxacodeunlimit/", `{"scene":"a"}`, 40066},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Canonical(tt.endpoint, []byte(tt.body))
			if got != nil {
				t.Errorf("got canonical form %s, want none", got)
			}
			if code := errcodeOfRefusal(err); code != tt.errcode {
				t.Errorf("got error %v (errcode %d), want errcode %d", err, code, tt.errcode)
			}
		})
	}
}

func TestRequestErrorSpeaksLikeWeChat(t *testing.T) {
	tests := []struct {
		body    string
		errcode int
		errmsg  string
	}{
		{`{`, 47001, "data format error"},
		{`{"scene":""}`, 40169, "invalid length for scene, or the data is not json string"},
		{`{"scene":"%"}`, 40129, "invalid scene"},
		{`{"scene":"a","page":"/a"}`, 41030, "invalid page"},
		{`{"scene":"a","env_version":"x"}`, 40097, "invalid args"},
	}
	for _, tt := range tests {
		_, err := Canonical(pathUnlimited, []byte(tt.body))
		var we *wechat.Error
		if !errors.As(err, &we) {
			t.Fatalf("%s: got error %v of type %T, want *wechat.Error", tt.body, err, err)
		}
		if int(we.Code) != tt.errcode || we.Msg != tt.errmsg {
			t.Errorf("%s: got %d %q, want %d %q", tt.body, we.Code, we.Msg, tt.errcode, tt.errmsg)
		}
		if we.Status != http.StatusOK || we.RetryAfter != 0 {
			t.Errorf("%s: got status %d, Retry-After %v, want 200 as WeChat sends it and none", tt.body, we.Status, we.RetryAfter)
		}
		if got, want := err.Error(), fmt.Sprintf("wechat: errcode %d: %s", tt.errcode, tt.errmsg); got != want {
			t.Errorf("got Error() %q, want %q", got, want)
		}
	}
	_, err := Canonical(pathQRCode, []byte(`{}`))
	if we := (*wechat.Error)(nil); !errors.As(err, &we) || we.Msg != "invalid length for path, or the data is not json string" {
		t.Errorf("qrcode without path: got %v, want 40159 with WeChat's errmsg", err)
	}
	_, err = Canonical("/wxa/msg_sec_check", []byte(`{"scene":"a"}`))
	if we := (*wechat.Error)(nil); !errors.As(err, &we) || we.Code != wechat.InvalidURL || we.Msg != "invalid url" {
		t.Errorf("not a code endpoint: got %v, want 40066 invalid url", err)
	}
}

func TestEquivalentRequestsShareCanonicalForm(t *testing.T) {
	tests := []struct {
		name, endpoint, a, b string
	}{
		{"reordered keys", pathUnlimited, `{"scene":"a","page":"pages/x","width":300}`, `{"width":300,"page":"pages/x","scene":"a"}`},
		{"whitespace", pathUnlimited, `{"scene":"a","page":"pages/x"}`, " \n{ \"scene\" :\t\"a\" ,\r\n \"page\" : \"pages/x\" }\n\n"},
		{"explicit width 430", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","width":430}`},
		{"explicit check_path true", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","check_path":true}`},
		{"explicit env_version release", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","env_version":"release"}`},
		{"explicit auto_color false", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","auto_color":false}`},
		{"explicit is_hyaline false", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","is_hyaline":false}`},
		{"explicit line_color 0 0 0", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","line_color":{"r":0,"g":0,"b":0}}`},
		{"page empty", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","page":""}`},
		{"all defaults spelled out", pathUnlimited, `{"scene":"a"}`,
			`{"scene":"a","page":"","width":430,"check_path":true,"env_version":"release","auto_color":false,"is_hyaline":false,"line_color":{"r":0,"g":0,"b":0}}`},
		{"line_color strings", pathUnlimited, `{"scene":"a","line_color":{"r":0,"g":0,"b":0}}`, `{"scene":"a","line_color":{"r":"0","g":"0","b":"0"}}`},
		{"line_color partial", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","line_color":{"g":"0"}}`},
		{"line_color empty object", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","line_color":{}}`},
		{"line_color minus zero", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","line_color":{"r":-0,"g":"-0.0","b":0e5}}`},
		{"line_color spellings of 255", pathUnlimited, `{"scene":"a","line_color":{"r":255}}`, `{"scene":"a","line_color":{"r":"2.55e2"}}`},
		{"line_color extra keys reordered", pathUnlimited, `{"scene":"a","line_color":{"a":1,"z":2}}`, `{"scene":"a","line_color":{"z":2,"a":1,"r":0}}`},
		{"width string", pathUnlimited, `{"scene":"a","width":430}`, `{"scene":"a","width":"430"}`},
		{"width 430.0", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","width":430.0}`},
		{"width exponent", pathUnlimited, `{"scene":"a","width":300}`, `{"scene":"a","width":3E2}`},
		{"width negative exponent", pathUnlimited, `{"scene":"a","width":300}`, `{"scene":"a","width":"30000e-2"}`},
		{"width huge exponent of zero", pathUnlimited, `{"scene":"a","line_color":{"r":0}}`, `{"scene":"a","line_color":{"r":0e99999999999999999999}}`},
		{"replacement character escaped", pathUnlimited, `{"scene":"a","x":"\ufffd"}`, `{"scene":"a","x":"` + "\uFFFD" + `"}`},
		{"string escapes", pathUnlimited, `{"scene":"a/b","x":"é"}`, `{"\u0073cene":"a\/b","x":"\u00e9"}`},
		{"unknown nested reordered", pathUnlimited, `{"scene":"a","x":{"b":[1,{"d":1,"c":2}],"a":2}}`, `{"scene":"a","x":{"a":2,"b":[1,{"c":2,"d":1}]}}`},
		{"wxacode defaults", pathWxacode, `{"path":"p?x=1"}`,
			`{"path":"p?x=1","width":"430","env_version":"release","auto_color":false,"is_hyaline":false,"line_color":{"r":"0","g":0,"b":0}}`},
		{"qrcode width", pathQRCode, `{"path":"p"}`, `{"width":"430","path":"p"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := canonicalOK(t, tt.endpoint, tt.a), canonicalOK(t, tt.endpoint, tt.b)
			if a != b {
				t.Errorf("got %s\n and %s, want the same", a, b)
			}
		})
	}
}

func TestDifferentRequestsHaveDifferentCanonicalForms(t *testing.T) {
	tests := []struct {
		name, endpoint, a, b string
	}{
		{"width 431", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","width":431}`},
		{"width not an integer", pathUnlimited, `{"scene":"a","width":430}`, `{"scene":"a","width":430.5}`},
		{"width fraction number or string", pathUnlimited, `{"scene":"a","width":430.5}`, `{"scene":"a","width":"430.5"}`},
		{"width null", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","width":null}`},
		{"page a or b", pathUnlimited, `{"scene":"a","page":"a"}`, `{"scene":"a","page":"b"}`},
		{"page or none", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","page":"pages/index/index"}`},
		{"page null", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","page":null}`},
		{"scene case", pathUnlimited, `{"scene":"a"}`, `{"scene":"A"}`},
		{"unknown field present", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","show_splash_ad":false}`},
		{"unknown field value", pathUnlimited, `{"scene":"a","show_splash_ad":true}`, `{"scene":"a","show_splash_ad":false}`},
		{"unknown field number spelling", pathUnlimited, `{"scene":"a","x":1}`, `{"scene":"a","x":1.0}`},
		{"unknown field number or string", pathUnlimited, `{"scene":"a","x":1}`, `{"scene":"a","x":"1"}`},
		{"unknown array order", pathUnlimited, `{"scene":"a","x":[1,2]}`, `{"scene":"a","x":[2,1]}`},
		{"check_path false", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","check_path":false}`},
		{"env_version trial", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","env_version":"trial"}`},
		{"auto_color true", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","auto_color":true}`},
		{"is_hyaline true", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","is_hyaline":true}`},
		{"line_color red", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","line_color":{"r":1}}`},
		{"line_color extra key", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","line_color":{"a":0}}`},
		{"line_color null", pathUnlimited, `{"scene":"a"}`, `{"scene":"a","line_color":null}`},
		{"large widths apart", pathUnlimited, `{"scene":"a","width":1e30}`, `{"scene":"a","width":1e31}`},
		{"wxacode path", pathWxacode, `{"path":"p?x=1"}`, `{"path":"p?x=2"}`},
		{"wxacode scene kept", pathWxacode, `{"path":"p"}`, `{"path":"p","scene":"a"}`},
		{"qrcode is_hyaline kept", pathQRCode, `{"path":"p"}`, `{"path":"p","is_hyaline":false}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := canonicalOK(t, tt.endpoint, tt.a), canonicalOK(t, tt.endpoint, tt.b)
			if a == b {
				t.Errorf("both are %s, want different forms", a)
			}
		})
	}
}

func TestCanonicalIntegerIsExact(t *testing.T) {
	tests := []struct {
		in              string
		canon           string
		isNumber, isInt bool
	}{
		{"0", "0", true, true},
		{"-0", "0", true, true},
		{"430", "430", true, true},
		{"-430", "-430", true, true},
		{"430.000", "430", true, true},
		{"4.3e2", "430", true, true},
		{"4.3E+2", "430", true, true},
		{"43000e-2", "430", true, true},
		{"0.0e-5", "0", true, true},
		{"999999999999999999", "999999999999999999", true, true},
		{"1e17", "100000000000000000", true, true},
		{"1e18", "", true, false},
		{"1000000000000000000", "", true, false},
		{"430.5", "", true, false},
		{"430.00000000000000000001", "", true, false},
		{"1e-1", "", true, false},
		{"1e99999999999999999999999", "", true, false},
		{"1e-99999999999999999999999", "", true, false},
		{"", "", false, false},
		{"-", "", false, false},
		{"01", "", false, false},
		{"1.", "", false, false},
		{".5", "", false, false},
		{"1e", "", false, false},
		{"1e+", "", false, false},
		{"+1", "", false, false},
		{" 1", "", false, false},
		{"1 ", "", false, false},
		{"NaN", "", false, false},
		{"Infinity", "", false, false},
	}
	for _, tt := range tests {
		canon, isNumber, isInt := canonicalInteger(tt.in)
		if canon != tt.canon || isNumber != tt.isNumber || isInt != tt.isInt {
			t.Errorf("canonicalInteger(%q): got %q %v %v, want %q %v %v", tt.in, canon, isNumber, isInt, tt.canon, tt.isNumber, tt.isInt)
		}
	}
}

func TestQRCodeQueryMatchesEquivalentPost(t *testing.T) {
	tests := []struct {
		name, query, post string
	}{
		{"scene only", "scene=a", `{"scene":"a"}`},
		{"escaped scene, page, width", "scene=id%3D5&page=pages/a&width=300", `{"page":"pages/a","scene":"id=5","width":300}`},
		{"every parameter", "scene=a&page=p/q&width=1280&env_version=trial&check_path=false&auto_color=T&is_hyaline=1",
			`{"scene":"a","page":"p/q","width":"1280","env_version":"trial","check_path":false,"auto_color":true,"is_hyaline":true}`},
		{"defaults spelled out", "scene=a&width=430&env_version=release&check_path=TRUE&auto_color=0&is_hyaline=f", `{"scene":"a"}`},
		{"empty values are defaults", "scene=a&page=&width=&env_version=&check_path=&is_hyaline=", `{"scene":"a"}`},
		{"app and unknown parameters ignored", "app=wx123&scene=a&foo=bar&line_color=red&access_token=T", `{"scene":"a"}`},
		{"width at the bounds", "scene=a&width=280", `{"scene":"a","width":"280"}`},
		{"width spelled as exponent", "scene=a&width=3e2", `{"scene":"a","width":300}`},
		{"plus in scene", "scene=a%2Bb", `{"scene":"a+b"}`},
		{"first of repeated values", "scene=a&scene=b", `{"scene":"a"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			body, canonical, err := FromQuery(q)
			if err != nil {
				t.Fatalf("FromQuery(%s): got error %v, want none", tt.query, err)
			}
			if got, want := string(canonical), canonicalOK(t, pathUnlimited, tt.post); got != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
			if got, want := string(canonical), canonicalOK(t, pathUnlimited, string(body)); got != want {
				t.Errorf("canonical form %s, but the body sent upstream, %s, canonicalizes to %s", got, body, want)
			}
		})
	}
}

func TestQRCodeQueryForwardsOnlyWhatWasAsked(t *testing.T) {
	q, _ := url.ParseQuery("app=x&scene=id%3D5&width=300&is_hyaline=true&page=pages/a")
	body, _, err := FromQuery(q)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"is_hyaline":true,"page":"pages/a","scene":"id=5","width":300}`; string(body) != want {
		t.Errorf("got body %s, want %s", body, want)
	}
}

func TestQRCodeQueryRefusesBadParameters(t *testing.T) {
	tests := []struct {
		query   string
		errcode int
	}{
		{"", 40169},
		{"scene=", 40169},
		{"page=pages/a", 40169},
		{"scene=" + strings.Repeat("a", 33), 40169},
		{"scene=a%25b", 40129},
		{"scene=a+b", 40129}, // + is a space in a query
		{"scene=%FF", 40129},
		{"scene=" + strings.Repeat("%FF", 33), 40169},
		{"scene=a&page=/x", 41030},
		{"scene=a&page=a%3Fb", 41030},
		{"scene=a&page=%FF", 47001},
		{"scene=a&width=100", 40097},
		{"scene=a&width=279", 40097},
		{"scene=a&width=1281", 40097},
		{"scene=a&width=2000", 40097},
		{"scene=a&width=-430", 40097},
		{"scene=a&width=430.5", 40097},
		{"scene=a&width=1e30", 40097},
		{"scene=a&width=wide", 40097},
		{"scene=a&width=x", 40097},
		{"scene=a&width=+430", 40097},
		{"scene=a&width=%20430", 40097},
		{"scene=a&env_version=beta", 40097},
		{"scene=a&env_version=%FF", 47001},
		{"scene=a&is_hyaline=maybe", 47001},
		{"scene=a&check_path=yes", 47001},
		{"scene=a&auto_color=2", 47001},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			body, canonical, err := FromQuery(q)
			if body != nil || canonical != nil {
				t.Errorf("got body %s, canonical form %s, want none", body, canonical)
			}
			if code := errcodeOfRefusal(err); code != tt.errcode {
				t.Errorf("got error %v (errcode %d), want errcode %d", err, code, tt.errcode)
			}
		})
	}
}

func TestCanonicalDoesNotAlterItsInput(t *testing.T) {
	body := []byte(`{"scene":"a","page":"","line_color":{"r":"1"}}`)
	orig := bytes.Clone(body)
	if _, err := Canonical(pathUnlimited, body); err != nil || !bytes.Equal(body, orig) {
		t.Errorf("got body %s after canonicalizing (err %v), want %s", body, err, orig)
	}
}

func BenchmarkCanonicalCodeRequest(b *testing.B) {
	body := []byte(`{"scene":"id=12345&src=poster","page":"pages/goods/detail","width":"430","check_path":false,"env_version":"release","is_hyaline":true,"line_color":{"r":"0","g":"0","b":"0"},"show_splash_ad":false}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := Canonical(pathUnlimited, body); err != nil {
			b.Fatal(err)
		}
	}
}

func TestKeyOfHashesVersionAppEndpointAndCanonicalForm(t *testing.T) {
	canonical := []byte(`{"scene":"a"}`)
	// The layout is a contract with every entry already in a shared tier:
	// changing it without bumping KeyVersion would mix old and new.
	layout := slices.Concat([]byte{KeyVersion}, []byte("wxapp"), []byte{0},
		[]byte(pathUnlimited), []byte{0}, canonical)
	if got, want := KeyOf("wxapp", pathUnlimited, canonical), sha256.Sum256(layout); got != want {
		t.Errorf("got key %x, want sha256 of version, app, 0, endpoint, 0, canonical form: %x", got, want)
	}
	if KeyVersion != 1 {
		t.Errorf("got KeyVersion %d, want 1 (bump it, and this test, when the canonical form changes)", KeyVersion)
	}
}

func TestKeyOfKeepsItsPartsApart(t *testing.T) {
	base := KeyOf("wxapp", pathWxacode, []byte(`{"path":"p"}`))
	tests := []struct {
		name, app, endpoint, canonical string
	}{
		{"another app", "wxother", pathWxacode, `{"path":"p"}`},
		{"another endpoint", "wxapp", pathQRCode, `{"path":"p"}`},
		{"another request", "wxapp", pathWxacode, `{"path":"q"}`},
		{"app and endpoint split elsewhere", "wxapp/", "wxa/getwxacode", `{"path":"p"}`},
		{"endpoint and request split elsewhere", "wxapp", pathWxacode + "{", `"path":"p"}`},
	}
	for _, tt := range tests {
		if got := KeyOf(tt.app, tt.endpoint, []byte(tt.canonical)); got == base {
			t.Errorf("%s: got the same key %x, want another", tt.name, got)
		}
	}
	if again := KeyOf("wxapp", pathWxacode, []byte(`{"path":"p"}`)); again != base {
		t.Errorf("got %x, then %x for the same request, want one key", base, again)
	}
}

// BenchmarkFromQuery is GET /qrcode's request on a miss of the alias-free
// path: the query read, validated and canonicalized in one pass.
func BenchmarkFromQuery(b *testing.B) {
	q, err := url.ParseQuery("scene=id%3D12345&page=pages/goods/detail&width=430&check_path=false&is_hyaline=true")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := FromQuery(q); err != nil {
			b.Fatal(err)
		}
	}
}
