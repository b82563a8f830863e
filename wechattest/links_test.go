package wechattest

import (
	"strconv"
	"testing"
	"time"
)

func TestLinksAreNewPerCallAndCheckedAsWeChatChecksThem(t *testing.T) {
	s, c := newTestServer(t)
	tok := classic(t, s)
	post := func(path, body string) (int, []byte) {
		t.Helper()
		_, _, b := call(t, "POST", s.URL+path+"?access_token="+tok, body)
		code, _ := field(t, b, "errcode").(float64)
		return int(code), b
	}
	in := func(d time.Duration) string { return strconv.FormatInt(c.Now().Add(d).Unix(), 10) }
	_, a := post(pathScheme, `{"jump_wxa":{"path":"pages/index/index"}}`)
	_, b := post(pathScheme, `{"jump_wxa":{"path":"pages/index/index"}}`)
	if field(t, a, "openlink") == field(t, b, "openlink") || field(t, a, "openlink") == nil {
		t.Errorf("two calls made %v and %v: want two new links", field(t, a, "openlink"), field(t, b, "openlink"))
	}
	for _, tc := range []struct {
		path, body string
		want       int
	}{
		{pathScheme, `{"expire_time":` + strconv.FormatInt(c.Now().Add(time.Hour).UnixMilli(), 10) + `}`, 85401},
		{pathScheme, `{"expire_type":1,"expire_interval":31}`, 85401},
		{pathScheme, `{"jump_wxa":{"path":"nope/missing"}}`, 40165},
		{pathScheme, `{"jump_wxa":{"query":"a b"}}`, 40212},
		{pathScheme, `{"jump_wxa":{"env_version":"prod"}}`, 85402},
		{pathURLLink, `{"path":"pages/a/a","expire_time":` + in(72*time.Hour) + `}`, 0},
		{pathShortLink, `{"page_url":"nope?a=1"}`, 40066},
		{pathShortLink, `{"page_url":"pages/a?a=1","is_permanent":true}`, 0},
		{pathNFCScheme, `{"jump_wxa":{}}`, 9800003},
		{pathNFCScheme, `{"model_id":"m","sn":"1"}`, 0},
		{pathNFCScheme, `{"model_id":"m","sn":"1"}`, 9800010},
	} {
		if got, b := post(tc.path, tc.body); got != tc.want {
			t.Errorf("%s %s: errcode %d (%s), want %d", tc.path, tc.body, got, b, tc.want)
		}
	}
	made := s.LinksMade(pathURLLink)
	if len(made) != 1 || !made[0].Expires.Equal(time.Unix(c.Now().Add(72*time.Hour).Unix(), 0)) || !s.LinkValid(made[0].Link) {
		t.Errorf("URL Links made %+v", made)
	}
	c.Add(72 * time.Hour)
	if s.LinkValid(made[0].Link) {
		t.Error("a link is valid at its expiry")
	}
}

func TestLinkQuotas(t *testing.T) {
	s, _ := newTestServer(t)
	tok := classic(t, s)
	errcode := func(path, body string) int {
		_, _, b := call(t, "POST", s.URL+path+"?access_token="+tok, body)
		code, _ := field(t, b, "errcode").(float64)
		return int(code)
	}
	s.SetLinkQuotas(LinkQuotas{Daily: 2, ShortDaily: 3, Permanent: 1})
	got := []int{errcode(pathScheme, `{}`), errcode(pathURLLink, `{}`), errcode(pathScheme, `{}`), errcode(pathURLLink, `{}`)}
	if got[0] != 0 || got[1] != 0 || got[2] != 44993 || got[3] != 44993 {
		t.Errorf("schemes and URL Links against a shared daily 2: %v", got)
	}
	got = []int{errcode(pathShortLink, `{"page_url":"pages/a","is_permanent":true}`),
		errcode(pathShortLink, `{"page_url":"pages/a","is_permanent":true}`),
		errcode(pathShortLink, `{"page_url":"pages/a"}`), errcode(pathShortLink, `{"page_url":"pages/a"}`),
		errcode(pathShortLink, `{"page_url":"pages/a"}`)}
	if got[0] != 0 || got[1] != 85400 || got[2] != 0 || got[3] != 0 || got[4] != 45009 {
		t.Errorf("short links against 1 permanent and 3 a day: %v", got)
	}
}
