package wxacode

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

var linkNow = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func linkKey(t *testing.T, endpoint, body string) string {
	t.Helper()
	canon, _, err := LinkCanonical(endpoint, []byte(body), linkNow)
	if err != nil {
		t.Fatalf("%s %s: %v", endpoint, body, err)
	}
	return string(canon)
}

func TestLinkSpellingsShareOneKey(t *testing.T) {
	in3days := strconv.FormatInt(linkNow.Add(72*time.Hour).Unix(), 10)
	for _, tc := range []struct {
		endpoint string
		same     []string
	}{
		{wechat.PathScheme, []string{
			`{"jump_wxa":{"path":"pages/index/index","query":"a=1"}}`,
			`{ "jump_wxa" : { "query":"a=1", "path":"pages/index/index" } }`,
			`{"jump_wxa":{"path":"pages/index/index","query":"a=1","env_version":"release"},"expire_type":0}`,
			`{"is_expire":true,"jump_wxa":{"path":"pages/index/index","query":"a=1","env_version":"release"}}`,
			`{"is_expire":false,"jump_wxa":{"path":"pages/index/index","query":"a=1"},"expire_type":0.0}`,
		}},
		{wechat.PathScheme, []string{`{}`, `{"jump_wxa":{"env_version":"release"}}`, `{"expire_type":0}`}},
		{wechat.PathScheme, []string{
			`{"jump_wxa":{"path":"p"},"expire_type":0,"expire_time":` + in3days + `}`,
			`{"expire_time":` + in3days + `,"jump_wxa":{"path":"p","env_version":"release"}}`,
		}},
		{wechat.PathURLLink, []string{
			`{"path":"pages/a/a","query":"x=1"}`,
			`{"query":"x=1","path":"pages/a/a","env_version":"release","expire_type":0,"is_expire":true}`,
		}},
		{wechat.PathShortLink, []string{
			`{"page_url":"pages/a/a?x=1"}`,
			`{"page_url":"pages/a/a?x=1","page_title":"","is_permanent":false}`,
		}},
		{wechat.PathNFCScheme, []string{
			`{"model_id":"m1","jump_wxa":{"path":"p"}}`,
			`{"jump_wxa":{"path":"p","env_version":"release"},"model_id":"m1"}`,
		}},
	} {
		want := linkKey(t, tc.endpoint, tc.same[0])
		for _, body := range tc.same[1:] {
			if got := linkKey(t, tc.endpoint, body); got != want {
				t.Errorf("%s: %s\n  is %s\n  want %s (as %s)", tc.endpoint, body, got, want, tc.same[0])
			}
		}
	}
}

func TestLinkDifferencesKeepKeysApart(t *testing.T) {
	in3days := strconv.FormatInt(linkNow.Add(72*time.Hour).Unix(), 10)
	for _, tc := range []struct {
		endpoint string
		a, b     string
	}{
		{wechat.PathScheme, `{"jump_wxa":{"query":"a=1"}}`, `{"jump_wxa":{"query":"a=2"}}`},
		{wechat.PathScheme, `{"jump_wxa":{"env_version":"trial"}}`, `{}`},
		{wechat.PathScheme, `{"expire_type":1,"expire_interval":3}`, `{"expire_type":1,"expire_interval":4}`},
		// An expiry field the type does not use stays in the key.
		{wechat.PathScheme, `{"expire_type":1,"expire_interval":3}`, `{"expire_type":1,"expire_interval":3,"expire_time":` + in3days + `}`},
		// Unknown fields are kept.
		{wechat.PathScheme, `{}`, `{"show_splash_ad":true}`},
		{wechat.PathURLLink, `{"path":"a"}`, `{"path":"a","cloud_base":{"env":"e"}}`},
		// A page_title is not cut.
		{wechat.PathShortLink, `{"page_url":"a","page_title":"` + strings.Repeat("t", 20) + `"}`,
			`{"page_url":"a","page_title":"` + strings.Repeat("t", 21) + `"}`},
		{wechat.PathShortLink, `{"page_url":"a"}`, `{"page_url":"a","is_permanent":true}`},
		{wechat.PathNFCScheme, `{"model_id":"m"}`, `{"model_id":"m","sn":"1"}`},
	} {
		if linkKey(t, tc.endpoint, tc.a) == linkKey(t, tc.endpoint, tc.b) {
			t.Errorf("%s: %s and %s share a key", tc.endpoint, tc.a, tc.b)
		}
	}
}

func TestLinkRefusalsAreWeChats(t *testing.T) {
	ms := strconv.FormatInt(linkNow.Add(72*time.Hour).UnixMilli(), 10)
	soon := strconv.FormatInt(linkNow.Add(30*time.Second).Unix(), 10)
	late := strconv.FormatInt(linkNow.Add(31*24*time.Hour).Unix(), 10)
	for _, tc := range []struct {
		endpoint, body string
		want           wechat.Errcode
	}{
		{wechat.PathScheme, `{"jump_wxa":"p"}`, wechat.DataFormat},
		{wechat.PathScheme, `{"jump_wxa":{"path":1}}`, wechat.DataFormat},
		{wechat.PathScheme, `{"expire_type":"0"}`, wechat.DataFormat},
		{wechat.PathScheme, `{"expire_time":1.5}`, wechat.DataFormat},
		{wechat.PathScheme, `{"is_expire":1}`, wechat.DataFormat},
		{wechat.PathScheme, `{} {}`, wechat.DataFormat},
		{wechat.PathScheme, `{"a":1,"a":2}`, wechat.DataFormat},
		{wechat.PathScheme, `{"access_token":"x"}`, wechat.DataFormat},
		{wechat.PathScheme, `{"expire_time":` + ms + `}`, wechat.InvalidExpiry},
		{wechat.PathScheme, `{"expire_time":` + soon + `}`, wechat.InvalidExpiry},
		{wechat.PathScheme, `{"expire_time":` + late + `}`, wechat.InvalidExpiry},
		{wechat.PathScheme, `{"expire_time":-1}`, wechat.InvalidExpiry},
		{wechat.PathScheme, `{"expire_time":1e40}`, wechat.InvalidExpiry},
		{wechat.PathScheme, `{"expire_type":1,"expire_interval":31}`, wechat.InvalidExpiry},
		{wechat.PathScheme, `{"expire_type":1,"expire_interval":0}`, wechat.InvalidExpiry},
		{wechat.PathScheme, `{"expire_type":2}`, wechat.InvalidExpiry},
		{wechat.PathScheme, `{"jump_wxa":{"env_version":"prod"}}`, wechat.InvalidEnvVersion},
		{wechat.PathScheme, `{"jump_wxa":{"query":"a=1 b"}}`, wechat.InvalidLinkQuery},
		{wechat.PathScheme, `{"jump_wxa":{"query":"` + strings.Repeat("a", 1025) + `"}}`, wechat.InvalidLinkQuery},
		{wechat.PathURLLink, `{"query":"中"}`, wechat.InvalidLinkQuery},
		{wechat.PathURLLink, `{"env_version":""}`, wechat.InvalidEnvVersion},
		{wechat.PathURLLink, `{"cloud_base":"x"}`, wechat.DataFormat},
		{wechat.PathURLLink, `{"expire_type":1,"expire_interval":31}`, wechat.InvalidExpiry},
		{wechat.PathShortLink, `{}`, wechat.InvalidURL},
		{wechat.PathShortLink, `{"page_url":"a b"}`, wechat.InvalidURL},
		{wechat.PathShortLink, `{"page_url":"` + strings.Repeat("a", 1025) + `"}`, wechat.InvalidURL},
		{wechat.PathShortLink, `{"page_url":"a","is_permanent":"true"}`, wechat.DataFormat},
		{wechat.PathNFCScheme, `{"jump_wxa":{"path":"p"}}`, wechat.InvalidNFCModel},
		{wechat.PathNFCScheme, `{"model_id":""}`, wechat.InvalidNFCModel},
		{wechat.PathUnlimited, `{"scene":"a"}`, wechat.InvalidURL},
	} {
		_, _, err := LinkCanonical(tc.endpoint, []byte(tc.body), linkNow)
		var we *wechat.Error
		if !errors.As(err, &we) || we.Code != tc.want || we.Status != 200 {
			t.Errorf("%s %.80s: %v, want errcode %d with HTTP 200", tc.endpoint, tc.body, err, tc.want)
		}
	}
	// The edges of the ranges are WeChat's own, and accepted.
	for _, body := range []string{
		`{"expire_time":` + strconv.FormatInt(linkNow.Add(time.Minute).Unix(), 10) + `}`,
		`{"expire_time":` + strconv.FormatInt(linkNow.Add(30*24*time.Hour).Unix(), 10) + `}`,
		`{"expire_type":1,"expire_interval":1}`, `{"expire_type":1,"expire_interval":30}`,
		`{"jump_wxa":{"query":"` + strings.Repeat("a", 1024) + `"}}`,
		`{"jump_wxa":{"query":"a=%E4%B8%AD&b=!#$&'()*+,/:;=?@-._~"}}`,
	} {
		if _, _, err := LinkCanonical(wechat.PathScheme, []byte(body), linkNow); err != nil {
			t.Errorf("%.80s: %v, want accepted", body, err)
		}
	}
}

func TestLinkLife(t *testing.T) {
	const margin, maxAge = 10 * time.Minute, 24 * time.Hour
	at := func(d time.Duration) string { return strconv.FormatInt(linkNow.Add(d).Unix(), 10) }
	for _, tc := range []struct {
		endpoint, body string
		keep           bool
		until          time.Time // zero with keep: permanent
	}{
		{wechat.PathScheme, `{"expire_time":` + at(72*time.Hour) + `}`, true, linkNow.Add(72*time.Hour - margin)},
		{wechat.PathScheme, `{"expire_time":` + at(2*time.Minute) + `}`, false, time.Time{}},
		{wechat.PathScheme, `{"expire_time":` + at(10*time.Minute) + `}`, false, time.Time{}},
		{wechat.PathScheme, `{"expire_time":` + at(20*time.Minute) + `}`, true, linkNow.Add(10 * time.Minute)},
		{wechat.PathScheme, `{}`, true, linkNow.Add(maxAge)},
		{wechat.PathURLLink, `{"expire_type":1,"expire_interval":1}`, true, linkNow.Add(24*time.Hour - margin)},
		{wechat.PathURLLink, `{"expire_type":1,"expire_interval":7}`, true, linkNow.Add(maxAge)},
		// The unused field stays in the key but sets nothing.
		{wechat.PathURLLink, `{"expire_type":1,"expire_interval":1,"expire_time":` + at(72*time.Hour) + `}`, true, linkNow.Add(24*time.Hour - margin)},
		{wechat.PathShortLink, `{"page_url":"a"}`, true, linkNow.Add(maxAge)},
		{wechat.PathShortLink, `{"page_url":"a","is_permanent":true}`, true, time.Time{}},
		{wechat.PathNFCScheme, `{"model_id":"m"}`, true, time.Time{}},
	} {
		_, life, err := LinkCanonical(tc.endpoint, []byte(tc.body), linkNow)
		if err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		until, keep := life.KeepUntil(linkNow, margin, maxAge)
		if keep != tc.keep || !until.Equal(tc.until) {
			t.Errorf("%s %s: kept %v until %v, want %v until %v", tc.endpoint, tc.body, keep, until, tc.keep, tc.until)
		}
	}
}

func FuzzLinkCanonical(f *testing.F) {
	for _, s := range []string{`{}`, `{"jump_wxa":{"path":"p","query":"a=1"},"expire_type":1,"expire_interval":3}`,
		`{"page_url":"a?b=1","is_permanent":true}`, `{"model_id":"m","sn":"1"}`, `{"expire_time":1e40}`} {
		f.Add(s)
	}
	endpoints := []string{wechat.PathScheme, wechat.PathURLLink, wechat.PathShortLink, wechat.PathNFCScheme}
	f.Fuzz(func(t *testing.T, body string) {
		for _, e := range endpoints {
			canon, _, err := LinkCanonical(e, []byte(body), linkNow)
			if err != nil {
				continue
			}
			// The canonical form is a fixed point: it reads as itself.
			again, _, err := LinkCanonical(e, canon, linkNow)
			if err != nil || string(again) != string(canon) {
				t.Fatalf("%s: %s canonical %s, again %s (%v)", e, body, canon, again, err)
			}
		}
	})
}
